package mesh

import (
	"bytes"
	"crypto/cipher"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/sockmesh/sockmesh/proto/meshpb"
)

// A peer is one live incarnation of another node. Its link (what we receive from it) is one SUB
// socket dialled to its PUB, owned by a supervisor goroutine that recreates the socket, with
// backoff, on any error or on heartbeat silence. That one path covers a dropped connection, a
// frozen or half-open peer, a failed handshake and a restart on the same port. zmq4's own
// reconnect is not used (it redials the wrong endpoint, gives up after 2.5 s, and stops for good
// after one failed handshake).

// Link states, as Status reports them.
const (
	LinkConnecting = "connecting" // dialling, or connected but nothing received yet
	LinkUp         = "up"         // messages (at least heartbeats) arriving
	LinkDown       = "down"       // failed; waiting to redial
)

var (
	errSilence      = errors.New("mesh: peer heartbeat silence")
	errWrongPeer    = errors.New("mesh: a different incarnation answers at the peer's endpoint")
	errPeerRejected = errors.New("mesh: the transport refused what the peer sent")
)

type peer struct {
	m        *Mesh
	serfName string // logical name + "-" + incarnation
	logical  string
	inc      string
	meshEP   string // host:port of its PUB socket
	mailboxB []byte // mailbox topic of this peer (where we send to it)
	member   Member

	// Send side: guarded by qmu. Publications are numbered (tx) as they leave the queue.
	qmu     sync.Mutex
	q       []publication
	qbytes  int
	qready  bool
	qclosed bool
	// parked: the flusher holds this peer back while its transport send queue drains.
	parked atomic.Bool

	// tx is our send link to this incarnation: epoch, sequence and retransmission window. It
	// outlives the peer object (failed routes number into it while the peer is away; the link
	// memo hands it to the next peer object of the same incarnation).
	tx *txLink
	// opener opens the envelopes this peer seals (closed mesh only; nil when open).
	opener cipher.AEAD
	// Receive side, guarded by rmu (the reader goroutine, and the control loop's ticks): the
	// sender's stream as we deliver it, in order, with its repairs (repair.go). Saved in the
	// mesh's memo when the peer is removed.
	rmu sync.Mutex
	rx  rxLink
	// fetchLim paces the peer's FetchRequests (fetch.go).
	fetchOnce sync.Once
	fetchLim  *rate.Limiter
	// rxBuf is the reader's reusable slice of a batch's publications.
	rxBuf []pubIn
	// lostLogged: a loss on this link was logged (once per link).
	lostLogged atomic.Bool
	// snap gathers a snapshot's parts (reader goroutine only).
	snap snapshotAssembly

	link    atomic.Value // string
	lastMsg atomic.Int64 // unix nanos of the last message on the link
	lastHB  atomic.Int64 // unix nanos of the last heartbeat

	rxWire, rxPayload             atomic.Uint64
	sent, received, gaps, dropped atomic.Uint64
	rejected                      atomic.Uint64 // envelopes dropped (see reject)
	reconnects                    atomic.Uint64
	rxReported                    uint64 // guarded by m.mu

	sentC, receivedC, gapsC, droppedC, rxBytesC, reconnectC prometheus.Counter
	repairedC, dupC, reqC, retxC                            prometheus.Counter
	hopC                                                    prometheus.Observer
	linkG                                                   prometheus.Gauge

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func (m *Mesh) newPeer(mi memberInfo) *peer {
	l := prometheus.Labels{"peer": mi.logical}
	memo := m.recallLink(mi.serfName)
	if memo.tx == nil {
		memo.tx = newTxLink(mi.serfName, mrand.Uint64()|1, m.cfg.RetainBytes, m.cfg.RetainAge)
	}
	p := &peer{
		m:          m,
		serfName:   mi.serfName,
		logical:    mi.logical,
		inc:        mi.inc,
		meshEP:     mi.member.Mesh,
		mailboxB:   []byte(mailboxTopic(mi.serfName)),
		member:     mi.member,
		tx:         memo.tx,
		rx:         memo.rx,
		sentC:      m.met.sent.With(l),
		receivedC:  m.met.received.With(l),
		gapsC:      m.met.gaps.With(l),
		droppedC:   m.met.dropped.With(l),
		hopC:       m.met.hop.With(l),
		rxBytesC:   m.met.rxBytes.With(l),
		reconnectC: m.met.reconnect.With(l),
		linkG:      m.met.linkUp.With(l),
		repairedC:  m.met.repaired.With(l),
		dupC:       m.met.duplicates.With(l),
		reqC:       m.met.repairReqs.With(l),
		retxC:      m.met.retransmitted.With(l),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	if m.cfg.ClusterKey != nil {
		var err error
		if p.opener, err = envelopeAEAD(m.cfg.ClusterKey, mi.serfName); err != nil {
			panic(fmt.Sprintf("mesh: envelope key: %v", err)) // cannot fail for a 32-byte key
		}
	}
	p.setLink(LinkConnecting)
	m.log.Debug("mesh: link state recalled", "peer", mi.logical, "rx_epoch", p.rx.epoch, "rx_expect", p.rx.expect, "rx_known", p.rx.known, "tx_seq", p.tx.state().seq)
	return p
}

// reject drops an envelope from p: counted per reason; logged once per peer as a warning
// (a misconfigured or hostile sender), then at debug level.
func (p *peer) reject(reason string, err error) {
	if p.rejected.Add(1) == 1 {
		p.m.log.Warn("mesh: envelope rejected (further rejections from this peer are logged at debug level)",
			"peer", p.logical, "incarnation", p.inc, "reason", reason, "err", err)
	} else {
		p.m.log.Debug("mesh: envelope rejected", "peer", p.logical, "reason", reason, "err", err)
	}
	p.m.met.rejected.WithLabelValues(p.logical, reason).Inc()
}

func (p *peer) setLink(s string) {
	p.link.Store(s)
	if s == LinkUp {
		p.linkG.Set(1)
	} else {
		p.linkG.Set(0)
	}
}

func (p *peer) linkState() string { return p.link.Load().(string) }

// hearing reports whether the peer's link is up with a heartbeat within HeartbeatTimeout.
func (p *peer) hearing(now time.Time) bool {
	return p.linkState() == LinkUp && now.Sub(time.Unix(0, p.lastHB.Load())) < p.m.cfg.HeartbeatTimeout
}

// shutdown stops the supervisor and frees the send queue; what the queue still held (only when
// the whole mesh closes: removePeer numbers it for repair first) is counted as dropped. Not
// called with m.mu held.
func (p *peer) shutdown() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
	p.qmu.Lock()
	p.qclosed = true
	n := len(p.q)
	p.q = nil
	p.qbytes = 0
	p.qmu.Unlock()
	if n > 0 {
		p.drop(n)
	}
}

// sendState is what a sender knows of its sequence to one receiver incarnation.
type sendState struct {
	epoch uint64
	seq   uint64 // last sequence numbered
}

// supervise owns the peer's SUB socket for the peer's whole life.
func (p *peer) supervise() {
	defer close(p.done)
	const minBackoff, maxBackoff = 50 * time.Millisecond, 2 * time.Second
	backoff := minBackoff
	for {
		start := time.Now()
		err := p.runLink()
		select {
		case <-p.stop:
			return
		default:
		}
		p.setLink(LinkDown)
		p.m.membershipChanged() // a peer kept against gossip (reconcile) is dropped now
		p.reconnects.Add(1)
		p.reconnectC.Inc()
		if time.Since(start) > 5*time.Second {
			backoff = minBackoff // it had been working: retry fast
		}
		p.m.log.Debug("mesh: link down", "peer", p.logical, "incarnation", p.inc, "err", err, "retry_in", backoff)
		wait := backoff/2 + mrand.N(backoff/2+1)
		t := time.NewTimer(wait)
		select {
		case <-p.stop:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// dialHook captures the connection our transport dials for one SUB socket.
type dialHook struct {
	mu   sync.Mutex
	conn *smConn
	// rejected is closed when the transport refuses what the peer sent, so the link is
	// recycled at once rather than at heartbeat silence (zmq4's Recv may not report it).
	rejected     chan struct{}
	rejectedOnce sync.Once
}

func (h *dialHook) reject() { h.rejectedOnce.Do(func() { close(h.rejected) }) }

func (h *dialHook) set(c *smConn) {
	h.mu.Lock()
	h.conn = c
	h.mu.Unlock()
}

func (h *dialHook) close() {
	h.mu.Lock()
	c := h.conn
	h.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// runLink creates a SUB socket, dials the peer and reads until an error, silence or stop.
func (p *peer) runLink() error {
	m := p.m
	p.setLink(LinkConnecting)
	hook := &dialHook{rejected: make(chan struct{})}
	opts := &connOpts{
		handshake:  m.cfg.HandshakeTimeout,
		maxMessage: uint64(m.cfg.MaxFrame),
		authKey:    m.authKey,
		rx:         &p.rxWire,
		onDial:     hook.set,
		hsTimeouts: &m.hsTimeouts,
		onReject: func(remote net.Addr, err error) {
			m.connRejected(remote, err)
			hook.reject()
		},
	}
	sub := zmq4.NewSub(withConnOpts(m.ctx, opts),
		// Our Serf name, in READY: the peer's transport names us if it has to cut us as slow.
		zmq4.WithID(zmq4.SocketIdentity(m.self)),
		zmq4.WithDialerMaxRetries(0),
		zmq4.WithDialerTimeout(m.cfg.HandshakeTimeout),
		zmq4.WithTimeout(m.cfg.HandshakeTimeout),
		zmq4.WithLogger(newStdLogger(m.log, "zmq4", -4)),
	)
	// SUB keeps its topic set and sends it on every new connection; set both before Dial.
	// SetOption is only ever called here, by the socket's owner, with string values.
	for _, topic := range []string{m.mailbox, controlTopic} {
		if err := setOption(sub, zmq4.OptionSubscribe, topic); err != nil {
			closeSocket(sub)
			return err
		}
	}
	if err := dial(sub, "smtcp://"+p.meshEP); err != nil {
		hook.close()
		closeSocket(sub)
		return err
	}
	p.lastMsg.Store(time.Now().UnixNano())
	// The link is back (or new): ask for whatever the origin numbered for us that we do not
	// have (a freeze, a partition, a cut connection), until it answers.
	p.rmu.Lock()
	p.rx.linkUp(time.Now().UnixNano(), rxOut{p})
	p.rmu.Unlock()
	// A new connection may have missed interest changes: ask for a snapshot now rather than at
	// the first heartbeat (retried at heartbeats until answered).
	m.mu.Lock()
	if m.table.LinkUp(p, time.Now()) {
		m.requestSnapshot(p)
	}
	m.mu.Unlock()

	readerDone := make(chan error, 1)
	go func() { readerDone <- p.read(sub, hook) }()

	// Order matters when stopping: close the TCP connection first, so that zmq4's per-connection
	// reader goroutine hands its error to Recv; wait for our reader to see it; only then close
	// the socket. Closing the socket first can leave zmq4's reader blocked forever on a full
	// internal channel that nobody drains.
	stopLink := func() {
		hook.close()
		select {
		case <-readerDone:
		case <-time.After(2 * time.Second):
			m.log.Warn("mesh: subscribe socket reader did not stop", "peer", p.logical)
		}
		closeSocket(sub)
	}
	tick := time.NewTicker(m.cfg.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			stopLink()
			return nil
		case err := <-readerDone:
			hook.close()
			closeSocket(sub)
			return err
		case <-hook.rejected:
			stopLink()
			return errPeerRejected
		case now := <-tick.C:
			if now.Sub(time.Unix(0, p.lastMsg.Load())) > m.cfg.HeartbeatTimeout {
				stopLink()
				return errSilence
			}
		}
	}
}

// read receives from the SUB socket until an error. If handling fails, it closes the connection
// and keeps draining until zmq4 reports the closed connection, so that zmq4's reader goroutine
// is never left blocked on its internal channel.
func (p *peer) read(sub zmq4.Socket, hook *dialHook) error {
	for {
		msg, err := recv(sub)
		if err != nil {
			return err
		}
		if herr := p.handle(msg); herr != nil {
			hook.close()
			for {
				if _, err := recv(sub); err != nil {
					return herr
				}
			}
		}
	}
}

func (p *peer) handle(msg zmq4.Msg) error {
	m := p.m
	if len(msg.Frames) != 2 {
		return nil // not ours
	}
	topic, payload := msg.Frames[0], msg.Frames[1]
	toMe := bytes.Equal(topic, m.mailboxB)
	if !toMe && string(topic) != controlTopic {
		return nil
	}
	if p.opener != nil {
		plain, counter, reason := openEnvelope(p.opener, topic, payload)
		if reason != "" {
			p.reject(reason, errOpen)
			return nil
		}
		// Only the reader goroutine touches the counter (outside rmu).
		if counter <= p.rx.counter {
			p.reject(rejectReplay, fmt.Errorf("mesh: counter %d not above %d", counter, p.rx.counter))
			return nil
		}
		p.rx.counter = counter
		payload = plain
	} else if len(payload) > 0 && payload[0] == sealVersion {
		p.reject(rejectSealed, errors.New("mesh: the peer seals envelopes (it has a cluster key, this node has none)"))
		return nil
	}
	var env meshpb.Envelope
	if err := proto.Unmarshal(payload, &env); err != nil {
		p.reject(rejectDecode, err)
		return nil
	}
	if env.Origin != p.serfName {
		p.reject(rejectOrigin, fmt.Errorf("%w: %q", errWrongPeer, env.Origin))
		return fmt.Errorf("%w: %q", errWrongPeer, env.Origin)
	}
	if toMe && env.Target != m.self {
		return nil
	}
	now := time.Now()
	p.lastMsg.Store(now.UnixNano())
	if p.linkState() != LinkUp {
		p.setLink(LinkUp) // the first message from the peer on this connection
	}
	switch body := env.Body.(type) {
	case *meshpb.Envelope_Batch:
		if toMe {
			p.receiveBatch(body.Batch)
		}
	case *meshpb.Envelope_Heartbeat:
		p.lastHB.Store(now.UnixNano())
		hb := body.Heartbeat
		m.mu.Lock()
		if m.table.PeerBeat(p, Beat{hb.InterestVersion, hb.InterestDigest, int(hb.InterestCount)}, now) {
			m.requestSnapshot(p)
		}
		m.mu.Unlock()
		for _, t := range hb.Tails { // senders of earlier versions (see meshpb.Heartbeat)
			if t.Target == m.self {
				p.rmu.Lock()
				p.rx.tail(t.Epoch, t.Last, now.UnixNano(), m.rxCfg, rxOut{p})
				p.rmu.Unlock()
				break
			}
		}
	case *meshpb.Envelope_Tail:
		if t := body.Tail; toMe && t.Target == m.self {
			p.rmu.Lock()
			p.rx.tail(t.Epoch, t.Last, now.UnixNano(), m.rxCfg, rxOut{p})
			p.rmu.Unlock()
		}
	case *meshpb.Envelope_RepairRequest:
		if toMe {
			m.repairRequested(p, body.RepairRequest, now)
		}
	case *meshpb.Envelope_RepairReply:
		if toMe {
			r := body.RepairReply
			p.rmu.Lock()
			p.rx.reply(repairReply{r.Epoch, r.LostFrom, r.LostTo, r.Last, r.CurrentEpoch}, now.UnixNano(), m.rxCfg, rxOut{p})
			p.rmu.Unlock()
		}
	case *meshpb.Envelope_FetchRequest:
		if toMe {
			m.fetchRequested(p, body.FetchRequest)
		}
	case *meshpb.Envelope_FetchReply:
		if toMe {
			m.fetchReplied(p, body.FetchReply)
		}
	case *meshpb.Envelope_Delta:
		d := body.Delta
		m.mu.Lock()
		if m.table.PeerDelta(p, Delta{d.Version, d.Added, d.Removed}, now) {
			m.requestSnapshot(p)
		}
		m.mu.Unlock()
	case *meshpb.Envelope_Snapshot:
		if toMe {
			done, err := p.snap.addPart(body.Snapshot, m.cfg.MaxPeerChannels)
			if err != nil {
				p.reject(rejectSnapshot, err)
			}
			if !done {
				break
			}
			s := p.snap
			p.snap = snapshotAssembly{}
			if Digest(s.channels) != s.digest {
				m.log.Warn("mesh: snapshot digest mismatch", "peer", p.logical)
			}
			m.mu.Lock()
			m.table.PeerSnapshot(p, Snapshot{s.version, s.digest, s.channels})
			if m.table.PeerSynced(p) && m.failed.Remove(p.logical) {
				// Back (or succeeded) and routed again: its publications are no longer lost.
				m.log.Info("mesh: failed peer back in sync; it gets what it missed from its retransmission window", "peer", p.logical, "incarnation", p.inc)
			}
			m.mu.Unlock()
		}
	case *meshpb.Envelope_SnapshotRequest:
		if toMe {
			m.mu.Lock()
			m.sendSnapshot(p)
			if m.table.PeerListening(p, now) {
				m.requestSnapshot(p)
			}
			m.mu.Unlock()
		}
	}
	return nil
}

// requestSnapshot asks p for its interest snapshot. m.mu held.
func (m *Mesh) requestSnapshot(p *peer) {
	_, v := m.table.PeerCount(p)
	m.sendControl(p.mailboxB, &meshpb.Envelope{Target: p.serfName, Body: &meshpb.Envelope_SnapshotRequest{
		SnapshotRequest: &meshpb.SnapshotRequest{KnownVersion: v}}})
}

func (p *peer) receiveBatch(b *meshpb.Batch) {
	now := time.Now().UnixNano()
	if b.SentUnixNano != 0 && !b.Retransmit {
		if d := now - int64(b.SentUnixNano); d >= 0 {
			p.hopC.Observe(float64(d) / 1e9)
		}
	}
	in := p.rxBuf[:0]
	for _, pub := range b.Publications {
		in = append(in, pubIn{pub.Channel, pub.Data, pub.Position})
	}
	p.rmu.Lock()
	p.rx.batch(b.Epoch, b.FirstSeq, in, b.Retransmit, now, p.m.rxCfg, rxOut{p})
	p.rmu.Unlock()
	clear(in)
	p.rxBuf = in[:0]
}

// rxOut is what a peer's rxLink does: deliver in order, ask the origin, count.
type rxOut struct{ p *peer }

func (o rxOut) deliver(pb pubIn) {
	p := o.p
	m := p.m
	p.received.Add(1)
	p.receivedC.Inc()
	p.rxPayload.Add(uint64(len(pb.data)))
	m.mu.RLock()
	want := m.table.WantsLocal(pb.channel)
	m.mu.RUnlock()
	if !want {
		m.met.unwanted.Inc()
		return
	}
	p.deliver(pb)
}

func (o rxOut) ask(epoch, from, to uint64) {
	p := o.p
	p.reqC.Inc()
	p.m.sendControl(p.mailboxB, &meshpb.Envelope{Target: p.serfName, Body: &meshpb.Envelope_RepairRequest{
		RepairRequest: &meshpb.RepairRequest{Epoch: epoch, From: from, To: to}}})
}

func (o rxOut) lost(n uint64, reason string) {
	p := o.p
	p.gaps.Add(n)
	p.gapsC.Add(float64(n))
	p.m.met.unrepaired.WithLabelValues(p.logical, reason).Add(float64(n))
	if p.lostLogged.CompareAndSwap(false, true) {
		p.m.log.Warn("mesh: publications from a peer lost (logged once per link; counted in sockmesh_mesh_gaps_total and sockmesh_mesh_unrepaired_messages_total)",
			"peer", p.logical, "incarnation", p.inc, "lost", n, "reason", reason)
	}
}

func (o rxOut) repaired(n uint64)  { o.p.repairedC.Add(float64(n)) }
func (o rxOut) duplicate(n uint64) { o.p.dupC.Add(float64(n)) }

// deliver hands one publication to the node; a panic in the node's handler is logged, not
// allowed to kill the link.
func (p *peer) deliver(pb pubIn) {
	defer func() {
		if r := recover(); r != nil {
			p.m.log.Error("mesh: Deliver panicked", "channel", pb.channel, "peer", p.logical, "panic", r)
		}
	}()
	p.m.cfg.Deliver(pb.channel, pb.data, pb.pos)
}

// Library guards. Each wraps one zmq4 call that can panic (reference 1.7) with recover(), and
// setOption refuses non-string values, which zmq4's SUB converts with an unchecked assertion.

func setOption(s zmq4.Socket, name string, value any) (err error) {
	if _, ok := value.(string); !ok {
		return fmt.Errorf("mesh: SetOption(%s) needs a string value, got %T", name, value)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mesh: zmq4 SetOption panicked: %v", r)
		}
	}()
	return s.SetOption(name, value)
}

func dial(s zmq4.Socket, ep string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mesh: zmq4 Dial panicked: %v", r)
		}
	}()
	return s.Dial(ep)
}

func recv(s zmq4.Socket) (msg zmq4.Msg, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mesh: zmq4 Recv panicked: %v", r)
		}
	}()
	return s.Recv()
}

func closeSocket(s zmq4.Socket) {
	defer func() { _ = recover() }()
	_ = s.Close()
}
