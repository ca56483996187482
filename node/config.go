package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"runtime"
	"strings"
	"time"

	"github.com/sockmesh/sockmesh/access"
	"github.com/sockmesh/sockmesh/adminguard"
	"github.com/sockmesh/sockmesh/mesh"
	"github.com/sockmesh/sockmesh/wsfront"
)

// Config is a node's configuration. Zero values mean the documented defaults.
type Config struct {
	// Name is the node's logical name, unique in the cluster; zero value: the host name.
	Name string
	// WSAddr is the client listener; zero value 127.0.0.1:8000.
	WSAddr string
	// AdminAddr serves /healthz, /readyz, /metrics and /cluster; zero value 127.0.0.1:8001.
	AdminAddr string
	// MeshAddr is where the ZeroMQ publish socket binds; zero value 127.0.0.1:8002.
	MeshAddr string
	// GossipAddr is where Serf binds (TCP and UDP); zero value 127.0.0.1:8003.
	GossipAddr string
	// AdvertiseHost is the host peers and clients should dial; zero value: the bind host.
	AdvertiseHost string
	// Join lists seed gossip addresses; empty starts a new cluster.
	Join []string
	// GossipProfile selects failure-detection timing: "lan" (default) or "wan".
	GossipProfile string
	// ClusterKey (32 bytes) closes the mesh: gossip is encrypted and every node-to-node
	// envelope sealed; nodes without it can neither join, read nor inject. Empty: an open
	// mesh, for trusted networks only.
	ClusterKey []byte
	// MeshMaxFrame bounds one node-to-node message in bytes, checked before anything is
	// allocated; zero value: the largest client payload (Front.MaxPayload) + 128 KiB. Every node
	// of a cluster should use the same value.
	MeshMaxFrame int
	// MeshPeerBuffer bounds the bytes queued for one peer before it is cut as a slow peer;
	// zero value 32 MiB.
	MeshPeerBuffer int
	// MeshPeerQueue bounds the publication bytes waiting for one peer before batching; zero
	// value 16 MiB. MeshMaxHandshakes bounds mesh connections in their handshake (zero: 64),
	// MeshHandshakeTimeout their handshake (zero: 2 s). MeshInterestInterval is the least time
	// between two interest announcements (zero: 20 ms), MeshInterestBytes the channel names in
	// one (zero: 256 KiB).
	MeshPeerQueue        int
	MeshMaxHandshakes    int
	MeshHandshakeTimeout time.Duration
	MeshInterestInterval time.Duration
	MeshInterestBytes    int
	// Repair of node-to-node loss (mesh.Config has the details). MeshRetainBytes bounds each
	// link's retransmission window (zero value: 64 MiB; negative: keep nothing, repair nothing),
	// MeshRetainAge its age (zero: 30 s); MeshRepairWait is how long publications wait behind a
	// repair that makes no progress (zero: 3 s), MeshReorderBytes how many bytes of them per
	// peer (zero: 16 MiB); MeshRepairRate paces retransmissions to one peer in bytes per second
	// (zero: 32 MiB/s).
	MeshRetainBytes  int
	MeshRetainAge    time.Duration
	MeshRepairWait   time.Duration
	MeshReorderBytes int
	MeshRepairRate   int
	// MeshFetchRate bounds the recovery fetch requests one peer may make per second (zero: 50).
	MeshFetchRate int
	// GossipRejoinInterval is how often a failed member's gossip address is dialled until it
	// is back (zero: 1 s; negative: only Serf's own, slower, reconnect).
	GossipRejoinInterval time.Duration
	// Shards is the number of broker shards; zero value: the number of CPUs.
	Shards int
	// AuthKey signs and verifies auth tokens (HS256); every node of a cluster shares it.
	// Empty: tokens cannot be issued and every presented token is refused.
	AuthKey string
	// AuthPublicKeys (PEM files) and AuthJWKSURL verify tokens issued by the user's own auth
	// service (RS*/PS*/ES*/EdDSA); AuthIssuer and AuthAudience, when set, must match.
	AuthPublicKeys []string
	AuthJWKSURL    string
	AuthIssuer     string
	AuthAudience   string
	// The policy for presented tokens (access.AuthConfig). AuthProfile "socketcluster" (or
	// empty) is socketcluster-server's: tokens without exp accepted, no skew; "strict" is
	// access.StrictPolicy (exp required, lifetime at most AuthMaxLifetime or 24 h, iat not in
	// the future, AuthClockSkew or 5 s of skew). The other fields tighten either profile.
	AuthProfile     string
	AuthRequireExp  bool
	AuthMaxLifetime time.Duration
	AuthClockSkew   time.Duration
	// AccessPolicyFile is a YAML channel access policy (see access.Policy); empty
	// allows every channel to everyone.
	AccessPolicyFile string
	// Hook, when its URL is set, delegates access decisions and unhandled invokes to the
	// user's backend over HTTP.
	Hook access.Hook
	// AuthExpiry is the lifetime of issued tokens without their own exp; zero value 24 h.
	AuthExpiry time.Duration
	// TLSCert and TLSKey (PEM files) make the client listener TLS (wss://); both or neither.
	TLSCert, TLSKey string
	// Front holds the WebSocket limits and timings.
	Front wsfront.Config
	// DrainDuration spreads client closes over this long on Shutdown; zero value 10 s.
	DrainDuration time.Duration
	// APIAddr is the listener of the HTTP API (/api/...); empty: no API.
	APIAddr string
	// APIKey guards the API (header "Authorization: apikey <key>" or "X-API-Key"); required
	// with APIAddr. Nodes answer each other's cluster-wide API calls (kick, disconnect,
	// channels) on their admin listener under /local/, with the same key: every node of a
	// cluster that serves the API shares it.
	APIKey string
	// APIEnforcePolicy checks API publications against the access policy's publish rules
	// as an unauthenticated client; off, the API is trusted like Node.Publish.
	APIEnforcePolicy bool
	// AdminToken guards the admin listener: every path but /healthz and /readyz needs it
	// ("Authorization: Bearer <token>") or the API key. AdminAllowOrigins are the browser
	// origins whose pages may read the admin answers (CORS; empty: none). An admin listener
	// that other hosts can reach needs a token or an API key unless AdminInsecure is set.
	AdminToken        string
	AdminAllowOrigins []string
	AdminInsecure     bool
	// Pprof serves /debug/pprof on the admin listener (behind the admin token).
	Pprof bool
	// Recover makes channels recoverable across reconnects (docs/recovery.md); empty
	// Channels: none.
	Recover RecoverConfig
	// PaceDelay is the scheduling delay (p99 over 100 ms: how long this process's runnable
	// goroutines wait for a CPU) above which new connections (Front.Limits.HandshakeRate) and
	// recovery replays (Recover.ReplayRate) are admitted at a lower rate, down to a twentieth
	// (pace.Governor has the rule); zero value 10 ms, negative: the configured rates always.
	PaceDelay time.Duration
	// Demo installs the demo application (not for production).
	Demo bool
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
}

