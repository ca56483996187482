package mesh

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/go-zeromq/zmq4"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"

	"github.com/sockmesh/sockmesh/proto/meshpb"
)

// Mesh is one node's view of the cluster: membership, the PUB socket, the links from every
// peer, and the interest table. All methods are safe for concurrent use.
type Mesh struct {
	cfg Config
	// newerSeen: newer incarnations of our name and since when they are alive (controlLoop only).
	newerSeen map[string]time.Time
	log       *slog.Logger
	met       *metrics
	self      string // serf name: logical name + "-" + incarnation
	inc       string
	start     int64
	mailbox   string // our mailbox topic
	mailboxB  []byte

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	pub    zmq4.Socket
	meshEP string // advertised host:port of the PUB socket

	serf *serf.Serf

	// Closed mesh (cfg.ClusterKey set): sealer seals what we send; sealCounter is its nonce
	// counter; sealMu orders sealing and handing to the PUB socket (see sendEnvelope).
	sealer      cipher.AEAD
	sealMu      sync.Mutex
	sealCounter uint64

	// mu guards the interest table and the peer map, and orders control messages on the wire.
	mu    sync.RWMutex
	table *Table[*peer]
	peers map[string]*peer // by serf name
	fetch fetches          // Fetch requests in flight (fetch.go)
	// failed: what peers removed as failed wanted; Publish counts drops through it.
	failed  *FailedRoutes[*peer]
	closing bool

	// Interest announcement (announce.go): guarded by mu, but flushKick.
	lastFlush time.Time
	flushDue  bool
	flushKick chan struct{}

	readyMu sync.Mutex
	readyQ  []*peer
	readyCh chan struct{}

	memberCh chan struct{}

	memoMu   sync.Mutex
	linkMemo map[string]linkMemo // by serf name; see rememberLink

	joined     atomic.Bool
	started    atomic.Bool
	closeOnce  sync.Once
	closeErr   error
	fatal      chan error
	stalled    atomic.Uint64
	hsTimeouts atomic.Uint64
	// authKey authenticates mesh connections (closed mesh; nil when open).
	authKey []byte
	// noise counts and calms memberlist's lines about garbage on the gossip port.
	noise *gossipNoise
	// rxCfg: the repair settings every link's receive side uses.
	rxCfg rxConfig
	// conns finds each peer's accepted connection (send queue) by its Serf name.
	conns *peerConns
	// rejectLog and slowLog log a rejected connection or a slow peer once per address.
	rejectLog, slowLog *addrLog
	tooLargeOnce       sync.Once
	// guarded by mu: what the metrics already show of the counters above
	stalledReported, hsReported uint64
}

func (m *Mesh) syncCounter(c *atomic.Uint64, reported *uint64, add func(float64)) {
	if cur := c.Load(); cur > *reported {
		add(float64(cur - *reported))
		*reported = cur
	}
}

