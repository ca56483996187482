package node

import (
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sockmesh/sockmesh/scproto"
	"github.com/sockmesh/sockmesh/wsfront"
)

// Subscriber receives encoded publication frames. wsfront.Socket implements it.
type Subscriber interface {
	// Deliver queues frame (shared by every subscriber: never modified) and must not block.
	Deliver(frame []byte) bool
}

// Interest is told when a channel gains its first local subscriber and loses its last.
// The mesh implements it to tell peers which channels to send here. Calls for one channel
// arrive in order (they are made under that channel's shard lock) and must not block.
type Interest interface {
	AddInterest(channel string)
	RemoveInterest(channel string)
}

// Forwarder sends a locally published message to the rest of the cluster; must not block.
// PublishWithPosition sends one of a recovery channel with its position (encodePosition).
type Forwarder interface {
	Publish(channel string, data []byte)
	PublishWithPosition(channel string, data, position []byte)
}

type nopMesh struct{}

func (nopMesh) AddInterest(string)                         {}
func (nopMesh) RemoveInterest(string)                      {}
func (nopMesh) Publish(string, []byte)                     {}
func (nopMesh) PublishWithPosition(string, []byte, []byte) {}

// Broker holds the node's local subscriptions, sharded by a stable hash of the channel
// name so that subscription churn on one channel contends only with its shard.
type Broker struct {
	shards []shard
	hooks  atomic.Pointer[meshHooks]
	m      brokerMetrics
	rec    *recovery // nil: no recovery channels (recovery.go)
}

// SetRecovery makes the channels cfg selects recoverable (docs/recovery.md); origin names
// this process in positions (the mesh's Serf name). Call before the broker is used.
func (b *Broker) SetRecovery(cfg RecoverConfig, origin string) {
	if !cfg.enabled() {
		b.rec = nil
		return
	}
	b.rec = newRecovery(cfg)
	b.rec.origin = origin
	b.rec.subscribed = func(ch string) bool { return b.Subscribers(ch) > 0 }
	b.rec.release = func(ch string) { b.hooks.Load().interest.RemoveInterest(ch) }
}

type meshHooks struct {
	interest Interest
	forward  Forwarder
}

type shard struct {
	mu sync.RWMutex
	// chans maps a channel to its subscribers.
	chans map[string]*subscribers
	// pubs counts publications with subscribers; every latencySample-th is timed.
	pubs atomic.Uint32
}

// subscribers is one channel's subscriber set: O(1) to join and to leave whatever its size
// (a slice with swap-removal, and an index once it is large), and a snapshot for publishers,
// who iterate without holding any lock. The snapshot is a copy made by the first publication
// after a change, so a burst of 100,000 joins costs 100,000 appends, not 100,000 copies of a
// growing slice (which took 103 s); a publication after each change copies once per change.
type subscribers struct {
	list  []Subscriber
	index map[Subscriber]int // position in list; only above indexFrom members
	snap  atomic.Pointer[[]Subscriber]
}

// indexFrom: below this many members a linear scan is cheaper than a map.
const indexFrom = 16

func (cs *subscribers) find(sub Subscriber) int {
	if cs.index != nil {
		if i, ok := cs.index[sub]; ok {
			return i
		}
		return -1
	}
	return slices.Index(cs.list, sub)
}

// add appends sub, which is not a member. Shard lock held.
func (cs *subscribers) add(sub Subscriber) {
	cs.list = append(cs.list, sub)
	if cs.index != nil {
		cs.index[sub] = len(cs.list) - 1
	} else if len(cs.list) > indexFrom {
		cs.index = make(map[Subscriber]int, len(cs.list))
		for i, s := range cs.list {
			cs.index[s] = i
		}
	}
	cs.snap.Store(nil)
}

// remove takes out the member at i by moving the last member there. Shard lock held.
func (cs *subscribers) remove(i int) {
	last := len(cs.list) - 1
	if cs.index != nil {
		delete(cs.index, cs.list[i])
		if i != last {
			cs.index[cs.list[last]] = i
		}
	}
	cs.list[i] = cs.list[last]
	cs.list[last] = nil
	cs.list = cs.list[:last]
	cs.snap.Store(nil)
}

