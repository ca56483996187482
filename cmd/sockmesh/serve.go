package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sockmesh/sockmesh/mesh"
	"github.com/sockmesh/sockmesh/node"
)

func runServe(args []string) error {
	cfg, exit, err := parseServe(args, os.Stdout)
	if err != nil || exit {
		return err
	}
	logger := cfg.Logger
	if cfg.AuthKey == "" && len(cfg.AuthPublicKeys) == 0 && cfg.AuthJWKSURL == "" {
		logger.Warn("no --auth-key, --auth-public-key or --auth-jwks-url: tokens can neither be issued nor accepted")
	}

	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := n.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "sockmesh node %s\n  clients: %s\n  admin:   %s\n", n.Name(), n.WSURL(), n.AdminURL())
	if u := n.APIURL(); u != "" {
		fmt.Fprintf(os.Stderr, "  api:     %s\n", u)
	}
	var fatal error
	select {
	case <-ctx.Done():
	case <-n.Done(): // drained through POST /drain (sockmesh drain, a preStop hook)
		stop()
		return n.DrainErr()
	case fatal = <-n.Err():
		logger.Error("fatal mesh error, shutting down", "err", fatal)
	}
	stop()
	logger.Info("draining", "duration", cfg.DrainDuration)
	// The budget: the client closes, the handoff wait (node.DrainHandoffWait), the gossip leave.
	sctx, cancel := context.WithTimeout(context.Background(), cfg.DrainDuration+15*time.Second)
	defer cancel()
	_ = n.Shutdown(sctx)
	<-n.Done() // a drain already under way (POST /drain) finishes first
	if err := n.DrainErr(); err != nil {
		return err
	}
	return fatal
}

