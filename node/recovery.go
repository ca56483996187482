package node

import (
	"bytes"
	"encoding/json"
	"maps"
	"math"
	"path"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sockmesh/sockmesh/pace"
	"github.com/sockmesh/sockmesh/scproto"
	"google.golang.org/protobuf/encoding/protowire"
)

// Recovery across reconnects (docs/recovery.md): on the channels that opt in, every node that
// serves the channel keeps its recent publications with their positions (origin, origin's
// sequence on the channel), and a client that subscribes with data {"recover": position} gets
// what it missed before anything new.

// RecoverConfig selects the recovery channels and bounds what each keeps.
type RecoverConfig struct {
	// Channels are path.Match patterns ("chat.*", "prices.eur") of channels kept within
	// Messages and Age; Rules come first and give their channels bounds of their own. Both
	// empty: no recovery.
	Channels []string
	Rules    []RecoverRule
	// Messages and Age bound each channel's retained publications; zero: 1,000 and 5 min.
	Messages int
	Age      time.Duration
	// FetchTimeout bounds asking peers for what this node did not receive; zero: 2 s.
	FetchTimeout time.Duration
	// Fetches bounds the recoveries asking peers at once (others wait); zero: 16.
	Fetches int
	// MaxChannels bounds the channels a node keeps publications of; past it a new channel
	// is served without positions here (and counted). Zero: 100,000.
	MaxChannels int
	// ReplayRate bounds the publications replayed per second by the node, over all its
	// recovering clients (a burst of 10 ms' worth); past it replays wait their turn.
	// Zero: 20,000; negative: unpaced.
	ReplayRate int
	// ClockSkew is how far behind another host's clock may be, when publications of an origin
	// a position does not name are judged by the time of the position (see ring.replay).
	// Zero: 500 ms; negative: none.
	ClockSkew time.Duration
	// ShareBytes bounds the peers' complete answers kept so that later recoveries from the
	// same position share them (recovery_share.go), each for Age at most. Zero: 32 MiB;
	// negative: none kept (recoveries share only fetches under way).
	ShareBytes int
}

// RecoverRule makes the channels Pattern matches recoverable with bounds of their own.
type RecoverRule struct {
	Pattern  string
	Messages int           // zero: RecoverConfig.Messages
	Age      time.Duration // zero: RecoverConfig.Age
}

func (c RecoverConfig) matches(ch string) bool {
	_, _, ok := c.bounds(ch)
	return ok
}

// bounds returns the retention bounds of ch: the first rule that matches it, else the
// defaults for a pattern of Channels; ok false when ch does not recover.
func (c RecoverConfig) bounds(ch string) (messages int, age time.Duration, ok bool) {
	for _, r := range c.Rules {
		if m, _ := path.Match(r.Pattern, ch); m {
			messages, age = r.Messages, r.Age
			if messages <= 0 {
				messages = c.Messages
			}
			if age <= 0 {
				age = c.Age
			}
			return messages, age, true
		}
	}
	for _, p := range c.Channels {
		if m, _ := path.Match(p, ch); m {
			return c.Messages, c.Age, true
		}
	}
	return 0, 0, false
}

// longestAge is the longest retention age of any channel.
func (c RecoverConfig) longestAge() time.Duration {
	age := c.Age
	for _, r := range c.Rules {
		age = max(age, r.Age)
	}
	return age
}

// enabled reports whether any channel recovers.
func (c RecoverConfig) enabled() bool { return len(c.Channels) > 0 || len(c.Rules) > 0 }

// encodePosition is a publication's position as it travels the mesh: a meshpb.Position in
// the mesh Publication's position field (mesh.PublishWithPosition), encoded by hand, as the
// mesh encodes its batches (wire-compatible: TestPositionEncodingMatchesProto).
func encodePosition(origin string, seq uint64, at int64) []byte {
	b := make([]byte, 0, len(origin)+protowire.SizeVarint(uint64(len(origin)))+protowire.SizeVarint(seq)+12)
	// proto3 leaves zero values out (only a time of exactly 0 is ever one here).
	if origin != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, origin)
	}
	if seq != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, seq)
	}
	if at != 0 {
		b = protowire.AppendTag(b, 3, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, uint64(at))
	}
	return b
}