// latencySample: one publication in this many (per shard) has its publish-to-write latency
// measured, so that the hot path pays for time.Now only rarely.
const latencySample = 64

// sampledSubscriber is a Subscriber that can time a sampled frame until it is written
// (wsfront.Socket).
type sampledSubscriber interface {
	DeliverSampled(frame []byte, since time.Time, obs prometheus.Observer) bool
}

type brokerMetrics struct {
	channels      prometheus.Gauge
	subscriptions prometheus.Gauge
	published     *prometheus.CounterVec
	deliveries    *prometheus.CounterVec
	dropped       prometheus.Counter
	recoveries    *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	latLocal      prometheus.Observer
	latMesh       prometheus.Observer
	// by origin, resolved once so the hot path does no label lookup
	pubLocal, pubMesh, delLocal, delMesh prometheus.Counter
}

// NewBroker returns a broker with n shards (minimum 1) reporting interest transitions to
// interest and forwarding local publications through forward (both may be nil).
func NewBroker(n int, interest Interest, forward Forwarder, reg prometheus.Registerer) *Broker {
	if n < 1 {
		n = 1
	}
	b := &Broker{shards: make([]shard, n)}
	b.SetMesh(interest, forward)
	for i := range b.shards {
		b.shards[i].chans = map[string]*subscribers{}
	}
	b.m = brokerMetrics{
		channels:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "sockmesh_channels", Help: "Channels with at least one local subscriber."}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sockmesh_subscriptions", Help: "Local subscriptions (socket, channel pairs)."}),
		published:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sockmesh_publications_total", Help: "Publications handled by this node, by origin (local client or server, or mesh peer)."}, []string{"origin"}),
		deliveries:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sockmesh_deliveries_total", Help: "Publication frames queued to local subscribers, by origin."}, []string{"origin"}),
		dropped:       prometheus.NewCounter(prometheus.CounterOpts{Name: "sockmesh_delivery_drops_total", Help: "Deliveries refused by a closing or overflowing subscriber."}),
		recoveries:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sockmesh_recoveries_total", Help: "Recovering subscriptions answered (docs/recovery.md), by outcome (complete, incomplete) and source (local: from this node's ring alone; peer: a peer that receives the channel was asked; shared: the answer of a peer asked for another recovery from the same position)."}, []string{"outcome", "source"}),
	}
	b.m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sockmesh_publish_to_write_seconds",
		Help:    "Time from a publication entering this node (a local publish, or its receipt from a mesh peer) until its frame is written to a subscriber's connection (the last subscriber in fan-out order), by origin; one publication in 64 per shard is sampled.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2.5, 12), // 50µs … 1.2s
	}, []string{"origin"})
	b.m.latLocal, b.m.latMesh = b.m.latency.WithLabelValues("local"), b.m.latency.WithLabelValues("mesh")
	b.m.pubLocal, b.m.pubMesh = b.m.published.WithLabelValues("local"), b.m.published.WithLabelValues("mesh")
	b.m.delLocal, b.m.delMesh = b.m.deliveries.WithLabelValues("local"), b.m.deliveries.WithLabelValues("mesh")
	rings := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sockmesh_recovery_channels", Help: "Recovery channels whose recent publications this node keeps (docs/recovery.md)."}, func() float64 {
		if b.rec == nil {
			return 0
		}
		b.rec.mu.Lock()
		defer b.rec.mu.Unlock()
		return float64(len(b.rec.rings))
	})
	refused := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sockmesh_recovery_refused_channels_total", Help: "Recovery channels served without positions because this node already kept --recover-max-channels."}, func() float64 {
		if b.rec == nil {
			return 0
		}
		return float64(b.rec.refused.Load())
	})
	shared := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sockmesh_recovery_shared_bytes", Help: "Bytes of peers' complete recovery answers kept for later recoveries from the same position (at most --recover-share-bytes)."}, func() float64 {
		if b.rec == nil {
			return 0
		}
		fs := b.rec.shares
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return float64(fs.bytes)
	})
	if reg != nil {
		reg.MustRegister(b.m.channels, b.m.subscriptions, b.m.published, b.m.deliveries, b.m.dropped, b.m.recoveries, b.m.latency, rings, refused, shared)
	}
	return b
}