// parseServe turns serve's flags, environment and config file into the node's
// configuration. exit is true when a flag asked for output only (--version, --print-config),
// written to out. Every flag's default is node.Defaults()'s value: a program embedding the
// node with a zero Config gets what `sockmesh serve` gets (TestServeFlagsAreTheLibraryDefaults).
func parseServe(args []string, out io.Writer) (cfg node.Config, exit bool, err error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	d := node.Defaults()
	fs.StringVar(&cfg.Name, "name", d.Name, "node name, unique in the cluster")
	fs.StringVar(&cfg.WSAddr, "ws-addr", d.WSAddr, "client listener; WebSocket path /socketcluster/")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", d.AdminAddr, "operator HTTP: /healthz, /readyz (open); /metrics, /cluster, /ui, /drain (behind --admin-token)")
	fs.StringVar(&cfg.MeshAddr, "mesh-addr", d.MeshAddr, "ZeroMQ publish socket bind address")
	fs.StringVar(&cfg.GossipAddr, "gossip-addr", d.GossipAddr, "Serf bind address (TCP and UDP)")
	fs.StringVar(&cfg.AdvertiseHost, "advertise-host", "", "host others should dial, when it differs from the bind host")
	join := fs.String("join", "", "comma-separated gossip addresses of seed peers; empty = start a new cluster")
	fs.StringVar(&cfg.GossipProfile, "gossip-profile", d.GossipProfile, "failure detection timing: lan (about 1 s) or wan")
	fs.DurationVar(&cfg.GossipRejoinInterval, "gossip-rejoin-interval", d.GossipRejoinInterval, "how often a failed (not left) member's gossip address is dialled until it is back, so a restarted node without seeds is found; negative: only Serf's reconnect (one random failed member per 5 s, with a probability)")
	clusterKey := fs.String("cluster-key", "", "base64 of 32 random bytes shared by every node (head -c 32 /dev/urandom | base64): encrypts gossip and seals node-to-node traffic; empty: open mesh, trusted networks only")
	meshMaxFrame := byteSize(0)
	fs.Var(&meshMaxFrame, "mesh-max-frame", "largest node-to-node message in bytes, checked before anything is allocated; the same on every node (0: --max-payload + 128 KiB)")
	meshPeerBuffer := byteSize(d.MeshPeerBuffer)
	fs.Var(&meshPeerBuffer, "mesh-peer-buffer", "bytes queued for one peer before it is cut as a slow peer (it redials; its loss shows in its gap counters)")
	meshPeerQueue := byteSize(d.MeshPeerQueue)
	fs.Var(&meshPeerQueue, "mesh-peer-queue", "publication bytes waiting for one peer before batching; past it the peer is cut as a slow peer")
	fs.IntVar(&cfg.MeshMaxHandshakes, "mesh-max-handshakes", d.MeshMaxHandshakes, "mesh connections in their handshake at once (past it the oldest is closed)")
	fs.DurationVar(&cfg.MeshHandshakeTimeout, "mesh-handshake-timeout", d.MeshHandshakeTimeout, "longest mesh handshake (cluster-key proof and ZMTP greeting), dial and accept side")
	fs.DurationVar(&cfg.MeshInterestInterval, "mesh-interest-interval", d.MeshInterestInterval, "least time between two interest announcements: subscribe changes within it go out together")
	meshInterestBytes := byteSize(d.MeshInterestBytes)
	fs.Var(&meshInterestBytes, "mesh-interest-bytes", "channel names in one interest announcement or snapshot part (bounds control traffic per interval)")
	meshRetainBytes := byteSize(d.MeshRetainBytes)
	fs.Var(&meshRetainBytes, "mesh-retain-bytes", "publications kept per peer link to retransmit what the peer missed (freeze, partition, cut); 0: none kept, no repair")
	fs.DurationVar(&cfg.MeshRetainAge, "mesh-retain-age", d.MeshRetainAge, "oldest publication kept for retransmission: loss from a fault longer than this is counted, not repaired")
	fs.DurationVar(&cfg.MeshRepairWait, "mesh-repair-wait", d.MeshRepairWait, "longest a peer's later publications wait, in order, behind a repair that makes no progress (then the gap is counted as lost)")
	meshReorderBytes := byteSize(d.MeshReorderBytes)
	fs.Var(&meshReorderBytes, "mesh-reorder-bytes", "bytes of a peer's publications that may wait behind a repair; past it the gap is counted as lost")
	meshRepairRate := byteSize(d.MeshRepairRate)
	fs.Var(&meshRepairRate, "mesh-repair-rate", "retransmission bytes per second to one peer (it also waits while the peer's send queue is half full)")
	fs.IntVar(&cfg.Shards, "shards", d.Shards, "broker shards (0 = number of CPUs)")
	configPath := fs.String("config", "", "optional YAML file with the same keys as these flags")
	fs.DurationVar(&cfg.Front.PingInterval, "ping-interval", d.Front.PingInterval, "interval between server pings")
	fs.DurationVar(&cfg.Front.PingTimeout, "ping-timeout", d.Front.PingTimeout, "close a client silent this long (4001); announced to clients")
	fs.DurationVar(&cfg.Front.HandshakeTimeout, "handshake-timeout", d.Front.HandshakeTimeout, "close a connection without #handshake by then (4005)")
	maxPayload := byteSize(d.Front.MaxPayload)
	fs.Var(&maxPayload, "max-payload", "largest inbound frame in bytes (larger: close 1009)")
	fs.IntVar(&cfg.Front.MaxChannelLength, "max-channel-length", d.Front.MaxChannelLength, "longest channel name in bytes")
	fs.IntVar(&cfg.Front.ProtocolVersion, "protocol-version", d.Front.ProtocolVersion, "SocketCluster protocol: 2 (clients since v15: ping '') or 1 (clients up to v14, or set to protocolVersion 1: ping '#1'); clients do not say which they speak")
	fs.IntVar(&cfg.Front.MaxAsyncInvokes, "max-async-invokes", d.Front.MaxAsyncInvokes, "asynchronous invoke handlers running at once per connection (the demo's serverInvoke, say); past it the client gets TooManyPendingInvokesError")
	fs.IntVar(&cfg.Front.MaxBatch, "max-batch", d.Front.MaxBatch, "packets in one inbound array frame (a client batch); more: close 1009")
	fs.IntVar(&cfg.Front.MaxSubscriptions, "max-subscriptions", d.Front.MaxSubscriptions, "subscriptions per connection")
	sendQueue := byteSize(d.Front.SendQueueBytes)
	fs.Var(&sendQueue, "send-queue", "bytes queued for one client before it is disconnected as a slow consumer")
	fs.DurationVar(&cfg.Front.WriteTimeout, "write-timeout", d.Front.WriteTimeout, "longest single write to a client")
	fs.IntVar(&cfg.Front.ReleaseMemoryAfter, "release-memory-after", d.Front.ReleaseMemoryAfter, "after this many new connections, at the first quiet sweeper tick, collect the storm's garbage so that freed memory goes back to the OS (0: never)")
	fs.Float64Var(&cfg.Front.WriteDelayLoad, "write-delay-load", d.Front.WriteDelayLoad, "process CPU use (share of its cores) from which --write-delay applies; below two thirds of it frames are written as soon as possible (-1: the window always applies)")
	fs.BoolVar(&cfg.Front.ArrayFrames, "array-frames", d.Front.ArrayFrames, "pack the packets waiting for one client into one JSON array frame (a SocketCluster batch) instead of one frame each; only clients that parse arrays (the npm socketcluster-client) can read them")
	fs.DurationVar(&cfg.Front.WriteDelay, "write-delay", d.Front.WriteDelay, "coalescing window of a busy connection: publications within this time of its previous write go out together in one write; responses never wait (0: none, lowest latency, fewer messages/s)")
	fs.IntVar(&cfg.Front.Limits.MaxConnections, "max-connections", d.Front.Limits.MaxConnections, "client connections on this node (-1: no limit)")
	fs.IntVar(&cfg.Front.Limits.MaxConnectionsPerIP, "max-connections-per-ip", d.Front.Limits.MaxConnectionsPerIP, "client connections from one IP (-1: no limit)")
	fs.Float64Var(&cfg.Front.Limits.HandshakeRate, "handshake-rate", d.Front.Limits.HandshakeRate, "new connections per second on this node (10 ms' worth at once): the node accepts connections in their turn, and past it they wait in the kernel's accept queue (up to net.core.somaxconn, then in their clients' SYN retries), so that the clients of a node that died reconnect here spread out at no cost to the others (-1: unpaced)")
	fs.DurationVar(&cfg.Front.Limits.HandshakeWait, "handshake-wait", d.Front.Limits.HandshakeWait, "longest an upgrade waits for --handshake-rate before it is refused with 503, where the front serves as an http.Handler (an embedding program); the node's own listener takes connections in turn instead, and refuses none for the rate")
	fs.DurationVar(&cfg.PaceDelay, "pace-delay", d.PaceDelay, "scheduling delay (p99 over 100 ms of how long runnable goroutines wait for a CPU) above which --handshake-rate and --recover-replay-rate are lowered (by target/p99 a look, 30 % to half, while it stays above, down to a twentieth; raised again while it is under half of it), so that a reconnect or recovery storm waits in its queues and not in front of the other clients' messages (-1: the configured rates always)")
	fs.Float64Var(&cfg.Front.Limits.HandshakeRatePerIP, "handshake-rate-per-ip", d.Front.Limits.HandshakeRatePerIP, "new connections per second from one IP, with an equal burst (-1: no limit)")
	fs.Float64Var(&cfg.Front.Limits.PublishRate, "publish-rate", d.Front.Limits.PublishRate, "publications per second per connection, with an equal burst (-1: no limit)")
	fs.Float64Var(&cfg.Front.Limits.EventRate, "event-rate", d.Front.Limits.EventRate, "application events (invokes and transmits) per second per connection, with an equal burst (-1: no limit)")
	origins := fs.String("allowed-origins", "", "comma-separated browser Origins allowed to connect (https://app.example.com, *.example.com); empty: all")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "certificate file (PEM) for the client listener; with --tls-key, clients use wss://")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "private key file (PEM) for --tls-cert")
	fs.StringVar(&cfg.AuthKey, "auth-key", "", "HS256 key for auth tokens, shared by every node of a cluster (empty: no tokens)")
	pubKeys := fs.String("auth-public-key", "", "comma-separated PEM files of public keys verifying RS/PS/ES/EdDSA tokens from your auth service (re-read when changed)")
	fs.StringVar(&cfg.AuthJWKSURL, "auth-jwks-url", "", "JWKS URL of your auth service (refreshed every 5 min and on an unknown key id)")
	fs.StringVar(&cfg.AuthIssuer, "auth-issuer", "", "required iss of client tokens (empty: not checked)")
	fs.StringVar(&cfg.AuthAudience, "auth-audience", "", "required aud of client tokens (empty: not checked)")
	fs.StringVar(&cfg.AuthProfile, "auth-profile", "socketcluster", "token policy: socketcluster (as socketcluster-server: tokens without exp accepted, no clock skew) or strict (exp required, lifetime at most --auth-max-lifetime or 24h, iat not in the future, --auth-clock-skew or 5s)")
	fs.BoolVar(&cfg.AuthRequireExp, "auth-require-exp", false, "refuse client tokens without exp")
	fs.DurationVar(&cfg.AuthMaxLifetime, "auth-max-lifetime", 0, "refuse client tokens valid for longer than this (exp - iat; implies --auth-require-exp; 0: no limit)")
	fs.DurationVar(&cfg.AuthClockSkew, "auth-clock-skew", 0, "leeway on a token's exp, nbf and iat for clocks that disagree")
	fs.StringVar(&cfg.AccessPolicyFile, "access-policy", "", "YAML channel access policy (who may subscribe and publish, by channel pattern); empty: all allowed")
	fs.StringVar(&cfg.Hook.URL, "hook-url", "", "your backend's decision endpoint (POST JSON) for handshake/subscribe/publish/invoke; empty: none")
	hookActions := fs.String("hook-actions", strings.Join(d.Hook.Actions, ","), "what the hook decides: any of handshake, subscribe, publish, invoke")
	fs.DurationVar(&cfg.Hook.Timeout, "hook-timeout", d.Hook.Timeout, "timeout of one hook call")
	fs.BoolVar(&cfg.Hook.FailOpen, "hook-fail-open", false, "allow when the hook is unreachable or fails (default: deny with HookUnavailableError)")
	fs.StringVar(&cfg.APIAddr, "api-addr", "", "HTTP API listener (/api/publish, /api/channels, ...); empty: no API")
	fs.StringVar(&cfg.APIKey, "api-key", "", "key the HTTP API requires (header Authorization: apikey KEY, or X-API-Key); shared by every node")
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "bearer token the admin listener requires for everything but /healthz and /readyz (Authorization: Bearer TOKEN; the API key works too); needed when --admin-addr is not loopback")
	adminOrigins := fs.String("admin-allow-origins", "", "comma-separated browser origins (http://host:port) whose pages may read the admin endpoints, e.g. the other nodes' status pages; empty: none")
	fs.BoolVar(&cfg.AdminInsecure, "admin-insecure", false, "serve the admin listener on a non-loopback address without --admin-token or --api-key (anyone who reaches it reads the cluster)")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof on the admin listener (behind --admin-token)")
	fs.BoolVar(&cfg.APIEnforcePolicy, "api-enforce-policy", false, "check API publications against --access-policy's publish rules as an unauthenticated client (default: the API is trusted)")
	fs.DurationVar(&cfg.AuthExpiry, "auth-expiry", d.AuthExpiry, "lifetime of issued tokens")
	fs.DurationVar(&cfg.DrainDuration, "drain-duration", d.DrainDuration, "spread client closes over this long when draining (SIGTERM, sockmesh drain)")
	recoverChans := fs.String("recover-channels", "", "comma-separated channel patterns (chat.*) whose recent publications every serving node keeps, so that a client subscribing with data {\"recover\": position} gets what it missed (docs/recovery.md); empty: none")
	fs.Var((*recoverRules)(&cfg.Recover.Rules), "recover-rule", "pattern,messages,age: channels the pattern matches recover with bounds of their own (prices.*,100,10s; an empty messages or age takes --recover-messages or --recover-age); repeat the flag for several, the first that matches wins, before --recover-channels")
	fs.IntVar(&cfg.Recover.Messages, "recover-messages", d.Recover.Messages, "publications kept per recovery channel")
	fs.DurationVar(&cfg.Recover.Age, "recover-age", d.Recover.Age, "how long a recovery channel's publications are kept")
	fs.DurationVar(&cfg.Recover.FetchTimeout, "recover-fetch-timeout", d.Recover.FetchTimeout, "how long a recovering subscription waits for a peer that receives the channel, when this node did not receive all the client missed")
	fs.IntVar(&cfg.Recover.Fetches, "recover-fetches", d.Recover.Fetches, "recoveries asking peers at once (more wait their turn)")
	fs.DurationVar(&cfg.Recover.ClockSkew, "recover-clock-skew", d.Recover.ClockSkew, "how far behind one host's clock may be behind another's: publications of an origin a client's position does not name count as missed from this long before the position's time (negative: none)")
	fs.IntVar(&cfg.Recover.ShareBytes, "recover-share-bytes", d.Recover.ShareBytes, "bytes of peers' complete answers kept (each for --recover-age at most, while this node keeps receiving the channel) so that recoveries from the same position share one fetch; negative: only fetches under way are shared")
	fs.IntVar(&cfg.Recover.ReplayRate, "recover-replay-rate", d.Recover.ReplayRate, "publications replayed per second by the node over all recovering clients (10 ms' worth at once); past it replays wait their turn, so that a storm of reconnecting clients does not crowd out live traffic (-1: unpaced)")
	fs.IntVar(&cfg.Recover.MaxChannels, "recover-max-channels", d.Recover.MaxChannels, "recovery channels one node keeps publications of; past it new ones are served without positions (memory is at most this × --recover-messages × the publication size)")
	fs.IntVar(&cfg.MeshFetchRate, "mesh-fetch-rate", d.MeshFetchRate, "recovery fetch requests one peer may make per second (past it they are refused)")
	fs.BoolVar(&cfg.Demo, "demo", false, "install the demo application (NOT for production)")
	printConfig := fs.Bool("print-config", false, "print the effective configuration (flags, environment, file) as YAML and exit")
	version := fs.Bool("version", false, "print the version and build information and exit")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return cfg, false, err
	}
	if fs.NArg() > 0 {
		return cfg, false, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := applyEnvAndConfig(fs, *configPath); err != nil {
		return cfg, false, err
	}
	if *version {
		fmt.Fprintln(out, versionString())
		return cfg, true, nil
	}
	if *printConfig {
		return cfg, true, printEffective(out, fs)
	}
	if err := mesh.CheckName(cfg.Name); err != nil {
		return cfg, false, fmt.Errorf("name: %w", err)
	}
	cfg.Front.MaxPayload = int64(maxPayload)
	cfg.Front.SendQueueBytes = int(sendQueue)
	cfg.MeshMaxFrame = int(meshMaxFrame)
	cfg.MeshPeerBuffer = int(meshPeerBuffer)
	cfg.MeshPeerQueue = int(meshPeerQueue)
	cfg.MeshInterestBytes = int(meshInterestBytes)
	cfg.MeshRetainBytes = int(meshRetainBytes)
	if cfg.MeshRetainBytes == 0 {
		cfg.MeshRetainBytes = -1 // the flag's 0 means none; the config's zero value means the default
	}
	if cfg.Front.WriteDelay == 0 {
		cfg.Front.WriteDelay = -1 // likewise: --write-delay 0 means no delay
	}
	if cfg.Front.ReleaseMemoryAfter == 0 {
		cfg.Front.ReleaseMemoryAfter = -1 // and --release-memory-after 0 means never
	}
	cfg.MeshReorderBytes = int(meshReorderBytes)
	cfg.MeshRepairRate = int(meshRepairRate)
	if *clusterKey != "" {
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(*clusterKey))
		if err != nil {
			return cfg, false, fmt.Errorf("cluster-key: not base64: %w", err)
		}
		if len(k) != 32 {
			return cfg, false, fmt.Errorf("cluster-key: %d bytes, want 32 (head -c 32 /dev/urandom | base64)", len(k))
		}
		cfg.ClusterKey = k
	}
	for _, a := range strings.Split(*hookActions, ",") {
		switch a = strings.TrimSpace(a); a {
		case "handshake", "subscribe", "publish", "invoke":
			cfg.Hook.Actions = append(cfg.Hook.Actions, a)
		case "":
		default:
			return cfg, false, fmt.Errorf("hook-actions: %q is not handshake, subscribe, publish or invoke", a)
		}
	}
	for _, k := range strings.Split(*pubKeys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			cfg.AuthPublicKeys = append(cfg.AuthPublicKeys, k)
		}
	}
	for _, o := range strings.Split(*origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.Front.Limits.AllowedOrigins = append(cfg.Front.Limits.AllowedOrigins, o)
		}
	}
	for _, p := range strings.Split(*recoverChans, ",") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.Recover.Channels = append(cfg.Recover.Channels, p)
		}
	}
	for _, o := range strings.Split(*adminOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.AdminAllowOrigins = append(cfg.AdminAllowOrigins, o)
		}
	}
	if *join != "" {
		for _, j := range strings.Split(*join, ",") {
			if j = strings.TrimSpace(j); j != "" {
				cfg.Join = append(cfg.Join, j)
			}
		}
	}
	if cfg.Logger, err = newLogger(*logLevel, *logFormat); err != nil {
		return cfg, false, err
	}
	return cfg, false, nil
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("log-format: %q is not text or json", format)
}

