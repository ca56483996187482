package node

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sockmesh/sockmesh/access"
	"github.com/sockmesh/sockmesh/adminguard"
	"github.com/sockmesh/sockmesh/demo"
	"github.com/sockmesh/sockmesh/httpapi"
	"github.com/sockmesh/sockmesh/mesh"
	"github.com/sockmesh/sockmesh/pace"
	"github.com/sockmesh/sockmesh/scproto"
	"github.com/sockmesh/sockmesh/wsfront"
)

// Node is one running sockmesh node.
type Node struct {
	cfg    Config
	reg    *prometheus.Registry
	front  *wsfront.Server
	broker *Broker
	mesh   *mesh.Mesh
	gov    *pace.Governor // nil: the configured rates always
	api    *httpapi.API
	guard  *adminguard.Guard // the admin listener's door
	policy *access.Policy

	mu        sync.Mutex
	wsLn      net.Listener
	adminLn   net.Listener
	adminSrv  *http.Server
	apiLn     net.Listener
	apiSrv    *http.Server
	started   bool
	tls       bool
	stopped   bool
	serveDone sync.WaitGroup
	drain     drainState // drain.go
}

// New builds a node from cfg; nothing listens until Start.
func New(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, reg: prometheus.NewRegistry()}
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.reg.MustRegister(newMeshStats(n))
	var auth *access.Auth
	if cfg.AuthKey != "" || len(cfg.AuthPublicKeys) > 0 || cfg.AuthJWKSURL != "" {
		ac := access.AuthConfig{
			HMACKey: cfg.AuthKey, PublicKeyFiles: cfg.AuthPublicKeys, JWKSURL: cfg.AuthJWKSURL,
			Issuer: cfg.AuthIssuer, Audience: cfg.AuthAudience, DefaultExpiry: cfg.AuthExpiry,
			RequireExp: cfg.AuthRequireExp, MaxLifetime: cfg.AuthMaxLifetime, ClockSkew: cfg.AuthClockSkew,
			Logger: cfg.Logger,
		}
		if cfg.AuthProfile == "strict" {
			ac = access.StrictPolicy(ac, cfg.AuthMaxLifetime, cfg.AuthClockSkew)
		}
		a, err := access.NewAuthWith(ac)
		if err != nil {
			return nil, err
		}
		auth = a
	}
	n.broker = NewBroker(cfg.Shards, nil, nil, n.reg)
	fc := cfg.Front
	fc.Logger = cfg.Logger.With("component", "wsfront")
	fc.Metrics = wsfront.NewMetrics(n.reg)
	n.front = wsfront.New(fc, n.broker, auth)
	if cfg.AccessPolicyFile != "" {
		p, err := access.LoadPolicy(cfg.AccessPolicyFile)
		if err != nil {
			return nil, fmt.Errorf("access-policy: %w", err)
		}
		n.front.UsePolicy(p)
		n.policy = p
	}
	if cfg.Hook.URL != "" {
		h := cfg.Hook
		n.front.UseHook(&h)
	}
	if cfg.Demo {
		demo.Install(n.front, n.Publish)
	}
	n.api = httpapi.New(apiNode{n}, httpapi.Config{
		Key: cfg.APIKey, Policy: n.policy, EnforcePolicy: cfg.APIEnforcePolicy,
		MaxPayload: n.front.Config().MaxPayload, MaxChannelLength: n.front.Config().MaxChannelLength,
	}, n.reg)
	guard, err := n.newAdminGuard()
	if err != nil {
		return nil, err
	}
	n.guard = guard
	return n, nil
}

// Front is the WebSocket front: register invoke/transmit handlers and middleware on it
// before Start.
func (n *Node) Front() *wsfront.Server { return n.front }

// Broker is the node's local subscription table.
func (n *Node) Broker() *Broker { return n.broker }

// Registry is the node's Prometheus registry, served on /metrics.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Name is the node's logical name.
func (n *Node) Name() string { return n.cfg.Name }

// Publish publishes from the server side: local subscribers and every peer that wants the
// channel get it, exactly as if a client had published.
func (n *Node) Publish(channel string, data json.RawMessage) error {
	if why := scproto.ValidChannel(channel, n.front.Config().MaxChannelLength); why != "" {
		return errors.New(why)
	}
	n.broker.Publish(channel, data)
	return nil
}

