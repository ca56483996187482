// Package bench is a load generator for any SocketCluster-compatible server
// (sockmesh, socketcluster-server, …). It opens many WebSocket connections,
// subscribes them, publishes at a fixed rate with a sequence number and a
// send timestamp in every payload, and reports delivered messages per second,
// loss, latency percentiles, the server's CPU and memory (read from /proc)
// and its own CPU use.
//
// Scenarios:
//
//   - fanout: S subscribers on one channel, publications at a total rate R
//     from a few publisher connections; R×S deliveries per second expected.
//   - channels: C connections each subscribed to its own channel;
//     acknowledged publications to random channels at rate R (ack latency
//     reported too).
//   - cross: fanout with the subscribers spread over every URL (every node
//     of a cluster), the publishers on the first.
//   - idle: C connections, optionally K channels each, held open; memory per
//     connection from the server's RSS before and after.
//   - connect: C connections opened as fast as possible with bounded
//     concurrency, each completing the SocketCluster handshake (on Linux by
//     one goroutine over epoll, cheap enough that the server is the limit;
//     see Config.Connector).
//   - hold: C connections (default 100,000) opened by the raw connector, each
//     subscribed to one of K channels (connection i to channel i % K), held
//     for the duration with every server ping answered; memory per
//     connection from the server's RSS, disconnects during the hold, and
//     halfway through one publication to every channel: how long until the
//     first and the last of the C deliveries arrived, and the server CPU the
//     fan-out took. Linux and ws:// only.
//   - max: ramps the rate of fanout (or channels or cross) by a factor per
//     step until p99 latency exceeds a bound or loss appears; reports the
//     highest delivered rate that passed.
//
// The tool is built to stay out of the way: deliveries are found in frames
// by scanning for a fixed payload marker (no JSON decoding per message),
// latencies go to fixed log-bucket histograms (no allocation per message),
// and each publisher writes a whole tick of publications in one system call.
// Connections are spread over source addresses 127.0.0.1, 127.0.0.2, … when
// more than Config.PerSourceAddr of them go to a loopback server.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Config describes one bench run. Zero values get the defaults noted.
type Config struct {
	URLs        []string // server WebSocket URLs; publishers use the first
	Scenario    string   // fanout, channels, cross, idle, connect, hold, max
	MaxOf       string   // the scenario max ramps: fanout (default), channels, cross
	Subscribers int      // fanout/cross subscribers (default 1000)
	// FanoutChannels spreads fanout/cross subscribers over this many channels (subscriber i
	// on channel i % FanoutChannels; Subscribers is rounded down to a multiple of it), each
	// publication going to one of them at random. Default 1: every subscriber on one channel.
	FanoutChannels int
	Connections    int // channels/idle/connect/hold connections (default 5000 / 10000 / 10000 / 100000)
	Channels       int // idle: channels subscribed per connection (default 0)
	// ChannelsTotal: hold spreads its connections over this many channels,
	// connection i on channel i % ChannelsTotal (default 1: all on one).
	ChannelsTotal int
	Publishers    int           // publisher connections (default 4)
	Rate          float64       // publications per second, all publishers together (default: fanout 1000, channels 10000); max: the first step
	Ack           *bool         // acknowledged publications (default: true for channels, false otherwise)
	Payload       int           // JSON payload size in bytes (default 100)
	Duration      time.Duration // measured time; idle and hold: time held (default 5s; hold 60s)
	Warmup        time.Duration
	// max: each step lasts StepDuration (default 3s) and multiplies the rate
	// by StepFactor (default 1.5); it stops when p99 > MaxP99 (default
	// 100ms), on loss, or after MaxSteps (default 30). Then Refine more steps
	// (default 0) bisect, geometrically, between the last rate that passed and
	// the one that failed.
	StepDuration time.Duration
	StepFactor   float64
	MaxP99       time.Duration
	MaxSteps     int
	Refine       int
	Concurrency  int           // connections opened at once (default 200)
	Drain        time.Duration // longest wait for stragglers after publishing stops (default 5s)
	ServerPIDs   []int         // processes whose CPU and RSS are reported
	// PerSourceAddr: when more connections than this go to a loopback
	// server, they are bound to 127.0.0.1, 127.0.0.2, … (this many each).
	// Default 10000: with the usual ephemeral range (32768-60999) the kernel
	// hands out the ~14k even ports first, and past them every connect()
	// walks the ports in use (measured: 15,000 connections from one address
	// 8.9k/s with the tool at 86 % CPU, 15.5k/s from two).
	PerSourceAddr int
	// Connector is how connect opens its connections: "raw" (default; one
	// goroutine drives nonblocking sockets over epoll, so that the tool
	// costs far less CPU per connection than the server; Linux and ws://
	// only, otherwise "gorilla" is used) or "gorilla" (the WebSocket client
	// the other scenarios use, a goroutine per connection).
	Connector string
	// Protocol is the client protocol: "socketcluster" (default) or "centrifugo" (its JSON
	// protocol, for side-by-side runs; the connect scenario then uses the gorilla connector).
	Protocol string
	Label    string           // free text carried into every result (e.g. the server's name)
	OnResult func(Result)     // called with each result as soon as it is known
	Log      io.Writer        // progress messages (default: discarded)
	clock    func() time.Time // tests

	connectTimeout time.Duration // tests: raw connector timeout per connection (default 20s)
	windowEnd      func()        // tests: called when the connect window ends, connections still open
}