// New validates cfg and prepares a Mesh; nothing is bound until Start.
func New(cfg Config) (*Mesh, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var rb [8]byte
	if _, err := rand.Read(rb[:]); err != nil {
		return nil, err
	}
	inc := hex.EncodeToString(rb[:])
	self := c.Name + "-" + inc
	m := &Mesh{
		cfg:       c,
		log:       c.Logger.With("component", "mesh"),
		met:       newMetrics(c.Registerer),
		self:      self,
		inc:       inc,
		start:     time.Now().UnixNano(),
		mailbox:   mailboxTopic(self),
		mailboxB:  []byte(mailboxTopic(self)),
		table:     NewTable[*peer](c.UnsubscribeDelay, c.SnapshotRetry),
		peers:     make(map[string]*peer),
		readyCh:   make(chan struct{}, 1),
		memberCh:  make(chan struct{}, 1),
		flushKick: make(chan struct{}, 1),
		linkMemo:  make(map[string]linkMemo),
		failed:    NewFailedRoutes[*peer](c.FailedPeerTTL, failedPeersMax),
		fatal:     make(chan error, 1),
	}
	if c.ClusterKey != nil {
		if m.sealer, err = envelopeAEAD(c.ClusterKey, self); err != nil {
			return nil, fmt.Errorf("mesh: envelope key: %w", err)
		}
		if m.authKey, err = deriveAuthKey(c.ClusterKey); err != nil {
			return nil, fmt.Errorf("mesh: link auth key: %w", err)
		}
	}
	m.rxCfg = rxConfig{
		wait:     c.RepairWait,
		idle:     max(c.RepairWait, c.RetainAge),
		retry:    c.Heartbeat,
		maxBytes: c.ReorderBytes,
	}
	m.conns = newPeerConns()
	m.rejectLog = newAddrLog(m.log, "mesh: connection rejected")
	m.slowLog = newAddrLog(m.log, "mesh: slow peer cut")
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

// SerfName is this process's Serf member name (logical name + "-" + incarnation).
func (m *Mesh) SerfName() string { return m.self }

// MeshEndpoint is the advertised host:port of the PUB socket (valid after Start).
func (m *Mesh) MeshEndpoint() string { return m.meshEP }

// GossipEndpoint is the advertised host:port of Serf (valid after Start).
func (m *Mesh) GossipEndpoint() string {
	if m.serf == nil {
		return ""
	}
	lm := m.serf.LocalMember()
	return net.JoinHostPort(lm.Addr.String(), strconv.Itoa(int(lm.Port)))
}

// Err delivers a fatal error found after Start returned: the logical name found taken by a live
// node when a background join succeeds, or this node superseded by a newer incarnation of its
// name. The node should stop.
func (m *Mesh) Err() <-chan error { return m.fatal }

// Start binds the PUB socket and Serf, joins the cluster and starts the goroutines. If no seed
// answers, joining continues in the background with backoff (Ready stays false). It returns
// ErrNameTaken if a different live process holds the logical name. ctx bounds only Start
// itself. A Mesh can be started once.
func (m *Mesh) Start(ctx context.Context) (err error) {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("mesh: already started")
	}
	defer func() {
		if err != nil {
			if errors.Is(err, ErrNameTaken) && m.serf != nil {
				// Leave rather than vanish, so the others drop this refused incarnation at
				// once instead of preferring it (it is newer) until failure detection.
				lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = m.Leave(lctx)
				cancel()
			}
			m.Close()
		}
	}()
	registerTransport()

	bindHost, _, _ := net.SplitHostPort(m.cfg.MeshAddr)
	adv := m.cfg.AdvertiseHost
	if adv == "" {
		adv = bindHost
	}
	if ip := net.ParseIP(adv); adv == "" || (ip != nil && ip.IsUnspecified()) {
		return fmt.Errorf("mesh: bind host %q is not dialable; set AdvertiseHost", bindHost)
	}

	// The one PUB socket of this Mesh. zmq4 leaks one goroutine (pubMWriter.run) per PUB Close,
	// so a process should create one Mesh and keep it.
	pubOpts := &connOpts{
		handshake:  m.cfg.HandshakeTimeout,
		stall:      m.cfg.StallTimeout,
		peerBuffer: m.cfg.PeerBuffer,
		maxPending: m.cfg.MaxPendingHandshakes,
		authKey:    m.authKey,
		stalled:    &m.stalled,
		hsTimeouts: &m.hsTimeouts,
		onReject:   m.connRejected,
		onSlow:     m.peerSlow,
		conns:      m.conns,
		onDrain:    m.peerDrained,
	}
	pub := zmq4.NewPub(withConnOpts(m.ctx, pubOpts),
		zmq4.WithTimeout(m.cfg.HandshakeTimeout),
		zmq4.WithLogger(newStdLogger(m.log, "zmq4", slog.LevelDebug)))
	if err := pub.SetOption(zmq4.OptionHWM, m.cfg.PubHWM); err != nil {
		closeSocket(pub)
		return fmt.Errorf("mesh: PUB HWM: %w", err)
	}
	if err := pub.Listen("smtcp://" + m.cfg.MeshAddr); err != nil {
		closeSocket(pub)
		return fmt.Errorf("mesh: bind mesh address %s: %w", m.cfg.MeshAddr, err)
	}
	_, port, _ := net.SplitHostPort(pub.Addr().String())
	m.meshEP = net.JoinHostPort(adv, port)
	m.mu.Lock()
	m.pub = pub
	m.mu.Unlock()

	if err := m.startSerf(adv); err != nil {
		return err
	}

	m.wg.Add(4)
	go m.reconcileLoop()
	go m.flusher()
	go m.controlLoop()
	go m.interestLoop()
	if m.cfg.RejoinInterval > 0 {
		m.wg.Add(1)
		go m.rejoinLoop()
	}

	if len(m.cfg.Join) == 0 {
		m.joined.Store(true)
		return nil
	}
	if _, jerr := m.serf.Join(m.cfg.Join, true); jerr == nil {
		m.joined.Store(true)
		m.membershipChanged()
		return m.checkName(ctx)
	} else {
		m.log.Warn("mesh: no seed answered; retrying in the background", "seeds", m.cfg.Join, "err", jerr)
	}
	m.wg.Add(1)
	go m.joinLoop()
	return nil
}