// decodePosition reads a position a peer sent (encodePosition's, or a later version's with
// fields this one skips). ok is false for anything that is not a whole position with an
// origin and a sequence: the publication is then delivered without one.
func decodePosition(b []byte) (origin string, seq uint64, at int64, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", 0, 0, false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || len(v) > maxOriginLen { // as in a fetch reply
				return "", 0, 0, false
			}
			origin, b = string(v), b[n:]
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return "", 0, 0, false
			}
			seq, b = v, b[n:]
		case num == 3 && typ == protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return "", 0, 0, false
			}
			at, b = int64(v), b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return "", 0, 0, false
			}
			b = b[n:]
		}
	}
	return origin, seq, at, origin != "" && seq != 0 && utf8.ValidString(origin)
}

// posPrefix marks a publication from a node of the version before the position field: its
// position travelled as a prefix on the data (a byte no JSON value starts with, then origin
// NUL sequence NUL time NUL, then the data). Still read, so that such a node's publications
// keep their positions during a rolling upgrade; never written.
const posPrefix = 0x00

// splitPosition reads a posPrefix publication; ok is false for data without a position.
func splitPosition(b []byte) (origin string, seq uint64, at int64, data []byte, ok bool) {
	if len(b) == 0 || b[0] != posPrefix {
		return "", 0, 0, b, false
	}
	f := bytes.SplitN(b[1:], []byte{0}, 4)
	if len(f) != 4 || len(f[0]) == 0 {
		return "", 0, 0, b, false
	}
	seq, err1 := strconv.ParseUint(string(f[1]), 10, 64)
	at, err2 := strconv.ParseInt(string(f[2]), 10, 64)
	if err1 != nil || err2 != nil || seq == 0 {
		return "", 0, 0, b, false
	}
	return string(f[0]), seq, at, f[3], true
}

// retained is one kept publication: its position, arrival time and encoded #publish frame.
type retained struct {
	origin string
	seq    uint64
	at     int64
	frame  []byte
	// frame[dataOff:dataOff+dataLen] is the publication's data (what a peer is sent).
	dataOff, dataLen int32
	idx              uint64 // the ring's append count when it was kept
}

// data is the publication's data, inside its frame.
func (e *retained) data() []byte { return e.frame[e.dataOff : e.dataOff+e.dataLen] }

// newRetained encodes a publication's frame and keeps it with its position.
func newRetained(ch string, data []byte, origin string, seq uint64, at int64) retained {
	frame, off := encodeRetained(ch, data, origin, seq, at)
	return retained{origin: origin, seq: seq, at: at, frame: frame, dataOff: int32(off), dataLen: int32(len(data))}
}

// ring is one recovery channel's kept publications, in arrival order. Its lock orders a
// publication's numbering, keeping and fan-out against a recovering subscriber's
// registration and replay, so that nothing is both replayed and delivered, and nothing falls
// between.
type ring struct {
	mu      sync.Mutex
	next    uint64 // this node's last sequence as the channel's origin
	entries []retained
	head    int // index of the oldest entry (entries is a circular buffer once full)
	n       int
	since   int64 // when this node last began receiving the channel (unix ns)
	settled int64 // since, plus the time its interest takes to reach the other origins
	// appended counts the entries ever kept; start is its value when the node last began
	// receiving the channel: an entry kept since then proves the node was receiving it.
	appended, start uint64
	// evicted[o] is the highest sequence of origin o dropped by the bounds; lastOut the
	// newest time (at) of a dropped entry.
	evicted map[string]uint64
	lastOut int64
	// origin names this node in the positions of its publications on the channel; holding:
	// this node, an origin of the channel, holds an interest in it (receives it); dead: the
	// ring was reclaimed (lockRing looks again).
	origin  string
	holding bool
	dead    bool
	// limit and age are the channel's retention bounds (RecoverConfig.bounds), applied by keep
	// and replay.
	limit int
	age   time.Duration
}

type recovery struct {
	cfg    RecoverConfig
	origin string // this process (the mesh's Serf name, set at Start)
	mu     sync.RWMutex
	rings  map[string]*ring
	// fetcher asks peers (recovery_fetch.go); fetching bounds the recoveries doing so at once.
	fetcher  atomic.Pointer[Fetcher]
	fetching chan struct{}
	shares   *fetchShares
	// subscribed reports whether a channel has a local subscriber (the broker's; nil in
	// tests of the ring alone). Rings are swept when their count reaches sweepAt; reclaimed
	// counts the rings reclaimed, refused the rings not made past MaxChannels.
	subscribed func(ch string) bool
	release    func(ch string) // withdraws the interest a ring held as an origin
	sweepAt    int
	lastSweep  int64
	reclaimed  uint64
	refused    atomic.Uint64
	// replays paces replays node-wide (nil: unpaced), in publications.
	replays *pace.Gate
	// alone reports whether this node has no peers (nil: it may have some).
	alone func() bool
}