func (c *Config) defaults() error {
	if len(c.URLs) == 0 {
		return errors.New("bench: no URL")
	}
	if c.Scenario == "" {
		c.Scenario = "fanout"
	}
	if c.MaxOf == "" {
		c.MaxOf = "fanout"
	}
	kind := c.Scenario
	if kind == "max" {
		kind = c.MaxOf
	}
	switch c.Scenario {
	case "fanout", "channels", "cross", "idle", "connect", "hold":
	case "max":
		switch c.MaxOf {
		case "fanout", "channels", "cross":
		default:
			return fmt.Errorf("bench: max ramps fanout, channels or cross, not %q", c.MaxOf)
		}
	default:
		return fmt.Errorf("bench: unknown scenario %q (fanout, channels, cross, idle, connect, hold, max)", c.Scenario)
	}
	if kind == "cross" && len(c.URLs) < 2 {
		return errors.New("bench: cross needs the URLs of at least two nodes")
	}
	if c.Subscribers <= 0 {
		c.Subscribers = 1000
	}
	if c.FanoutChannels > 1 {
		if c.Subscribers < c.FanoutChannels {
			return fmt.Errorf("bench: %d subscribers cannot cover %d fan-out channels", c.Subscribers, c.FanoutChannels)
		}
		c.Subscribers -= c.Subscribers % c.FanoutChannels
	}
	if c.Connections <= 0 {
		switch kind {
		case "channels":
			c.Connections = 5000
		case "hold":
			c.Connections = 100000
		default:
			c.Connections = 10000
		}
	}
	if c.ChannelsTotal < 0 {
		return fmt.Errorf("bench: channels-total %d < 0", c.ChannelsTotal)
	}
	if c.ChannelsTotal == 0 {
		c.ChannelsTotal = 1
	}
	if c.Publishers <= 0 {
		c.Publishers = 4
	}
	if c.Rate <= 0 {
		c.Rate = 1000
		if kind == "channels" {
			c.Rate = 10000
		}
	}
	if c.Ack == nil {
		a := kind == "channels"
		c.Ack = &a
	}
	if c.Payload <= 0 {
		c.Payload = 100
	}
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
		if kind == "hold" {
			c.Duration = time.Minute
		}
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	}
	if c.StepDuration <= 0 {
		c.StepDuration = 3 * time.Second
	}
	if c.StepFactor <= 1 {
		c.StepFactor = 1.5
	}
	if c.MaxP99 <= 0 {
		c.MaxP99 = 100 * time.Millisecond
	}
	if c.MaxSteps <= 0 {
		c.MaxSteps = 30
	}
	if c.Refine < 0 || c.Refine > 8 {
		return fmt.Errorf("bench: refine %d out of range (0-8)", c.Refine)
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 200
	}
	if c.Drain <= 0 {
		c.Drain = 5 * time.Second
	}
	switch c.Connector {
	case "":
		c.Connector = "raw"
	case "raw", "gorilla":
	default:
		return fmt.Errorf("bench: unknown connector %q (raw, gorilla)", c.Connector)
	}
	if wireNamed(c.Protocol) == nil {
		return fmt.Errorf("bench: unknown protocol %q (%s)", c.Protocol, Protocols)
	}
	if wireNamed(c.Protocol) != socketCluster {
		c.Connector = "gorilla" // the raw connector speaks SocketCluster only
	}
	if c.PerSourceAddr <= 0 {
		c.PerSourceAddr = 10000
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return nil
}

// runner is the shared state of one run; connections record into it.
type runner struct {
	cfg  Config
	base time.Time
	run  string // random run id, part of every channel name

	hist      shardedHist // delivery latency of the active step
	ackHist   shardedHist // publication ack latency of the active step
	ackErrors atomic.Int64

	activeStep   atomic.Uint32
	expected     atomic.Int64 // deliveries expected in the active step
	stale        atomic.Int64 // deliveries of another step
	gaps         atomic.Int64 // sequence numbers skipped (active measured step)
	disorder     atomic.Int64 // sequence numbers at or below one seen before
	lastDelivery atomic.Int64 // r.now() of the last delivery of the active step
	disconnects  atomic.Int64
	firstConnErr atomic.Value // error: the first failed connection

	wire    *wire
	dialers map[string]*websocket.Dialer
	dmu     sync.Mutex
}