// recoverRules is the repeatable --recover-rule flag: "pattern,messages,age", split at the last
// two commas so that a pattern may hold commas.
type recoverRules []node.RecoverRule

func (r *recoverRules) String() string {
	if r == nil {
		return ""
	}
	var parts []string
	for _, x := range *r {
		parts = append(parts, fmt.Sprintf("%s,%d,%s", x.Pattern, x.Messages, x.Age))
	}
	return strings.Join(parts, " ")
}

func (r *recoverRules) Set(v string) error {
	i := strings.LastIndexByte(v, ',')
	j := -1
	if i > 0 {
		j = strings.LastIndexByte(v[:i], ',')
	}
	if j <= 0 {
		return fmt.Errorf("%q: want pattern,messages,age (prices.*,100,10s)", v)
	}
	rule := node.RecoverRule{Pattern: strings.TrimSpace(v[:j])}
	if _, err := path.Match(rule.Pattern, ""); err != nil {
		return fmt.Errorf("%q: pattern %q: %w", v, rule.Pattern, err)
	}
	if m := strings.TrimSpace(v[j+1 : i]); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n <= 0 {
			return fmt.Errorf("%q: messages %q is not a positive number", v, m)
		}
		rule.Messages = n
	}
	if a := strings.TrimSpace(v[i+1:]); a != "" {
		d, err := time.ParseDuration(a)
		if err != nil || d <= 0 {
			return fmt.Errorf("%q: age %q is not a positive duration", v, a)
		}
		rule.Age = d
	}
	*r = append(*r, rule)
	return nil
}