// Defaults is the configuration a zero Config stands for, every documented default filled
// in: the front's (wsfront.DefaultConfig), the mesh's (mesh.DefaultConfig) and the node's
// own. `sockmesh serve` takes each flag's default from it, so a program embedding the node
// gets what the command line gets. Shards stays 0 (one per CPU); Name is the host name.
func Defaults() Config {
	var c Config
	_ = c.setDefaults() // only the zero Config's own checks: none fail
	c.Logger = nil
	c.Shards = 0
	c.Front = wsfront.DefaultConfig()
	m, err := mesh.DefaultConfig(c.GossipProfile)
	if err != nil {
		panic(err) // the default profile is known
	}
	c.MeshPeerBuffer, c.MeshPeerQueue = m.PeerBuffer, m.PeerQueueBytes
	c.MeshMaxHandshakes, c.MeshHandshakeTimeout = m.MaxPendingHandshakes, m.HandshakeTimeout
	c.MeshInterestInterval, c.MeshInterestBytes = m.InterestFlushInterval, m.InterestMessageBytes
	c.MeshRetainBytes, c.MeshRetainAge, c.MeshRepairWait = m.RetainBytes, m.RetainAge, m.RepairWait
	c.MeshReorderBytes, c.MeshRepairRate, c.MeshFetchRate = m.ReorderBytes, m.RepairRate, m.FetchRate
	c.GossipRejoinInterval = m.RejoinInterval
	c.Hook.Actions = access.DefaultHookActions()
	c.Hook.Timeout = access.DefaultHookTimeout
	return c
}

