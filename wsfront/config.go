package wsfront

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/sockmesh/sockmesh/scproto"
)

// Broker is where wsfront hands subscriptions and publications. The node implements it with
// its broker shards. Methods are called from connection reader goroutines and must not block
// on the network.
type Broker interface {
	// Subscribe adds s to channel's local subscribers; delivering to s is the broker's job
	// from then on (through Socket.Deliver).
	Subscribe(s *Socket, channel string)
	// Unsubscribe removes s from channel.
	Unsubscribe(s *Socket, channel string)
	// Publish delivers data to every subscriber of channel, cluster-wide.
	Publish(channel string, data json.RawMessage)
}

// RecoveringBroker is a Broker that can replay what a subscriber missed (node.Broker on its
// recovery channels, docs/recovery.md). SubscribeRecover subscribes s with the subscribe's
// data, or returns false (nothing called) to subscribe as usual. Otherwise it calls ack
// exactly once with the acknowledgement's data (nil when the answer is not known yet: the
// replay waits its turn or a peer is asked, and the client must not wait for that), and
// answer exactly once, once the replay is queued, with the answer for the client (sent as the
// sockmesh:recovery event); either may come later, from another goroutine. A broker that
// subscribes s later must check Holds first (the client may have left meanwhile).
type RecoveringBroker interface {
	SubscribeRecover(s *Socket, channel string, data json.RawMessage, ack, answer func(any)) bool
}

// Config holds a front's limits. Every zero value means the documented default.
type Config struct {
	// Path is the WebSocket path; zero value "/socketcluster/".
	Path string
	// PingInterval between the server's '' pings; zero value 8 s.
	PingInterval time.Duration
	// PingTimeout is announced in the handshake; a client silent for longer is closed with
	// 4001. Zero value 30 s (socketcluster-server v20's default).
	PingTimeout time.Duration
	// HandshakeTimeout: a connection without #handshake by then is closed with 4005; zero
	// value 10 s.
	HandshakeTimeout time.Duration
	// MaxPayload is the largest inbound frame in bytes (larger: close 1009); zero value 1 MiB.
	MaxPayload int64
	// MaxChannelLength in bytes; zero value 256.
	MaxChannelLength int
	// MaxSubscriptions per connection; zero value 1000.
	MaxSubscriptions int
	// SendQueueBytes bounds a connection's outbound queue; a client that lets it fill up is
	// disconnected (slow consumer). Zero value 1 MiB.
	SendQueueBytes int
	// WriteTimeout bounds one write to a client; zero value 10 s.
	WriteTimeout time.Duration
	// ProtocolVersion is the SocketCluster protocol the server speaks: 2 (the default, every
	// client since v15: ping '', pong '') or 1 (clients up to v14, and newer ones set to
	// protocolVersion 1: ping '#1', pong '#2'). Clients do not say which they speak, so a
	// server speaks one (as socketcluster-server does); a client of the other version never
	// answers a ping and is cut at the ping timeout.
	ProtocolVersion int
	// MaxAsyncInvokes bounds the Invocation.Async functions running at once for one
	// connection; past it an invoke gets TooManyPendingInvokesError. Zero value 64.
	MaxAsyncInvokes int
	// MaxBatch bounds the packets of one inbound array frame (a client batch); a frame with
	// more closes the connection with 1009 and says so. Zero value 10,000.
	MaxBatch int
	// WriteBytes is the most bytes of queued frames coalesced into one write system call.
	// Zero value 64 KiB; negative: one frame per write.
	WriteBytes int
	// ArrayFrames packs the packets waiting for one client into one JSON array frame (a
	// SocketCluster "batch", as socketcluster-server sends after socket.startBatching()) instead
	// of one frame per packet. Only clients that parse arrays read them: the npm
	// socketcluster-client does; sacOO7's Go and Python clients, and others that parse one JSON
	// object per frame, lose every packet of such a frame. Off by default, as in
	// socketcluster-server (docs/compatibility.md).
	ArrayFrames bool
	// WriteDelay is the coalescing window of a busy connection: publications that arrive
	// within WriteDelay of the connection's previous write wait until the window ends and go
	// out together in one write. A connection quiet for WriteDelay is written at once, so
	// low-rate traffic gains no latency, and responses, events and close frames never wait
	// (they end a running window); under fan-out load it bounds system calls to one per
	// connection per WriteDelay. Zero value 20 ms (the CLI's default too); negative: no delay
	// (batches form only while a write is in progress).
	WriteDelay time.Duration
	// WriteDelayLoad is the process CPU use, as a share of the CPUs it may use, from which on
	// the write window applies (it stops again below two thirds of it, see loadMeter): below
	// it, frames are written as soon as a connection's writer gets to them. Zero value 0.75;
	// negative: the window always applies.
	WriteDelayLoad float64
	// ReleaseMemoryAfter: once at least this many connections have opened since the last
	// time and a sweeper tick passes without a new one (a reconnect storm is over), the
	// node collects the storm's garbage (runtime.GC, concurrent: the node keeps serving), and
	// the runtime's background scavenger hands the freed pages back to the operating system.
	// Not debug.FreeOSMemory, which also returned the pages at once but held the process's
	// only processor while it did: 130–470 ms in which no client was served, after a
	// 10,000-client storm on one core (docs/benchmarks.md, "Recovery storm"). Zero value
	// 1,000; negative: never.
	ReleaseMemoryAfter int
	// ServerInvokeTimeout bounds Socket.Invoke when the caller's context has no deadline; zero
	// value 10 s.
	ServerInvokeTimeout time.Duration
	// CheckOrigin decides whether a browser Origin may connect; nil applies
	// Limits.AllowedOrigins (empty: every origin, as socketcluster-server does by default).
	CheckOrigin func(r *http.Request) bool
	// Limits are the abuse limits (connections, rates, origins).
	Limits  Limits
	Logger  *slog.Logger
	Metrics *Metrics
}

