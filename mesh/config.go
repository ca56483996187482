package mesh

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Mesh. Every limit documents its zero-value default.
type Config struct {
	Name          string   // logical node name, unique in the cluster (required)
	MeshAddr      string   // host:port the ZeroMQ PUB socket binds (tcp); port 0 = ephemeral (required)
	GossipAddr    string   // host:port Serf binds (TCP+UDP); port 0 = ephemeral (required)
	AdvertiseHost string   // host others dial; "" = the bind host (which must then not be 0.0.0.0/::)
	Join          []string // seed gossip addresses; empty = new cluster
	WSURL         string   // advertised client URL (tag), e.g. ws://127.0.0.1:8000/socketcluster/
	AdminURL      string   // advertised admin URL (tag)
	// Profile selects timing presets: "lan" (default; ~1 s failure detection), "wan"
	// (memberlist WAN defaults, slower and more tolerant), or "local" (same as lan with shorter
	// push/pull; for tests on one host).
	Profile    string
	Logger     *slog.Logger          // nil = slog.Default()
	Registerer prometheus.Registerer // metrics go here (nil = don't register)

	// Deliver is called for every publication received from a peer that this node wants, from
	// the mesh's receive goroutines (one per peer, so calls are concurrent across peers and in
	// order per peer); it must not block. data is the opaque payload, position the publisher's
	// (Mesh.PublishWithPosition; empty on most channels, and from a peer that sends none): not
	// reused by the mesh, both may be retained.
	Deliver func(channel string, data, position []byte)

	// PeerQueue bounds the publications queued for one peer and not yet handed to the PUB
	// socket; beyond it publications to that peer are dropped and counted. Zero means 10,000.
	PeerQueue int
	// PeerQueueBytes bounds the payload bytes queued for one peer. Zero means 16 MiB.
	PeerQueueBytes int
	// BatchMax bounds the publications in one batch. Zero means 256.
	BatchMax int
	// BatchBytes bounds the payload bytes in one batch (a single larger publication still goes
	// alone). Zero means 64 KiB.
	BatchBytes int
	// PubHWM is the ZeroMQ PUB high-water mark in messages (batches and control messages),
	// shared by all peers; zmq4 drops silently beyond it, receivers then count gaps. It only
	// fills while zmq4's single writer is blocked (a peer stalled until the watchdog frees it),
	// and bounds that backlog to about PubHWM × BatchBytes. Zero means 4,096.
	PubHWM int

	// MaxFrame bounds the bytes of one ZeroMQ message a peer may send us (all its frames); a
	// header announcing more closes the connection before anything is allocated, and it is
	// counted in sockmesh_mesh_rejected_connections_total{reason="frame_too_large"}. It also
	// bounds what we send: a batch never grows past it, and a publication too large for it is
	// dropped and counted. Every node of a cluster should use the same value. Zero means
	// MaxPublication + BatchBytes + 64 KiB (room for a full batch plus one largest publication,
	// names, sealing and protobuf framing).
	MaxFrame int
	// MaxPublication is the largest publication payload the node accepts from its clients; it
	// only sizes MaxFrame's default. Zero means 1 MiB.
	MaxPublication int
	// PeerBuffer bounds the bytes queued in the transport for one peer subscribed to our PUB
	// socket (its own writer drains them); a peer that falls further behind is cut as a slow
	// peer (sockmesh_mesh_slow_peers_total), loses what was queued (counted by the peer as
	// gaps) and redials. Zero means 32 MiB.
	PeerBuffer int
	// MaxPendingHandshakes bounds accepted mesh connections still in their handshake; beyond
	// it new ones are closed at once (reason "too_many_handshakes"). Zero means 64.
	MaxPendingHandshakes int

	// Heartbeat is the interval of heartbeats on the control topic. Zero means the profile's
	// (lan 250 ms, wan 1 s).
	Heartbeat time.Duration
	// HeartbeatTimeout is the silence after which a peer's subscribe socket is recreated. Zero
	// means 6 × Heartbeat.
	HeartbeatTimeout time.Duration
	// InterestFlushInterval is the least time between two interest deltas: a change after a
	// quiet period is announced at once, changes within the interval are gathered into the
	// next delta. Zero means 20 ms.
	InterestFlushInterval time.Duration
	// InterestMessageBytes bounds the channel names in one interest delta or snapshot part
	// (one delta per InterestFlushInterval, so it also bounds control traffic per second).
	// Zero means 256 KiB; it never exceeds half the frame limit.
	InterestMessageBytes int
	// MaxPeerChannels bounds the channels a peer's snapshot may hold; a larger one is refused
	// (rejected envelopes, reason snapshot). Zero means 4,000,000.
	MaxPeerChannels int
	// UnsubscribeDelay is how long a 1→0 interest transition waits before it is announced; a
	// re-add within it cancels the removal. Zero means 2 s.
	UnsubscribeDelay time.Duration
	// HandshakeTimeout bounds the TCP connect plus ZMTP handshake, dial and accept side. Zero
	// means 2 s.
	HandshakeTimeout time.Duration
	// StallTimeout is how long a peer may leave bytes unacknowledged before its connection to
	// our PUB socket is closed. Zero means 2 s; negative disables the watchdog.
	StallTimeout time.Duration
	// SnapshotRetry is how long to wait for a requested interest snapshot before asking again
	// (requests are tiny; a fresh link's first one is often lost because the peer's link to us is
	// not up yet). Zero means ¾ Heartbeat, so every heartbeat from an unsynced peer asks again.
	SnapshotRetry time.Duration
	// JoinBackoffMax caps the backoff between join attempts while no seed answers. Zero means 5 s.
	JoinBackoffMax time.Duration
	// RejoinInterval is how often this node dials the gossip address of a member that failed
	// (not left), until its name is alive again or Serf gives it up (ReconnectTimeout). Serf's
	// own reconnect tries one random failed member every ReconnectInterval with a probability of
	// failed/alive, which left a restarted node without seeds of its own (the first node of a
	// cluster) alone for 5 to over 20 s. Zero means 1 s; negative leaves it to Serf.
	RejoinInterval time.Duration
	// MembershipCoalesce is how long membership changes are gathered before links change. Zero
	// means 50 ms.
	MembershipCoalesce time.Duration
	// FailedPeerTTL is how long, at most, publications for a peer declared failed are numbered
	// and kept for it (its retransmission window, within RetainBytes and RetainAge) while it is
	// away; it stops earlier when the peer, or a new incarnation of its name, is linked and in
	// sync again.
	// Zero means the profile's Serf reconnect timeout (lan, local: 2 min; wan: 30 min), after
	// which Serf forgets the member.
	FailedPeerTTL time.Duration

	// RetainBytes bounds, per link (this node → one peer), the publications kept after they
	// were numbered, to retransmit what the peer reports missing (a gap, or a link that comes
	// back after a freeze, a partition or a cut). Counted as channel + payload + 24 bytes per
	// publication, copied into the window (so the heap held is this per peer, plus at most one
	// partly used 1 MiB slab). Zero means 64 MiB; negative keeps nothing (every loss is then
	// counted, none repaired).
	RetainBytes int
	// RetainAge drops retained publications older than this. Zero means 30 s.
	RetainAge time.Duration
	// RepairWait is how long publications from a peer wait, in order, behind a missing range
	// that is being repaired and makes no progress; then the range is counted as lost
	// (sockmesh_mesh_unrepaired_messages_total{reason="timeout"}) and delivery moves on. Zero
	// means 3 s.
	RepairWait time.Duration
	// ReorderBytes bounds, per peer, the publications waiting behind a repair (channel +
	// payload bytes); past it the oldest missing range is given up (reason "overflow"). Zero
	// means 16 MiB.
	ReorderBytes int
	// RepairRate paces retransmissions to one peer, in bytes per second (and they wait while
	// the peer's send queue is half full), so that a node catching up does not crowd out live
	// traffic. Zero means 32 MiB/s.
	RepairRate int

	// Fetch answers a peer's FetchRequest (Mesh.Fetch on its side): the node layer's recovery
	// of a channel's recent publications (docs/recovery.md). It gets the request's bytes and
	// the most the reply may hold, and returns the reply; it runs on the peer's receive
	// goroutine, so it must be quick. Nil: requests are refused.
	Fetch func(channel string, request []byte, max int) []byte
	// FetchRate bounds the FetchRequests one peer may make per second (burst: one second's
	// worth); past it they are refused at once. Zero means 50.
	FetchRate int

	// ClusterKey closes the mesh. It must be exactly 32 random bytes (ClusterKeyLen), the same
	// on every node; generate one with `head -c 32 /dev/urandom | base64`. From it two keys are
	// derived with HKDF-SHA256 under distinct labels:
	//   - a 32-byte memberlist SecretKey, so all gossip is encrypted and authenticated (AES-GCM)
	//     and a node without the key, or with another key, cannot join or read membership;
	//   - per-sender AES-256-GCM keys that seal every ZeroMQ envelope (publication batches,
	//     heartbeats, interest deltas, snapshot requests and answers: everything after the
	//     topic frame), with the topic frame as associated data and a strictly increasing
	//     counter as nonce. An envelope that fails to open (no key, wrong key, tampered, moved
	//     to another topic, replayed) is dropped and counted in
	//     sockmesh_mesh_rejected_envelopes_total{peer,reason}.
	// Topic frames stay in clear (they carry only the receiver's Serf name, never a channel).
	//
	// Empty (nil) means an OPEN mesh: gossip and mesh traffic are neither encrypted nor
	// authenticated, and anyone who can reach the gossip and mesh ports can join, read every
	// publication and inject publications and interest. Use it only on a trusted network
	// (loopback, a private VLAN, WireGuard). All nodes of a cluster must agree: keyed and open
	// nodes cannot gossip with each other. Changing the key means restarting the whole cluster.
	ClusterKey []byte
}