func (c *Config) setDefaults() error {
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "sockmesh"
		}
		c.Name = h
	}
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.WSAddr, "127.0.0.1:8000")
	def(&c.AdminAddr, "127.0.0.1:8001")
	def(&c.MeshAddr, "127.0.0.1:8002")
	def(&c.GossipAddr, "127.0.0.1:8003")
	def(&c.GossipProfile, "lan")
	def(&c.AuthProfile, "socketcluster")
	if c.Shards <= 0 {
		c.Shards = runtime.NumCPU()
	}
	if c.AuthExpiry <= 0 {
		c.AuthExpiry = 24 * time.Hour
	}
	c.Recover = c.Recover.withDefaults()
	if c.PaceDelay == 0 {
		c.PaceDelay = 10 * time.Millisecond
	}
	if c.DrainDuration <= 0 {
		c.DrainDuration = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	for name, addr := range map[string]string{"ws-addr": c.WSAddr, "admin-addr": c.AdminAddr, "mesh-addr": c.MeshAddr, "gossip-addr": c.GossipAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not host:port: %w", name, addr, err))
		}
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			errs = append(errs, fmt.Errorf("join: %q is not host:port: %w", j, err))
		}
	}
	if c.APIAddr != "" {
		if _, _, err := net.SplitHostPort(c.APIAddr); err != nil {
			errs = append(errs, fmt.Errorf("api-addr: %q is not host:port: %w", c.APIAddr, err))
		}
		if c.APIKey == "" {
			errs = append(errs, errors.New("api-addr needs api-key: the HTTP API is never served without a key"))
		}
	}
	if c.AdminToken == "" && c.APIKey == "" && !c.AdminInsecure && !loopbackAddr(c.AdminAddr) {
		errs = append(errs, fmt.Errorf("admin-addr %s can be reached from other hosts and nothing guards it: set --admin-token (env SOCKMESH_ADMIN_TOKEN) or --api-key, or --admin-insecure to serve /metrics, /cluster and /ui to anyone who reaches it", c.AdminAddr))
	}
	for _, o := range c.AdminAllowOrigins {
		if _, err := adminguard.NormalizeOrigin(o); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range c.Recover.Channels {
		if _, err := path.Match(p, ""); err != nil {
			errs = append(errs, fmt.Errorf("recover-channels: %q: %w", p, err))
		}
	}
	for _, r := range c.Recover.Rules {
		if _, err := path.Match(r.Pattern, ""); err != nil || r.Pattern == "" {
			errs = append(errs, fmt.Errorf("recover-rule: pattern %q: not a channel pattern", r.Pattern))
		}
		if r.Messages < 0 || r.Age < 0 {
			errs = append(errs, fmt.Errorf("recover-rule %q: messages and age cannot be negative", r.Pattern))
		}
	}
	switch c.AuthProfile {
	case "socketcluster", "strict":
	default:
		errs = append(errs, fmt.Errorf("auth-profile: %q is not socketcluster or strict", c.AuthProfile))
	}
	if c.AuthMaxLifetime < 0 || c.AuthClockSkew < 0 {
		errs = append(errs, errors.New("auth-max-lifetime and auth-clock-skew cannot be negative"))
	}
	if v := c.Front.ProtocolVersion; v != 0 && v != 1 && v != 2 {
		errs = append(errs, fmt.Errorf("protocol-version: %d is not 1 or 2", v))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("tls-cert and tls-key go together: give both or neither"))
	}
	if c.Front.PingTimeout > 0 && c.Front.PingInterval >= c.Front.PingTimeout {
		errs = append(errs, fmt.Errorf("ping-interval (%s) must be shorter than ping-timeout (%s)", c.Front.PingInterval, c.Front.PingTimeout))
	}
	return errors.Join(errs...)
}

// advertised returns addr with its host replaced by AdvertiseHost when that is set.
func (c *Config) advertised(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if c.AdvertiseHost != "" {
		host = c.AdvertiseHost
	} else if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// loopbackAddr: host:port names a loopback address (or localhost), which only this host's
// processes can reach.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