// DefaultWriteDelay is Config.WriteDelay's zero value.
const DefaultWriteDelay = 20 * time.Millisecond

// DefaultConfig is the configuration a zero Config stands for: every documented default
// filled in (no logger, no metrics). The CLI takes its flag defaults from it.
func DefaultConfig() Config {
	var c Config
	c.setDefaults()
	c.Logger, c.Metrics = nil, nil
	return c
}

func (c *Config) setDefaults() {
	if c.Path == "" {
		c.Path = "/socketcluster/"
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 8 * time.Second
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = 30 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = 1 << 20
	}
	if c.MaxChannelLength <= 0 {
		c.MaxChannelLength = 256
	}
	if c.MaxSubscriptions <= 0 {
		c.MaxSubscriptions = 1000
	}
	if c.SendQueueBytes <= 0 {
		c.SendQueueBytes = 1 << 20
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.WriteDelayLoad == 0 {
		c.WriteDelayLoad = 0.75
	}
	if c.ProtocolVersion == 0 {
		c.ProtocolVersion = 2
	}
	if c.MaxAsyncInvokes <= 0 {
		c.MaxAsyncInvokes = 64
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = scproto.MaxBatch
	}
	if c.WriteBytes == 0 {
		c.WriteBytes = 64 << 10
	}
	switch {
	case c.WriteDelay == 0:
		c.WriteDelay = DefaultWriteDelay
	case c.WriteDelay < 0:
		c.WriteDelay = 0
	}
	switch {
	case c.ReleaseMemoryAfter == 0:
		c.ReleaseMemoryAfter = 1000
	case c.ReleaseMemoryAfter < 0:
		c.ReleaseMemoryAfter = 0 // never
	}
	if c.ServerInvokeTimeout <= 0 {
		c.ServerInvokeTimeout = 10 * time.Second
	}
	c.Limits.setDefaults()
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
}