// ErrNameTaken is returned by Start when a different live process holds the logical name.
var ErrNameTaken = errors.New("mesh: logical node name already held by a live node")

// DefaultConfig is the configuration a zero Config of the given profile stands for, every
// documented default filled in. MaxFrame follows MaxPublication (1 MiB here).
func DefaultConfig(profile string) (Config, error) {
	c := Config{Profile: profile, Name: "-", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0"}
	d, err := c.withDefaults()
	d.Name, d.MeshAddr, d.GossipAddr = "", "", "" // required, no default
	return d, err
}

// MaxNameLength bounds a node's name: a host name (the default name) has at most 253 bytes.
const MaxNameLength = 255

// CheckName reports why name cannot name a node, or nil. The name travels in gossip, in
// mailbox topics that a NUL ends, and (with an incarnation) in the recovery positions that
// clients read as JSON strings and hand back: a byte that does not survive that round trip
// would make every position of the node's publications unrecognisable.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("mesh: a node name is required")
	case len(name) > MaxNameLength:
		return fmt.Errorf("mesh: node name is %d bytes, longer than the limit of %d", len(name), MaxNameLength)
	case !utf8.ValidString(name):
		return fmt.Errorf("mesh: node name %q is not valid UTF-8", name)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("mesh: node name %q contains a control character", name)
		}
	}
	return nil
}