func (r *runner) now() int64 { return int64(time.Since(r.base)) }

// Run executes the configured scenario and returns its results (one per
// measured step; max adds a final summary row).
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	var id [4]byte
	_, _ = rand.Read(id[:])
	r := &runner{cfg: cfg, base: time.Now(), run: hex.EncodeToString(id[:]), wire: wireNamed(cfg.Protocol), dialers: map[string]*websocket.Dialer{}}
	var out []Result
	emit := func(res Result) {
		res.Label = cfg.Label
		res.Time = time.Now().UTC().Format(time.RFC3339)
		out = append(out, res)
		if cfg.OnResult != nil {
			cfg.OnResult(res)
		}
	}
	var err error
	switch cfg.Scenario {
	case "idle":
		err = r.idle(ctx, emit)
	case "connect":
		err = r.connect(ctx, emit)
	case "hold":
		err = r.hold(ctx, emit)
	default:
		err = r.traffic(ctx, emit)
	}
	return out, err
}

func (r *runner) logf(format string, a ...any) {
	fmt.Fprintf(r.cfg.Log, "bench: "+format+"\n", a...)
}

// dialerFor returns the dialer for connection i to u: bound to a source
// address of its own when the run opens many connections to a loopback host.
func (r *runner) dialerFor(u string, i, total int, readBuf int) *websocket.Dialer {
	var src net.IP
	if x := r.sourceOctet(i, total, isLoopbackURL(u)); x != 0 {
		src = net.IPv4(127, 0, 0, x)
	}
	key := fmt.Sprintf("%v/%d", src, readBuf)
	r.dmu.Lock()
	defer r.dmu.Unlock()
	d := r.dialers[key]
	if d == nil {
		d = newDialer(src, readBuf, 20*time.Second)
		r.dialers[key] = d
	}
	return d
}

// sourceOctet is x of the source address 127.0.0.x that connection i of
// total is bound to, 0 when it is not bound.
func (r *runner) sourceOctet(i, total int, loopback bool) byte {
	if total <= r.cfg.PerSourceAddr || !loopback {
		return 0
	}
	return byte(min(1+i/r.cfg.PerSourceAddr, 254))
}

func isLoopbackURL(u string) bool {
	pu, err := url.Parse(u)
	if err != nil {
		return false
	}
	h := pu.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback() && ip.To4() != nil
}

// openConns opens n connections with bounded concurrency. urlOf picks each
// one's URL; setup (optional) runs on each after the handshake. Connect
// latencies (dial + upgrade + handshake) go to hist when not nil. With
// keepGoing, failures are counted and the others still opened; otherwise
// the first failure closes everything and is returned.
func (r *runner) openConns(ctx context.Context, n, total, offset int, readBuf int, urlOf func(i int) string,
	prep func(c *conn), setup func(c *conn) error, hist *shardedHist, keepGoing bool) ([]*conn, int, error) {
	conns := make([]*conn, n)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next    atomic.Int64
		failed  atomic.Int64
		errOnce sync.Once
		first   error
		wg      sync.WaitGroup
	)
	workers := min(r.cfg.Concurrency, n)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				u := urlOf(i)
				t0 := time.Now()
				c, err := dialConn(ctx, r, offset+i, r.dialerFor(u, offset+i, total, readBuf), u, prep)
				if err == nil && setup != nil {
					if err = setup(c); err != nil {
						c.close()
					}
				}
				if err != nil {
					if failed.Add(1) == 1 {
						r.firstConnErr.Store(fmt.Errorf("connection %d to %s: %w", offset+i, u, err))
					}
					if !keepGoing {
						errOnce.Do(func() { first = fmt.Errorf("connection %d to %s: %w", offset+i, u, err); cancel() })
					}
					continue
				}
				if hist != nil {
					hist.shard(i).Record(int64(time.Since(t0)))
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	live := conns[:0]
	for _, c := range conns {
		if c != nil {
			live = append(live, c)
		}
	}
	if first != nil {
		closeConns(live)
		return nil, int(failed.Load()), first
	}
	return live, int(failed.Load()), nil
}

// closeConns closes connections, several at a time.
func closeConns(conns []*conn) {
	var wg sync.WaitGroup
	ch := make(chan *conn)
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range ch {
				c.close()
			}
		}()
	}
	for _, c := range conns {
		ch <- c
	}
	close(ch)
	wg.Wait()
}

// connsUp counts connections whose reader has not ended.
func connsDown(conns []*conn) int {
	n := 0
	for _, c := range conns {
		select {
		case <-c.done:
			n++
		default:
		}
	}
	return n
}

func join(names []string) string { return strings.Join(names, ",") }