func (m *Mesh) startSerf(adv string) error {
	ghost, gport, _ := net.SplitHostPort(m.cfg.GossipAddr)
	port, err := strconv.Atoi(gport)
	if err != nil {
		return fmt.Errorf("mesh: gossip port %q: %w", gport, err)
	}
	sc := serfConfig(m.cfg.Profile)
	sc.NodeName = m.self
	sc.Tags = map[string]string{
		tagName:  m.cfg.Name,
		tagInc:   m.inc,
		tagStart: strconv.FormatInt(m.start, 10),
		tagMesh:  m.meshEP,
		tagProto: protoVers,
	}
	if m.cfg.WSURL != "" {
		sc.Tags[tagWS] = m.cfg.WSURL
	}
	if m.cfg.AdminURL != "" {
		sc.Tags[tagAdmin] = m.cfg.AdminURL
	}
	sc.MemberlistConfig.Name = m.self
	sc.MemberlistConfig.BindAddr = ghost
	sc.MemberlistConfig.BindPort = port
	sc.MemberlistConfig.AdvertiseAddr = adv
	sc.MemberlistConfig.AdvertisePort = port
	if m.cfg.ClusterKey != nil {
		gk, err := deriveGossipKey(m.cfg.ClusterKey)
		if err != nil {
			return fmt.Errorf("mesh: gossip key: %w", err)
		}
		sc.MemberlistConfig.SecretKey = gk
		sc.MemberlistConfig.GossipVerifyIncoming = true
		sc.MemberlistConfig.GossipVerifyOutgoing = true
	}
	m.noise = newGossipNoise(m.cfg.Logger.With("component", "mesh"), func(kind string) { m.met.gossipErrs.WithLabelValues(kind).Inc() })
	sc.Logger = newGossipLogger(m.cfg.Logger, "serf", m.noise)
	sc.MemberlistConfig.Logger = newGossipLogger(m.cfg.Logger, "memberlist", m.noise)
	events := make(chan serf.Event, 1024)
	sc.EventCh = events
	s, err := serf.Create(sc)
	if err != nil {
		return fmt.Errorf("mesh: start gossip on %s: %w", m.cfg.GossipAddr, err)
	}
	m.serf = s
	m.wg.Add(1)
	go m.drainEvents(events)
	return nil
}

// joinLoop retries the seeds with backoff until one answers.
func (m *Mesh) joinLoop() {
	defer m.wg.Done()
	backoff := 200 * time.Millisecond
	for {
		t := time.NewTimer(backoff/2 + mrand.N(backoff/2+1))
		select {
		case <-m.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if _, err := m.serf.Join(m.cfg.Join, true); err != nil {
			m.log.Debug("mesh: join failed", "seeds", m.cfg.Join, "err", err)
			backoff = min(2*backoff, m.cfg.JoinBackoffMax)
			continue
		}
		m.log.Info("mesh: joined", "seeds", m.cfg.Join)
		m.joined.Store(true)
		m.membershipChanged()
		if err := m.checkName(m.ctx); err != nil {
			m.log.Error("mesh: stopping", "err", err)
			select {
			case m.fatal <- err:
			default:
			}
		}
		return
	}
}

// checkName looks for another incarnation of our logical name that is alive. A member whose
// endpoints we now hold is certainly dead; otherwise it is pinged through memberlist, and any
// answer means a different live process has the name.
func (m *Mesh) checkName(ctx context.Context) error {
	myGossip := m.GossipEndpoint()
	for _, sm := range m.serf.Members() {
		mi, ok := infoOf(sm)
		if !ok || mi.logical != m.cfg.Name || mi.serfName == m.self || sm.Status != serf.StatusAlive {
			continue
		}
		if mi.member.Mesh == m.meshEP || mi.member.Gossip == myGossip {
			continue // we hold its ports: it is gone
		}
		// Nothing listening on its mesh port any more: dead (the fast answer after a crash).
		if c, err := net.DialTimeout("tcp", mi.member.Mesh, m.cfg.HandshakeTimeout); err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				m.log.Info("mesh: taking over the name of a dead incarnation", "name", m.cfg.Name, "old", mi.inc)
				continue
			}
		} else {
			c.Close()
		}
		addr := &net.UDPAddr{IP: sm.Addr, Port: int(sm.Port)}
		for i := 0; i < 3 && ctx.Err() == nil; i++ {
			if _, err := m.serf.Memberlist().Ping(sm.Name, addr); err == nil {
				return fmt.Errorf("%w: %q is alive at %s (incarnation %s)", ErrNameTaken, m.cfg.Name, mi.member.Gossip, mi.inc)
			} else if _, timeout := err.(memberlist.NoPingResponseError); !timeout {
				break
			}
		}
		m.log.Info("mesh: taking over the name of a dead incarnation", "name", m.cfg.Name, "old", mi.inc)
	}
	return nil
}