func (c *Config) withDefaults() (Config, error) {
	cfg := *c
	if err := CheckName(cfg.Name); err != nil {
		return cfg, err
	}
	if cfg.MeshAddr == "" || cfg.GossipAddr == "" {
		return cfg, errors.New("mesh: Config.MeshAddr and Config.GossipAddr are required")
	}
	for _, a := range []string{cfg.MeshAddr, cfg.GossipAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return cfg, fmt.Errorf("mesh: bad address %q: %w", a, err)
		}
	}
	if err := validateClusterKey(cfg.ClusterKey); err != nil {
		return cfg, err
	}
	if len(cfg.ClusterKey) == 0 {
		cfg.ClusterKey = nil
	} else {
		cfg.ClusterKey = append([]byte(nil), cfg.ClusterKey...) // not shared with the caller
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Deliver == nil {
		cfg.Deliver = func(string, []byte, []byte) {}
	}
	if cfg.Profile == "" {
		cfg.Profile = "lan"
	}
	switch cfg.Profile {
	case "lan", "local":
		if cfg.Heartbeat == 0 {
			cfg.Heartbeat = 250 * time.Millisecond
		}
	case "wan":
		if cfg.Heartbeat == 0 {
			cfg.Heartbeat = time.Second
		}
	default:
		return cfg, fmt.Errorf("mesh: unknown profile %q (lan, wan, local)", cfg.Profile)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.PeerQueue, 10_000)
	def(&cfg.PeerQueueBytes, 16<<20)
	def(&cfg.BatchMax, 256)
	def(&cfg.BatchBytes, 64<<10)
	def(&cfg.PubHWM, 4096)
	def(&cfg.MaxPublication, 1<<20)
	def(&cfg.MaxFrame, cfg.MaxPublication+cfg.BatchBytes+64<<10)
	def(&cfg.PeerBuffer, 32<<20)
	def(&cfg.MaxPendingHandshakes, 64)
	def(&cfg.InterestMessageBytes, 256<<10)
	def(&cfg.MaxPeerChannels, 4_000_000)
	if cfg.RetainBytes == 0 {
		cfg.RetainBytes = 64 << 20
	}
	def(&cfg.ReorderBytes, 16<<20)
	def(&cfg.RepairRate, 32<<20)
	def(&cfg.FetchRate, 50)
	if cfg.MaxFrame < 16<<10 {
		return cfg, fmt.Errorf("mesh: MaxFrame %d is below 16 KiB", cfg.MaxFrame)
	}
	if cfg.BatchBytes > cfg.MaxFrame/2 {
		cfg.BatchBytes = cfg.MaxFrame / 2
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defd(&cfg.HeartbeatTimeout, 6*cfg.Heartbeat)
	defd(&cfg.UnsubscribeDelay, 2*time.Second)
	defd(&cfg.InterestFlushInterval, 20*time.Millisecond)
	defd(&cfg.HandshakeTimeout, 2*time.Second)
	defd(&cfg.StallTimeout, 2*time.Second)
	if cfg.StallTimeout < 0 {
		cfg.StallTimeout = 0
	}
	defd(&cfg.SnapshotRetry, cfg.Heartbeat*3/4)
	defd(&cfg.JoinBackoffMax, 5*time.Second)
	defd(&cfg.RejoinInterval, time.Second)
	defd(&cfg.MembershipCoalesce, 50*time.Millisecond)
	defd(&cfg.FailedPeerTTL, serfConfig(cfg.Profile).ReconnectTimeout)
	defd(&cfg.RetainAge, 30*time.Second)
	defd(&cfg.RepairWait, 3*time.Second)
	if cfg.RetainAge < 0 || cfg.RepairWait < 0 {
		return cfg, errors.New("mesh: RetainAge and RepairWait must not be negative")
	}
	return cfg, nil
}

// serfConfig builds the Serf configuration of a profile.
//
//   - lan: memberlist LAN defaults tuned as measured (docs/mesh-libraries.md, "Serf"):
//     probe 300 ms, probe timeout 150 ms, suspicion ×2 → a dead node is declared in about 1 s
//     (LAN defaults: about 5.5 s). Gossip every 100 ms with RetransmitMult 6 so small clusters do
//     not miss broadcasts, push/pull every 5 s as the real bound on missed tag/leave updates,
//     ReconnectInterval 5 s (a healed partition rejoins in about 4 s), dead incarnations reaped
//     after 2 min.
//   - local: lan with push/pull every 2 s (one host, tests).
//   - wan: memberlist WAN defaults (probe 5 s, suspicion ×6): tolerant of latency and loss,
//     failure detection in tens of seconds.
func serfConfig(profile string) *serf.Config {
	sc := serf.DefaultConfig()
	switch profile {
	case "wan":
		sc.MemberlistConfig = memberlist.DefaultWANConfig()
		sc.ReconnectInterval = 30 * time.Second
		sc.ReconnectTimeout = 30 * time.Minute
		sc.TombstoneTimeout = 30 * time.Minute
	default:
		ml := memberlist.DefaultLANConfig()
		ml.ProbeInterval = 300 * time.Millisecond
		ml.ProbeTimeout = 150 * time.Millisecond
		ml.SuspicionMult = 2
		ml.GossipInterval = 100 * time.Millisecond
		ml.RetransmitMult = 6
		ml.PushPullInterval = 5 * time.Second
		ml.GossipToTheDeadTime = 10 * time.Second
		ml.DeadNodeReclaimTime = 5 * time.Second
		ml.TCPTimeout = 2 * time.Second
		if profile == "local" {
			ml.PushPullInterval = 2 * time.Second
		}
		sc.MemberlistConfig = ml
		sc.ReconnectInterval = 5 * time.Second
		sc.ReconnectTimeout = 2 * time.Minute
		sc.TombstoneTimeout = 2 * time.Minute
	}
	sc.EventBuffer = 1024
	return sc
}