// settle is how long this node's interest in a channel takes to reach the channel's other
// origins: interestSettle, or nothing without peers.
func (r *recovery) settle() time.Duration {
	if a := r.alone; a != nil && a() {
		return 0
	}
	return interestSettle
}

// lockRingIfAny returns the channel's ring locked, or nil; it never creates one (a peer's
// request must not make this node keep channels).
func (r *recovery) lockRingIfAny(ch string) *ring {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	rg := r.rings[ch]
	r.mu.Unlock()
	if rg == nil {
		return nil
	}
	rg.mu.Lock()
	if rg.dead {
		rg.mu.Unlock()
		return nil
	}
	return rg
}

// withDefaults fills the zero values with the documented defaults (node.Defaults and the
// broker both use it).
func (c RecoverConfig) withDefaults() RecoverConfig {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Messages, 1000)
	def(&c.Fetches, 16)
	def(&c.MaxChannels, 100_000)
	if c.ReplayRate == 0 { // negative: unpaced
		c.ReplayRate = 20_000
	}
	if c.Age <= 0 {
		c.Age = 5 * time.Minute
	}
	if c.FetchTimeout <= 0 {
		c.FetchTimeout = 2 * time.Second
	}
	if c.ShareBytes == 0 {
		c.ShareBytes = 32 << 20
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = 500 * time.Millisecond
	}
	return c
}

func newRecovery(cfg RecoverConfig) *recovery {
	cfg = cfg.withDefaults()
	r := &recovery{cfg: cfg, rings: map[string]*ring{}, fetching: make(chan struct{}, cfg.Fetches), sweepAt: minSweep, lastSweep: time.Now().UnixNano(),
		shares: newFetchShares(max(cfg.ShareBytes, 0), cfg.longestAge())}
	if cfg.ReplayRate > 0 {
		// 10 ms' worth at once: the node's other clients see the replays spread evenly.
		r.replays = pace.NewGate(float64(cfg.ReplayRate))
	}
	return r
}

// lockRing returns the channel's ring, created if need be, locked; nil when the channel does
// not recover, or when it would be a ring past MaxChannels (then counted, and the channel is
// served without positions on this node).
func (r *recovery) lockRing(ch string) *ring {
	if r == nil || !r.cfg.matches(ch) {
		return nil
	}
	for {
		rg := r.ringOf(ch)
		if rg == nil {
			return nil
		}
		rg.mu.Lock()
		if !rg.dead {
			return rg
		}
		rg.mu.Unlock() // reclaimed between the lookup and the lock: look again
	}
}