// controlLoop sends heartbeats, announces due removals and refreshes byte metrics.
func (m *Mesh) controlLoop() {
	defer m.wg.Done()
	tick := time.NewTicker(m.cfg.Heartbeat)
	defer tick.Stop()
	var peers []*peer
	for {
		select {
		case <-m.ctx.Done():
			return
		case now := <-tick.C:
			m.mu.Lock()
			if m.table.Expire(now) {
				m.announce(now)
			}
			for _, name := range m.failed.Expire(now) {
				m.log.Info("mesh: failed peer not back; no longer keeping publications for it", "peer", name)
			}
			b := m.table.LocalBeat()
			m.sendControl([]byte(controlTopic), &meshpb.Envelope{Body: &meshpb.Envelope_Heartbeat{Heartbeat: &meshpb.Heartbeat{
				InterestVersion: b.Version, InterestDigest: b.Digest, InterestCount: uint32(min(b.Count, math.MaxUint32))}}})
			// Each link's tail goes to its receiver alone (its mailbox): in the broadcast every
			// peer received every link's tail, which grew with the square of the cluster.
			for _, t := range m.linkTails(now) {
				m.sendControl([]byte(mailboxTopic(t.Target)), &meshpb.Envelope{Target: t.Target, Body: &meshpb.Envelope_Tail{Tail: t}})
			}
			peers = peers[:0]
			for _, p := range m.peers {
				p.syncByteMetric()
				peers = append(peers, p)
			}
			m.syncCounter(&m.stalled, &m.stalledReported, m.met.stalled.Add)
			m.syncCounter(&m.hsTimeouts, &m.hsReported, m.met.hsTimeout.Add)
			if m.noise != nil {
				m.noise.flush(now)
			}
			m.mu.Unlock()
			// Repair retries and give-ups deliver publications (which takes m.mu): outside it.
			for _, p := range peers {
				p.rmu.Lock()
				p.rx.tick(now.UnixNano(), m.rxCfg, rxOut{p})
				p.rmu.Unlock()
			}
			clear(peers)
			m.checkSuperseded()
		}
	}
}

func (p *peer) syncByteMetric() {
	// rxBytesReported is only touched here, under m.mu.
	cur := p.rxWire.Load()
	if d := cur - p.rxReported; d > 0 {
		p.rxBytesC.Add(float64(d))
		p.rxReported = cur
	}
}

// linkTails lists our send links' tails for the heartbeat tick (retain.go: active links, and links
// that numbered what they could not send, including those of peers away), and expires old
// window entries of every link. m.mu held.
func (m *Mesh) linkTails(now time.Time) []*meshpb.LinkTail {
	var tails []*meshpb.LinkTail
	n := now.UnixNano()
	entries, bytes := 0, 0
	add := func(tx *txLink) {
		e, b := tx.expire(n)
		entries += e
		bytes += b
		if epoch, last, ok := tx.tail(n); ok {
			tails = append(tails, &meshpb.LinkTail{Target: tx.target, Epoch: epoch, Last: last})
		}
	}
	for _, p := range m.peers {
		add(p.tx)
	}
	m.memoMu.Lock()
	for _, lm := range m.linkMemo {
		if lm.tx != nil {
			add(lm.tx)
		}
	}
	m.memoMu.Unlock()
	m.met.retainedBytes.Set(float64(bytes))
	m.met.retainedMsgs.Set(float64(entries))
	return tails
}