// SetMesh connects the broker to the mesh after construction (the mesh needs the broker's
// delivery function, the broker needs the mesh).
func (b *Broker) SetMesh(interest Interest, forward Forwarder) {
	if interest == nil {
		interest = nopMesh{}
	}
	if forward == nil {
		forward = nopMesh{}
	}
	b.hooks.Store(&meshHooks{interest, forward})
}

// shardOf is FNV-1a: stable across processes and free of allocation.
func (b *Broker) shardOf(ch string) *shard {
	h := uint32(2166136261)
	for i := 0; i < len(ch); i++ {
		h ^= uint32(ch[i])
		h *= 16777619
	}
	return &b.shards[h%uint32(len(b.shards))]
}

// SubscribeSub adds sub to channel; a second subscribe of the same sub is a no-op.
func (b *Broker) SubscribeSub(sub Subscriber, ch string) {
	if b.subscribe(sub, ch) {
		if rg := b.rec.lockRing(ch); rg != nil {
			if !rg.holding {
				// Publications from other nodes reach this one again only from now on.
				rg.began(time.Now().UnixNano(), b.rec.settle())
			}
			rg.mu.Unlock()
		}
	}
}

// subscribe adds sub to ch; true when ch gained its first local subscriber.
func (b *Broker) subscribe(sub Subscriber, ch string) bool {
	sh := b.shardOf(ch)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cs := sh.chans[ch]
	if cs == nil {
		cs = &subscribers{}
		sh.chans[ch] = cs
	} else if cs.find(sub) >= 0 {
		return false
	}
	cs.add(sub)
	b.m.subscriptions.Inc()
	if len(cs.list) == 1 {
		b.m.channels.Inc()
		b.hooks.Load().interest.AddInterest(ch)
		return true
	}
	return false
}

// UnsubscribeSub removes sub from channel.
func (b *Broker) UnsubscribeSub(sub Subscriber, ch string) {
	sh := b.shardOf(ch)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cs := sh.chans[ch]
	if cs == nil {
		return
	}
	i := cs.find(sub)
	if i < 0 {
		return
	}
	b.m.subscriptions.Dec()
	if len(cs.list) == 1 {
		delete(sh.chans, ch)
		b.m.channels.Dec()
		b.hooks.Load().interest.RemoveInterest(ch)
		return
	}
	cs.remove(i)
}

// subscribersOf returns ch's subscribers as a snapshot the caller may iterate without a lock
// (never modified afterwards).
func (sh *shard) subscribersOf(ch string) []Subscriber {
	sh.mu.RLock()
	cs := sh.chans[ch]
	if cs == nil {
		sh.mu.RUnlock()
		return nil
	}
	if p := cs.snap.Load(); p != nil {
		sh.mu.RUnlock()
		return *p
	}
	sh.mu.RUnlock()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if cs = sh.chans[ch]; cs == nil {
		return nil
	}
	if p := cs.snap.Load(); p != nil {
		return *p
	}
	snap := slices.Clone(cs.list)
	cs.snap.Store(&snap)
	return snap
}

// Subscribe implements wsfront.Broker.
func (b *Broker) Subscribe(s *wsfront.Socket, ch string) { b.SubscribeSub(s, ch) }

// Unsubscribe implements wsfront.Broker.
func (b *Broker) Unsubscribe(s *wsfront.Socket, ch string) { b.UnsubscribeSub(s, ch) }

// Publish implements wsfront.Broker: deliver to local subscribers and forward to the peers
// that want the channel.
func (b *Broker) Publish(ch string, data json.RawMessage) { b.PublishIn(nil, ch, data) }