// Start opens the listeners and serves until Shutdown.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started {
		return errors.New("node already started")
	}
	var lc net.ListenConfig
	var tlsCfg *tls.Config
	if n.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(n.cfg.TLSCert, n.cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("tls-cert/tls-key: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	// No TCP keepalive on client connections: the protocol's pings already find dead
	// clients, and the keepalive options cost four setsockopt calls per accepted connection.
	wsLC := lc
	wsLC.KeepAlive = -1
	wsLC.Control = deferAccept(max(1, int(n.front.Config().HandshakeTimeout/time.Second)))
	wsLn, err := wsLC.Listen(ctx, "tcp", n.cfg.WSAddr)
	if err != nil {
		return fmt.Errorf("ws-addr: %w", err)
	}
	if tlsCfg != nil {
		wsLn = tls.NewListener(wsLn, tlsCfg)
		n.tls = true
	}
	adminLn, err := lc.Listen(ctx, "tcp", n.cfg.AdminAddr)
	if err != nil {
		wsLn.Close()
		return fmt.Errorf("admin-addr: %w", err)
	}
	var apiLn net.Listener
	if n.cfg.APIAddr != "" {
		apiLn, err = lc.Listen(ctx, "tcp", n.cfg.APIAddr)
		if err != nil {
			wsLn.Close()
			adminLn.Close()
			return fmt.Errorf("api-addr: %w", err)
		}
	}
	n.wsLn, n.adminLn, n.apiLn = wsLn, adminLn, apiLn
	// The mesh starts before clients are served, so that the first subscription's interest
	// and the first publication already have somewhere to go.
	m, err := mesh.New(mesh.Config{
		Name: n.cfg.Name, MeshAddr: n.cfg.MeshAddr, GossipAddr: n.cfg.GossipAddr,
		AdvertiseHost: n.cfg.AdvertiseHost, Join: n.cfg.Join, Profile: n.cfg.GossipProfile,
		WSURL: n.WSURL(), AdminURL: n.AdminURL(),
		Logger: n.cfg.Logger, Registerer: n.reg,
		Deliver:        n.broker.DeliverRemote,
		ClusterKey:     n.cfg.ClusterKey,
		MaxFrame:       n.cfg.MeshMaxFrame,
		MaxPublication: int(n.front.Config().MaxPayload),
		PeerBuffer:     n.cfg.MeshPeerBuffer,
		PeerQueueBytes: n.cfg.MeshPeerQueue,

		MaxPendingHandshakes:  n.cfg.MeshMaxHandshakes,
		HandshakeTimeout:      n.cfg.MeshHandshakeTimeout,
		InterestFlushInterval: n.cfg.MeshInterestInterval,
		InterestMessageBytes:  n.cfg.MeshInterestBytes,
		RetainBytes:           n.cfg.MeshRetainBytes,
		RetainAge:             n.cfg.MeshRetainAge,
		RepairWait:            n.cfg.MeshRepairWait,
		ReorderBytes:          n.cfg.MeshReorderBytes,
		RepairRate:            n.cfg.MeshRepairRate,
		Fetch:                 n.broker.ServeFetch,
		FetchRate:             n.cfg.MeshFetchRate,
		RejoinInterval:        n.cfg.GossipRejoinInterval,
	})
	if err == nil {
		// Positions name this process by its Serf name; peers may ask for what it keeps as
		// soon as the mesh runs.
		n.broker.SetRecovery(n.cfg.Recover, m.SerfName())
		n.broker.SetFetcher(m)
		err = m.Start(ctx)
		if err != nil {
			_ = m.Close()
		}
	}
	if err != nil {
		wsLn.Close()
		adminLn.Close()
		if apiLn != nil {
			apiLn.Close()
		}
		return err // mesh errors already say "mesh: ..."
	}
	n.mesh = m
	n.broker.SetMesh(m, m)
	n.startGovernor()
	n.adminSrv = &http.Server{Handler: n.guard.Handler(n.withDrain(n.adminHandler())), ReadHeaderTimeout: 10 * time.Second}
	n.serveDone.Add(2)
	go func() { defer n.serveDone.Done(); _ = n.front.Serve(wsLn) }()
	go func() { defer n.serveDone.Done(); _ = n.adminSrv.Serve(adminLn) }()
	if apiLn != nil {
		n.apiSrv = &http.Server{Handler: n.api.Handler(), ReadHeaderTimeout: 10 * time.Second}
		n.serveDone.Add(1)
		go func() { defer n.serveDone.Done(); _ = n.apiSrv.Serve(apiLn) }()
	}
	n.started = true
	n.cfg.Logger.Info("node started", "name", n.cfg.Name, "ws", n.WSURL(), "admin", n.AdminURL(), "api", n.APIURL())
	return nil
}

// Mesh is the node's cluster layer (nil before Start).
func (n *Node) Mesh() *mesh.Mesh { return n.mesh }

// Err delivers a fatal mesh error (e.g. the logical name was taken by another live node).
func (n *Node) Err() <-chan error {
	if n.mesh == nil {
		return nil
	}
	return n.mesh.Err()
}

// WSURL is the URL clients connect to.
func (n *Node) WSURL() string {
	scheme := "ws://"
	if n.tls {
		scheme = "wss://"
	}
	return scheme + n.cfg.advertised(n.listenAddr(n.wsLn, n.cfg.WSAddr)) + n.front.Config().Path
}

// AdminURL is the base URL of the operator endpoints.
func (n *Node) AdminURL() string {
	return "http://" + n.cfg.advertised(n.listenAddr(n.adminLn, n.cfg.AdminAddr))
}

// APIURL is the base URL of the HTTP API, or "" when it is off.
func (n *Node) APIURL() string {
	if n.cfg.APIAddr == "" {
		return ""
	}
	return "http://" + n.cfg.advertised(n.listenAddr(n.apiLn, n.cfg.APIAddr))
}

func (n *Node) listenAddr(ln net.Listener, configured string) string {
	if ln != nil {
		return ln.Addr().String()
	}
	return configured
}

// Shutdown drains the node (see drain.go): /readyz fails at once, it stops accepting
// clients, closes client sockets with jitter over the drain duration with 4000
// (socketcluster-client reconnects at once, to another node through its URL list or a load
// balancer), keeps the mesh up until those clients' channels are wanted by other nodes, then
// leaves the cluster and stops. ctx bounds it all. Done is closed when it has finished.
func (n *Node) Shutdown(ctx context.Context) error {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return nil
	}
	n.stopped = true
	started := n.started
	n.mu.Unlock()
	if !started {
		// Created, never started: only what New started (the front's poller and workers,
		// the API's state) is to be released.
		n.front.Close()
		n.api.Close()
		return nil
	}
	spread := n.cfg.DrainDuration
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < spread+drainReserve() {
		spread = max(0, time.Until(dl)-drainReserve())
	}
	err := n.drainClients(ctx, spread)
	if n.gov != nil {
		n.gov.Stop()
	}
	// Leave the cluster only after the clients are gone and their interest lives elsewhere,
	// so that their last publications still reach the peers; then stop the mesh and the
	// operator endpoints.
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	if lerr := n.mesh.Leave(lctx); lerr != nil {
		n.cfg.Logger.Warn("gossip leave", "err", lerr)
	}
	cancel()
	if cerr := n.mesh.Close(); cerr != nil {
		n.cfg.Logger.Warn("mesh close", "err", cerr)
	}
	_ = n.adminSrv.Close()
	n.api.Close()
	n.serveDone.Wait()
	n.cfg.Logger.Info("node stopped", "name", n.cfg.Name)
	n.finishDrain(err)
	return err
}

// startGovernor scales the handshake and replay rates by the process's scheduling delay
// (Config.PaceDelay), so that new connections and replays wait in their queues rather than
// in the run queue in front of the other clients' messages.
func (n *Node) startGovernor() {
	var gates []*pace.Gate
	if g := n.front.HandshakeGate(); g != nil {
		gates = append(gates, g)
	}
	if rec := n.broker.rec; rec != nil && rec.replays != nil {
		gates = append(gates, rec.replays)
	}
	if n.cfg.PaceDelay < 0 || len(gates) == 0 {
		return
	}
	share := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sockmesh_pace_share",
		Help: "Share of --handshake-rate and --recover-replay-rate in force: lowered while the scheduling delay is above --pace-delay"})
	share.Set(1)
	n.reg.MustRegister(share)
	n.gov = pace.NewGovernor(n.cfg.PaceDelay)
	n.gov.OnChange = func(s float64, p99 time.Duration) {
		share.Set(s)
		n.cfg.Logger.Debug("pace", "share", s, "sched_p99", p99)
	}
	for _, g := range gates {
		n.gov.Govern(g)
	}
	n.gov.Start()
}