// supersedeGrace is how long a newer incarnation of our own name must stay alive before this
// node yields to it. A duplicate started by mistake refuses itself (ErrNameTaken) and leaves
// within a fraction of this; a legitimate successor (this node was frozen or cut off and was
// replaced) stays.
const supersedeGrace = 5 * time.Second

// checkSuperseded reports, once, a newer incarnation of our own logical name that has been
// alive for supersedeGrace. Called only from controlLoop, which owns newerSeen.
func (m *Mesh) checkSuperseded() {
	if m.serf == nil || len(m.fatal) > 0 {
		return
	}
	now := time.Now()
	seen := map[string]time.Time{}
	for _, sm := range m.serf.Members() {
		mi, ok := infoOf(sm)
		if !ok || mi.logical != m.cfg.Name || mi.serfName == m.self || mi.status != serf.StatusAlive || mi.start <= m.start {
			continue
		}
		since, known := m.newerSeen[mi.serfName]
		if !known {
			since = now
		}
		seen[mi.serfName] = since
		if now.Sub(since) >= supersedeGrace {
			select {
			case m.fatal <- fmt.Errorf("mesh: superseded by a newer incarnation of %q (%s), alive for %s", m.cfg.Name, mi.inc, now.Sub(since).Round(time.Millisecond)):
			default:
			}
		}
	}
	m.newerSeen = seen
}

// connRejected counts and logs (once per address) a mesh connection closed for what the other
// end sent or failed to prove.
func (m *Mesh) connRejected(remote net.Addr, err error) {
	reason := rejectReason(err)
	m.met.rejConns.WithLabelValues(reason).Inc()
	m.rejectLog.note(remote, "reason", reason, "err", err)
}

// peerSlow counts and logs a peer cut because its send queue passed PeerBuffer. identity is
// what the peer's READY called itself; only a current member's name becomes a label, so a
// stranger cannot grow the label set.
func (m *Mesh) peerSlow(identity string, remote net.Addr) {
	label := "unknown"
	m.mu.RLock()
	if p, ok := m.peers[identity]; ok {
		label = p.logical
	}
	m.mu.RUnlock()
	m.slowCounted(label, remote)
}

// slowCounted counts and logs (once per address) a slow peer cut.
func (m *Mesh) slowCounted(label string, remote net.Addr) {
	m.met.slowPeers.WithLabelValues(label).Inc()
	m.slowLog.note(remote, "peer", label, "queue", m.cfg.PeerQueueBytes, "buffer", m.cfg.PeerBuffer)
}

// peerDrained resumes a peer whose batches were held back while its send queue was full.
func (m *Mesh) peerDrained(identity string) {
	m.mu.RLock()
	p := m.peers[identity]
	m.mu.RUnlock()
	if p != nil && p.parked.CompareAndSwap(true, false) {
		m.markReady(p)
	}
}

// cutSlow disconnects a peer that fell so far behind that its queue in the mesh overflowed.
func (m *Mesh) cutSlow(p *peer) {
	remote, ok := m.conns.cut(p.serfName)
	if !ok {
		return
	}
	m.slowCounted(p.logical, remote)
}

// frameBudget is what one envelope may hold so that, with names, protobuf framing and
// sealing, its frame stays within MaxFrame.
func (m *Mesh) frameBudget() int { return m.cfg.MaxFrame - frameOverhead }

// frameOverhead is room for an envelope's origin and target names, its batch header and seal.
const frameOverhead = 4 << 10

// pubCost is what one publication adds to a batch envelope (tags and lengths included).
func pubCost(pb publication) int { return len(pb.channel) + len(pb.data) + len(pb.pos) + 24 }

// validChannel: channels travel inside protobuf strings, never in topic frames, so any non-empty
// valid UTF-8 name is safe.
func validChannel(ch string) bool { return ch != "" && utf8.ValidString(ch) }

// Publish sends a local publication to every peer that wants channel. It never blocks and costs
// two map lookups whatever the number of channels (the route, and the failed peers whose loss
// it counts). data is retained until sent: the caller must
// not modify it afterwards.
func (m *Mesh) Publish(channel string, data []byte) { m.PublishWithPosition(channel, data, nil) }