// PublishIn implements wsfront.FanoutBroker: Publish, with local sockets' frames left in
// fo (when not nil) for its reader to write.
func (b *Broker) PublishIn(fo *wsfront.Fanout, ch string, data json.RawMessage) {
	b.m.pubLocal.Inc()
	if rg := b.rec.lockRing(ch); rg != nil {
		// Numbered, kept, delivered and forwarded under the ring's lock (see ring). A frame is
		// in each socket's queue when deliverFrame returns (fo only defers the writes), so it
		// stays in order with replays, which are queued under the same lock.
		rg.next++
		at := time.Now().UnixNano()
		if !rg.holding {
			// An origin of the channel receives it too (from the other origins), so that its
			// ring is a complete history its subscribers' clients can recover from even when
			// nobody here subscribes (the common case: publishers here, subscribers elsewhere).
			if b.Subscribers(ch) == 0 {
				rg.began(at, b.rec.settle())
			}
			rg.holding = true
			b.hooks.Load().interest.AddInterest(ch)
		}
		e := newRetained(ch, data, rg.origin, rg.next, at)
		rg.keep(e)
		b.deliverFrame(fo, ch, e.frame, b.m.delLocal, b.m.latLocal)
		b.hooks.Load().forward.PublishWithPosition(ch, data, encodePosition(rg.origin, rg.next, at))
		rg.mu.Unlock()
		return
	}
	b.deliver(fo, ch, data, b.m.delLocal, b.m.latLocal)
	b.hooks.Load().forward.Publish(ch, data)
}

// DeliverRemote hands a publication received from a peer to local subscribers only: the
// mesh is one hop, a received publication is never forwarded again. position is the
// publication's (mesh.Config.Deliver), empty on most channels.
func (b *Broker) DeliverRemote(ch string, data, position []byte) {
	b.m.pubMesh.Inc()
	origin, seq, at, d, ok := "", uint64(0), int64(0), data, false
	if len(position) > 0 {
		origin, seq, at, ok = decodePosition(position)
	} else {
		origin, seq, at, d, ok = splitPosition(data) // a node of the previous version
	}
	if ok {
		rg := b.rec.lockRing(ch)
		if rg == nil { // not a recovery channel here (configured on the origin only), or past the bound
			b.deliver(nil, ch, d, b.m.delMesh, b.m.latMesh)
			return
		}
		e := newRetained(ch, d, origin, seq, at)
		rg.keep(e)
		b.deliverFrame(nil, ch, e.frame, b.m.delMesh, b.m.latMesh)
		rg.mu.Unlock()
		return
	}
	b.deliver(nil, ch, data, b.m.delMesh, b.m.latMesh)
}

// SubscribeRecover implements wsfront.RecoveringBroker: on a recovery channel, a subscribe
// with data {"recover": position} registers s and queues what it missed, under the channel's
// ring lock (so nothing is both replayed and delivered, and nothing falls between). When this
// node cannot replay all of it but a peer that receives the channel might, or when the replay
// must wait for the node's replay rate, the subscription is acknowledged at once, that happens
// next (recoverLater), and answer is called when the replay is queued.
func (b *Broker) SubscribeRecover(s *wsfront.Socket, ch string, data json.RawMessage, ack, answer func(any)) bool {
	if b.rec == nil || !b.rec.cfg.matches(ch) {
		return false
	}
	var req struct {
		Recover *Position `json:"recover"`
	}
	if len(data) == 0 || json.Unmarshal(data, &req) != nil || req.Recover == nil {
		return false
	}
	pos := *req.Recover
	rg := b.rec.lockRing(ch)
	if rg == nil {
		return false // past --recover-max-channels: an ordinary subscription
	}
	now := time.Now().UnixNano()
	if !b.receiving(ch, rg) {
		// This node has not been receiving the channel (or stopped for a while): what it kept
		// before proves nothing about what came since. It receives it again from now (s or a
		// placeholder joins below).
		rg.began(now, b.rec.settle())
	}
	bp := getReplayBuf()
	entries, ans, fixable := rg.replay(*bp, pos, now, b.rec.cfg.ClockSkew, false)
	var peers []string
	if f := b.rec.fetcher.Load(); fixable && f != nil {
		peers = (*f).Wanting(ch)
	}
	// Replays share a node-wide rate (--recover-replay-rate, scaled by the node's governor),
	// so that a storm of recovering clients does not crowd out the live traffic: past it, the
	// replay waits its turn.
	turn := len(peers) == 0 && (b.rec.replays == nil || len(entries) == 0 || b.rec.replays.TryTake(len(entries)))
	if turn {
		b.subscribe(s, ch)
		ans = queueReplay(s, ch, nil, entries, ans)
		rg.mu.Unlock()
		putReplayBuf(bp, entries)
		b.m.recoveries.WithLabelValues(outcome(ans.Recovered), "local").Inc()
		ack(ans)
		answer(ans)
		return true
	}
	// A placeholder subscriber keeps this node receiving the channel while the replay waits or
	// a peer is asked, so that the ring keeps what arrives meanwhile; s joins once all of it is
	// queued.
	hold := &holdSub{}
	b.subscribe(hold, ch)
	since := rg.since
	rg.mu.Unlock()
	replay := len(entries) // listed again when its turn comes
	putReplayBuf(bp, entries)
	// Acknowledged now (a client waits for that only so long: socketcluster-client's
	// ackTimeout is 10 s); the answer follows the replay. Nothing reaches s before it.
	ack(nil)
	go b.recoverLater(s, ch, rg, pos, peers, hold, since, replay, answer)
	return true
}