// ringOf returns the channel's ring, creating it (nil past MaxChannels). Rings of channels
// that nobody here subscribes to and that kept nothing for Age are reclaimed when a ring is
// made after the number of rings doubled since the last sweep, or Age after it (the sweeps
// cost O(1) per ring made, and an origin's interest is withdrawn within 2 × Age of its last
// publication once channels come and go).
func (r *recovery) ringOf(ch string) *ring {
	r.mu.RLock() // every publication comes here: readers share the lock
	rg := r.rings[ch]
	r.mu.RUnlock()
	if rg != nil {
		return rg
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if rg = r.rings[ch]; rg != nil {
		return rg
	}
	if now := time.Now().UnixNano(); len(r.rings) >= r.sweepAt || now-r.lastSweep > int64(r.cfg.Age) {
		r.sweep(now)
		r.sweepAt, r.lastSweep = max(minSweep, 2*len(r.rings)), now
	}
	if len(r.rings) >= r.cfg.MaxChannels {
		r.refused.Add(1)
		return nil
	}
	// A ring made again after a reclamation numbers this node's publications under a new
	// origin name, so that no client mistakes the new sequence for the old one's.
	origin := r.origin
	if r.reclaimed > 0 {
		origin += "~" + strconv.FormatUint(r.reclaimed, 36)
	}
	limit, age, _ := r.cfg.bounds(ch)
	rg = &ring{evicted: map[string]uint64{}, origin: origin, limit: limit, age: age}
	rg.began(time.Now().UnixNano(), interestSettle)
	r.rings[ch] = rg
	return rg
}

// minSweep: below this many rings no sweep runs.
const minSweep = 1024

// sweep reclaims the rings that serve nobody: no local subscriber (so this node does not
// vouch for them, docs/recovery.md) and nothing kept younger than Age; r.mu held.
func (r *recovery) sweep(now int64) {
	for ch, rg := range r.rings {
		rg.mu.Lock()
		rg.expire(now, rg.age)
		if rg.n == 0 && (r.subscribed == nil || !r.subscribed(ch)) {
			if rg.holding && r.release != nil {
				r.release(ch)
			}
			rg.dead = true
			delete(r.rings, ch)
			r.reclaimed++
		}
		rg.mu.Unlock()
	}
}

// keep appends a publication; ring lock held.
func (rg *ring) keep(e retained) {
	rg.expire(e.at, rg.age)
	if rg.n == rg.limit {
		rg.drop()
	}
	if rg.n == len(rg.entries) { // full below the limit: grow, oldest first
		grown := make([]retained, min(rg.limit, max(16, 2*len(rg.entries))))
		for i := 0; i < rg.n; i++ {
			grown[i] = rg.entries[(rg.head+i)%len(rg.entries)]
		}
		rg.entries, rg.head = grown, 0
	}
	rg.appended++
	e.idx = rg.appended
	rg.entries[(rg.head+rg.n)%len(rg.entries)] = e
	rg.n++
}

// began records that the node began receiving the channel at now, and that its interest
// reaches the channel's other origins within settle (zero for a node without peers: it is the
// only origin); ring lock held.
func (rg *ring) began(now int64, settle time.Duration) {
	rg.since, rg.start = now, rg.appended
	rg.settled = now + int64(settle)
}

func (rg *ring) drop() {
	old := &rg.entries[rg.head]
	if old.seq > rg.evicted[old.origin] {
		rg.evicted[old.origin] = old.seq
	}
	// The newest time dropped, not the last dropped's: origins' clocks differ, so arrival order
	// is not time order.
	rg.lastOut = max(rg.lastOut, old.at)
	*old = retained{}
	rg.head = (rg.head + 1) % len(rg.entries)
	rg.n--
}

func (rg *ring) expire(now int64, age time.Duration) {
	for rg.n > 0 && now-rg.entries[rg.head].at > int64(age) {
		rg.drop()
	}
}

// Position is what a client hands back: per origin the last sequence it received, and the
// arrival time (unix ms, from the publications' positions) of the last one, which bounds what
// it may have missed from origins it never heard of.
type Position struct {
	Seqs map[string]uint64 `json:"seqs"`
	Time int64             `json:"time"`
}

// RecoverAnswer is the answer to a recovering subscribe.
type RecoverAnswer struct {
	Channel   string `json:"channel"`
	Recovered bool   `json:"recovered"`
	Missed    int    `json:"missed"`
	Reason    string `json:"reason,omitempty"`
}

// replay lists the frames a client at pos missed, oldest first (appended to dst[:0]: see
// replayBufs), and whether that is all it missed; ring lock held.
//
// Complete means: for every origin the position names, the kept publications after its
// sequence start right after it and have no hole (so none was lost to the bounds, or to a
// time this node was not receiving the channel), and if there are none, nothing can have
// been missed (this node has received the channel since before the position); for origins
// the position does not name, this node has received the channel since before the
// position's time and dropped nothing newer than it.
//
// vouched waives the proof that this node was receiving the channel at the position (a peer
// that was receiving it has sent what came before): only holes and the bounds then make the
// answer incomplete. fixable reports whether a peer could complete an incomplete answer (the
// node was not receiving the channel, or misses publications; not the retention bound).
func (rg *ring) replay(dst []retained, pos Position, now int64, skew time.Duration, vouched bool) (out []retained, ans RecoverAnswer, fixable bool) {
	out = dst[:0]
	rg.expire(now, rg.age)
	// A client's time is clamped so that a hostile one cannot overflow the comparison. It was
	// read on the clock of the origin of the client's last publication; an origin the position
	// does not name is judged by its own clock, which may be behind by up to skew: its
	// publications from floor-skew on count as possibly missed (the client never received one
	// of them, or the position would name the origin; one from before the client subscribed,
	// if it subscribed less than skew before its last publication, is sent too), and what this
	// node dropped or did not receive from then on makes the answer incomplete.
	floor := min(max(pos.Time, 0), math.MaxInt64/int64(time.Millisecond))*int64(time.Millisecond) - max(int64(skew), 0)
	seen := maps.Clone(pos.Seqs) // per named origin, the last sequence the client has
	if seen == nil {
		seen = map[string]uint64{}
	}
	ans = RecoverAnswer{Recovered: true}
	bound := false // incomplete because of the retention bound (a peer keeps no more)
	fail := func(why string) {
		if why == reasonBound {
			bound = true
		}
		if ans.Recovered {
			ans.Recovered, ans.Reason = false, why
		}
	}
	anchored := false // an entry the client received was kept while this node was receiving
	// The node began receiving the channel when it announced its interest; the channel's
	// origins send to it a little later (each once the announcement reaches it), so it vouches
	// for the time from interestSettle after that.
	settled := rg.settled
	for i := 0; i < rg.n; i++ {
		e := &rg.entries[(rg.head+i)%len(rg.entries)]
		last, known := seen[e.origin]
		switch {
		case known && e.seq <= last:
			if e.seq == pos.Seqs[e.origin] && e.idx > rg.start && e.at >= settled {
				anchored = true
			}
			continue // the client has it
		case known:
			// e.seq > last, so last+1 cannot overflow.
			switch {
			case e.seq == last+1:
			case rg.evicted[e.origin] > last:
				fail(reasonBound)
			default:
				fail("publications of " + e.origin + " after the position are missing here")
			}
			seen[e.origin] = e.seq
		case e.at < floor:
			// Before the position's millisecond. One in the same millisecond is sent: the
			// position's time is truncated to it, and an origin the client never heard from
			// may have published just after its last publication (found by
			// TestRecoveryIsToldEveryTime).
			continue
		}
		out = append(out, *e)
	}
	ans.Missed = len(out)
	if !vouched && !anchored && settled >= floor {
		// What another origin published between the position and then never reached this
		// node, and an origin the position does not name cannot be vouched for.
		fail("this node began receiving the channel after the position")
	}
	for o, last := range pos.Seqs {
		if rg.evicted[o] > last && seen[o] == last {
			fail(reasonBound)
		}
	}
	if rg.lastOut >= floor { // the same millisecond counts: the position's time is truncated
		for o, ev := range rg.evicted {
			if _, known := pos.Seqs[o]; !known && ev > 0 {
				fail(reasonBound)
			}
		}
	}
	return out, ans, !ans.Recovered && !bound
}

const reasonBound = "publications after the position are past the retention bound"

// replayBufs holds the lists ring.replay fills, between recoveries. Made anew, they were 21 %
// of what a survivor allocated in a storm of 10,000 recovering clients (each listed twice:
// counted when it subscribes, queued when its turn comes), and with the writers' packing
// buffers they made a GC cycle every second. Their entries share the ring's frames, which
// are never written to, so a list is only cleared, not copied, before it is reused.
var replayBufs = sync.Pool{New: func() any { return new([]retained) }}

// replayBufKeep is the longest list kept in replayBufs (about 600 KiB).
const replayBufKeep = 8192

// getReplayBuf takes a list from replayBufs; hand it back with putReplayBuf once its entries
// are queued.
func getReplayBuf() *[]retained { return replayBufs.Get().(*[]retained) }

// putReplayBuf returns bp with out (the list replay filled into it) to replayBufs.
func putReplayBuf(bp *[]retained, out []retained) {
	if cap(out) > replayBufKeep {
		return
	}
	clear(out) // the frames are the ring's to drop
	*bp = out[:0]
	replayBufs.Put(bp)
}

// encodeRetained is the #publish frame of a kept publication: the packet with its position
// beside data, which socketcluster-client ignores (apps get data alone).
// It also returns where data starts in the frame.
func encodeRetained(ch string, data json.RawMessage, origin string, seq uint64, at int64) ([]byte, int) {
	f := scproto.EncodePublish(ch, data)
	off := len(f) - 2 - len(data) // EncodePublish ends with data and "}}"
	if len(data) == 0 {
		off = len(f) - 2
	}
	// f ends with "}}": the position goes inside the inner object.
	b := make([]byte, 0, len(f)+len(origin)+48)
	b = append(b, f[:len(f)-2]...)
	b = append(b, `,"pos":[`...)
	b = scproto.AppendJSONString(b, origin)
	b = append(b, ',')
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, at/int64(time.Millisecond), 10)
	return append(b, "]}}"...), off
}