// PublishWithPosition is Publish for a publication of a recovery channel: position (an
// encoded meshpb.Position, opaque to the mesh) travels in the publication's own field, is
// retained and retransmitted with it, and reaches the receiving node's Deliver beside data.
// Like data, it must not be modified afterwards.
func (m *Mesh) PublishWithPosition(channel string, data, position []byte) {
	m.mu.RLock()
	ps := m.table.Route(channel)
	lost := m.failed.Route(channel)
	m.mu.RUnlock()
	for _, p := range lost {
		if routedTo(ps, p.tx) {
			// Back and routed again, though its failed record has not ended yet (the table
			// learned its interest before it counted as in sync): number it once, live.
			continue
		}
		p.retain(publication{channel, data, position}) // a failed peer wanted it: kept for its return
	}
	if len(ps) == 0 {
		return
	}
	if data == nil {
		data = []byte{}
	}
	if pubCost(publication{channel, data, position}) > m.frameBudget() {
		// A receiver would refuse the frame and drop the link: never send it.
		m.met.tooLarge.Inc()
		for _, p := range ps {
			p.drop(1)
		}
		m.tooLargeOnce.Do(func() {
			m.log.Warn("mesh: publication too large for the mesh frame limit, not sent to peers (logged once; counted in sockmesh_mesh_oversize_publications_total)",
				"channel", channel, "bytes", len(data), "max_frame", m.cfg.MaxFrame)
		})
		return
	}
	for _, p := range ps {
		p.enqueue(publication{channel, data, position})
	}
}

// routedTo reports whether one of ps sends on the link tx (the same incarnation as a failed
// record's peer, linked again).
func routedTo(ps []*peer, tx *txLink) bool {
	for _, q := range ps {
		if q.tx == tx {
			return true
		}
	}
	return false
}

// AddInterest records a local 0→1 transition of channel (calls are counted: n adds need n
// removes). It is announced to peers at once. It never blocks.
func (m *Mesh) AddInterest(channel string) {
	if !validChannel(channel) {
		m.log.Warn("mesh: invalid channel name ignored", "channel", channel)
		return
	}
	m.mu.Lock()
	if m.table.AddLocal(channel) {
		m.announce(time.Now())
	}
	m.mu.Unlock()
}

// RemoveInterest records a local 1→0 transition of channel. Peers are told after
// UnsubscribeDelay unless AddInterest comes first. It never blocks.
func (m *Mesh) RemoveInterest(channel string) {
	m.mu.Lock()
	m.table.RemoveLocal(channel, time.Now())
	m.mu.Unlock()
}

// Ready reports whether the node has joined (or started a new cluster) and has an up link, with
// its interest in sync, from every alive member.
func (m *Mesh) Ready() bool {
	if !m.joined.Load() || m.serf == nil {
		return false
	}
	members := m.members()
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closing {
		return false
	}
	for _, mi := range members {
		if mi.logical == m.cfg.Name || mi.status != serf.StatusAlive || mi.member.Mesh == "" {
			continue
		}
		p, ok := m.peers[mi.serfName]
		if !ok || p.linkState() != LinkUp || !m.table.PeerSynced(p) {
			return false
		}
	}
	return true
}

// Leave leaves the gossip cluster gracefully (peers see "left" rather than "failed"). It blocks
// for about a second (Serf's leave propagation) or until ctx ends.
func (m *Mesh) Leave(ctx context.Context) error {
	if m.serf == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- m.serf.Leave() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops everything: gossip, links, goroutines and sockets. The only goroutine left behind
// is zmq4's pubMWriter.run of the PUB socket (zmq4 v0.17.0 never stops it), so create one Mesh
// per process. Close is idempotent.
func (m *Mesh) Close() error {
	m.closeOnce.Do(func() {
		if m.serf != nil {
			if err := m.serf.Shutdown(); err != nil {
				m.closeErr = err
			}
		}
		m.mu.Lock()
		m.closing = true
		peers := make([]*peer, 0, len(m.peers))
		for name, p := range m.peers {
			m.table.RemovePeer(p)
			delete(m.peers, name)
			peers = append(peers, p)
		}
		m.mu.Unlock()
		for _, p := range peers {
			p.shutdown()
		}
		m.cancel()
		m.wg.Wait()
		m.mu.Lock()
		pub := m.pub
		m.pub = nil
		m.mu.Unlock()
		if pub != nil {
			closeSocket(pub)
		}
	})
	return m.closeErr
}