// receiving reports whether this node receives ch from the mesh: it has a local subscriber,
// or holds the channel as one of its origins; ring lock held.
func (b *Broker) receiving(ch string, rg *ring) bool {
	return rg.holding || b.Subscribers(ch) > 0
}

func outcome(complete bool) string {
	if complete {
		return "complete"
	}
	return "incomplete"
}

// queueReplay queues for s the fetched publications, then the kept ones, and sets the
// answer's count; ring lock held.
func queueReplay(s *wsfront.Socket, ch string, fetched []fetchedPub, kept []retained, ans RecoverAnswer) RecoverAnswer {
	ans.Channel = ch
	ans.Missed = 0
	full := func() RecoverAnswer {
		// The socket's send queue is full (or it closed): the rest would be lost.
		ans.Recovered = false
		ans.Reason = "the replay did not fit the connection's send queue"
		return ans
	}
	s.ExpectFrames(len(fetched) + len(kept))
	for _, p := range fetched {
		if !s.Deliver(p.frame) { // encoded once by fetchPeers
			return full()
		}
		ans.Missed++
	}
	for i := range kept {
		if !s.Deliver(kept[i].frame) {
			return full()
		}
		ans.Missed++
	}
	return ans
}

func (b *Broker) deliver(fo *wsfront.Fanout, ch string, data []byte, delivered prometheus.Counter, latency prometheus.Observer) {
	b.deliverFrame(fo, ch, scproto.EncodePublish(ch, data), delivered, latency)
}

func (b *Broker) deliverFrame(fo *wsfront.Fanout, ch string, frame []byte, delivered prometheus.Counter, latency prometheus.Observer) {
	sh := b.shardOf(ch)
	subs := sh.subscribersOf(ch)
	if len(subs) == 0 {
		return
	}
	var since time.Time
	sampled := sh.pubs.Add(1)%latencySample == 0
	if sampled {
		since = time.Now()
	}
	n := 0
	last := len(subs) - 1
	if len(subs) >= wsfront.SpreadMin {
		// Written in turn by one goroutine that lets other work run (wsfront.NewSpread),
		// not by a reader's fanout or thousands of writers woken at once.
		fo = wsfront.NewSpread()
		defer fo.Start()
	}
	for i, s := range subs {
		var obs prometheus.Observer
		if sampled && i == last {
			obs = latency
		}
		var ok bool
		if ws, isSocket := s.(*wsfront.Socket); isSocket {
			ok = ws.DeliverIn(fo, frame, since, obs)
		} else if ss, can := s.(sampledSubscriber); can && obs != nil {
			ok = ss.DeliverSampled(frame, since, obs)
		} else {
			ok = s.Deliver(frame)
		}
		if ok {
			n++
		}
	}
	delivered.Add(float64(n))
	if n < len(subs) {
		b.m.dropped.Add(float64(len(subs) - n))
	}
}

// Subscribers returns how many local subscribers channel has.
func (b *Broker) Subscribers(ch string) int {
	sh := b.shardOf(ch)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if cs := sh.chans[ch]; cs != nil {
		return len(cs.list)
	}
	return 0
}

// Channels returns every channel with a local subscriber and its subscriber count.
func (b *Broker) Channels() map[string]int {
	out := map[string]int{}
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.RLock()
		for ch, cs := range sh.chans {
			out[ch] = len(cs.list)
		}
		sh.mu.RUnlock()
	}
	return out
}
