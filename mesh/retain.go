package mesh

import (
	"sync"
	"time"
	"unsafe"
)

// Retention: the origin keeps what it numbered for each receiver, so that what a frozen,
// partitioned or slow link missed can be sent again when the receiver asks (repair.go).
//
// A txLink is the send side of one link (this node → one receiver incarnation): its epoch, its
// sequence, and a window of the publications numbered on it, bounded by bytes and age. It
// outlives the peer object: when the receiver is declared failed, publications it wanted are
// still numbered into the window (never sent), and when the same incarnation comes back the
// new peer object takes the same txLink from the link memo, so the receiver sees one
// continuous sequence and asks for what it does not have.
//
// Per link rather than per origin: sequences are already per link (a receiver sees exactly the
// numbers meant for it, so a gap is a loss and nothing else), a retransmission is the same
// batch encoding as live traffic, and one link's window is one bound an operator can reason
// about (RetainBytes per peer).
//
// txWindow is a deterministic structure (time passed in, no goroutines, no locks): txLink
// holds it under its own mutex.

// retainOverhead is what one window entry costs besides its channel and payload bytes (its
// metadata).
const retainOverhead = int(unsafe.Sizeof(entryMeta{}))

// slabBytes is the size of one slab of the window (a larger publication gets a slab of its own).
const slabBytes = 1 << 20

// The window copies each publication's channel and payload into large byte slabs, with
// pointer-free metadata beside them. Keeping references to the payloads instead (they are
// shared with the queue) would hold up to hundreds of thousands of small heap objects alive per
// link, for the garbage collector to mark on every cycle and to track through write barriers:
// measured, that cost 15 % of one link's throughput at 100-byte publications; slabs the
// collector never scans cost a copy of bytes that are in cache anyway.
type slab struct {
	buf  []byte      // channels and payloads, one after another
	meta []entryMeta // one per entry, in sequence order
}

type entryMeta struct {
	off  uint32 // of the channel in buf; the payload follows it, then the position
	clen uint32
	dlen uint32
	plen uint32
	at   int64 // unix nanos when numbered
}

// txWindow holds the publications with sequences [first, first+n) of one link, oldest first.
type txWindow struct {
	maxBytes int           // ≤ 0: keep nothing
	maxAge   time.Duration // entries older are dropped
	slabs    []*slab
	head     int    // index of the oldest entry in slabs[0].meta
	first    uint64 // sequence of the oldest entry; when empty, the next to be added
	n        int
	bytes    int // accounted: channel + payload + position + retainOverhead per entry
}

func newTxWindow(maxBytes int, maxAge time.Duration) txWindow {
	return txWindow{maxBytes: maxBytes, maxAge: maxAge, first: 1}
}

func retainCost(pb *publication) int {
	return len(pb.channel) + len(pb.data) + len(pb.pos) + retainOverhead
}

// add appends the publication numbered seq (always the sequence after the last one added,
// whether or not the window kept it) and trims the window to its bounds.
func (w *txWindow) add(seq uint64, pb *publication, now int64) {
	if w.n == 0 {
		w.first = seq
	}
	cost := retainCost(pb)
	if w.maxBytes <= 0 || cost > w.maxBytes {
		w.clear(seq + 1)
		return
	}
	size := len(pb.channel) + len(pb.data) + len(pb.pos)
	var sl *slab
	if k := len(w.slabs); k > 0 && cap(w.slabs[k-1].buf)-len(w.slabs[k-1].buf) >= size {
		sl = w.slabs[k-1]
	} else {
		sl = &slab{buf: make([]byte, 0, max(slabBytes, size)), meta: make([]entryMeta, 0, 1024)}
		w.slabs = append(w.slabs, sl)
	}
	off := len(sl.buf)
	sl.buf = append(sl.buf, pb.channel...)
	sl.buf = append(sl.buf, pb.data...)
	if len(pb.pos) > 0 {
		sl.buf = append(sl.buf, pb.pos...)
	}
	sl.meta = append(sl.meta, entryMeta{off: uint32(off), clen: uint32(len(pb.channel)), dlen: uint32(len(pb.data)), plen: uint32(len(pb.pos)), at: now})
	w.n++
	w.bytes += cost
	w.trim(now)
}

// clear empties the window; next is the sequence the next add will carry.
func (w *txWindow) clear(next uint64) {
	clear(w.slabs)
	w.slabs = w.slabs[:0]
	w.head, w.n, w.bytes = 0, 0, 0
	w.first = next
}

// trim drops entries past the byte bound or older than the age bound.
func (w *txWindow) trim(now int64) {
	cutoff := now - int64(w.maxAge)
	for w.n > 0 && (w.bytes > w.maxBytes || w.slabs[0].meta[w.head].at < cutoff) {
		w.popFront()
	}
}

func (w *txWindow) popFront() {
	sl := w.slabs[0]
	e := sl.meta[w.head]
	w.bytes -= int(e.clen) + int(e.dlen) + int(e.plen) + retainOverhead
	w.head++
	w.n--
	w.first++
	if w.head == len(sl.meta) && (len(w.slabs) > 1 || w.n == 0) {
		// Never reused: a retransmission may still be encoding from it.
		w.slabs[0] = nil
		w.slabs = w.slabs[1:]
		w.head = 0
	}
}

// get returns the entry numbered seq, if the window still holds it. Its data and position
// point into the window's slab (never overwritten); its channel is a copy.
func (w *txWindow) get(seq uint64) (pb publication, ok bool) {
	if seq < w.first || seq >= w.first+uint64(w.n) {
		return publication{}, false
	}
	i := int(seq-w.first) + w.head
	for _, sl := range w.slabs {
		if i < len(sl.meta) {
			e := sl.meta[i]
			d := e.off + e.clen
			p := d + e.dlen
			end := p + e.plen
			pb = publication{channel: string(sl.buf[e.off:d]), data: sl.buf[d:p:p]}
			if e.plen > 0 {
				pb.pos = sl.buf[p:end:end]
			}
			return pb, true
		}
		i -= len(sl.meta)
	}
	return publication{}, false
}

// oldest is the lowest sequence the window can still give (when empty, the next to be added).
func (w *txWindow) oldest() uint64 { return w.first }

// txLink is the send side of one link: the state every publication numbered for one receiver
// incarnation passes through, whichever path numbered it (the flusher's batches, a queue cut or
// closed, a failed peer's publications). Lock order: peer.qmu, then txLink.mu.
type txLink struct {
	mu     sync.Mutex
	target string // receiver's Serf name
	epoch  uint64 // never 0
	seq    uint64 // last sequence numbered
	win    txWindow
	// sent is the last sequence handed to the PUB socket live; unsent says some numbers above
	// it were never handed over (the receiver was away or cut): heartbeats then carry the tail
	// until the receiver asks.
	sent   uint64
	unsent bool
	// advanced is when seq last moved (unix nanos): links active within tailActive get their
	// tail in heartbeats.
	advanced int64

	// The repair job (at most one per link): retransmit [next, to].
	repairing bool
	job       uint64
	next, to  uint64
	// covered: every sequence below it was retransmitted since rewound (unix nanos), when a
	// request last asked again for part of it.
	covered uint64
	rewound int64
}

func newTxLink(target string, epoch uint64, maxBytes int, maxAge time.Duration) *txLink {
	return &txLink{target: target, epoch: epoch, win: newTxWindow(maxBytes, maxAge)}
}

// number gives pubs the next sequences and keeps them in the window; it returns the first.
// sent says they are being handed to the PUB socket now (the flusher); otherwise they are
// numbered for a receiver that cannot get them now and will ask.
func (t *txLink) number(pubs []publication, now int64, sent bool) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	first := t.seq + 1
	for i := range pubs {
		t.seq++
		t.win.add(t.seq, &pubs[i], now)
	}
	if len(pubs) > 0 {
		t.advanced = now
		if !sent {
			t.unsent = true
		}
	}
	return first
}

// handed records that the batch ending at last reached the PUB socket.
func (t *txLink) handed(last uint64) {
	t.mu.Lock()
	if last > t.sent {
		t.sent = last
	}
	t.mu.Unlock()
}

// tail is what a heartbeat says of this link, if anything: links that numbered within
// tailActive, or that numbered what they could not send.
func (t *txLink) tail(now int64) (epoch, last uint64, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.unsent && t.win.n == 0 && now-t.advanced > int64(t.win.maxAge) {
		// Nothing left to give: a receiver that comes back now learns what it lost from its
		// own request. Stop announcing (a peer that never returns would be announced forever).
		t.unsent = false
	}
	if t.unsent {
		return t.epoch, t.seq, true
	}
	if t.advanced != 0 && now-t.advanced < int64(tailActive) {
		return t.epoch, t.sent, true
	}
	return 0, 0, false
}

// rewindEvery bounds how often requests may have retransmitted publications sent again (see
// request); below the default heartbeat (the receiver's retry interval).
const rewindEvery = 200 * time.Millisecond

// tailActive: a link that numbered within this long has its tail in every heartbeat, so a
// receiver that lost the end of a burst (and hears nothing after it) asks within a heartbeat.
const tailActive = time.Second

// state is the link's epoch and last sequence (for the memo and status).
func (t *txLink) state() sendState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return sendState{t.epoch, t.seq}
}

// expire drops window entries older than the age bound (called periodically, so an idle
// link's window empties too).
func (t *txLink) expire(now int64) (entries, bytes int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.win.trim(now)
	return t.win.n, t.win.bytes
}

// request handles a receiver's RepairRequest: what is lost, the link's last sequence, and the
// range now scheduled for retransmission (merged with a job in progress). start says a repair
// goroutine must be started for job.
func (t *txLink) request(epoch, from, to uint64, now int64) (reply repairReply, job uint64, start bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.win.trim(now)
	reply = repairReply{epoch: epoch, last: t.seq, current: t.epoch}
	if epoch != t.epoch {
		// Not our stream (we forgot it, or restarted the link): all of it is gone.
		if to == 0 || to < from {
			to = from
		}
		reply.lostFrom, reply.lostTo = from, to
		return reply, 0, false
	}
	if from == 0 {
		from = 1
	}
	if to == 0 || to > t.seq {
		to = t.seq
	}
	if from > to {
		t.unsent = false // it has everything: stop announcing the tail
		return reply, 0, false
	}
	if old := t.win.oldest(); from < old {
		reply.lostFrom, reply.lostTo = from, min(to, old-1)
		from = old
	}
	if to >= t.seq {
		t.unsent = false // the receiver knows the tail now; it asks again if this fails
	}
	// A request for what was retransmitted already asks again for what may still be in flight
	// or was lost again. That is allowed once per rewindEvery: the receiver asks again only
	// after a heartbeat without progress, and a member that floods requests must not make us
	// send the window once per request.
	if from < t.covered {
		if now-t.rewound < int64(rewindEvery) {
			from = t.covered
		} else {
			t.covered, t.rewound = from, now
		}
	}
	if from > to {
		return reply, 0, false
	}
	if t.repairing {
		t.next = min(t.next, from)
		t.to = max(t.to, to)
		return reply, 0, false
	}
	t.repairing, t.next, t.to = true, from, to
	t.job++
	return reply, t.job, true
}

// abort ends job if it is still the current one (its peer is gone; a new peer object for the
// same receiver starts its own when asked).
func (t *txLink) abort(job uint64) {
	t.mu.Lock()
	if t.job == job {
		t.repairing = false
	}
	t.mu.Unlock()
}

// nextRepair takes the next batch of job (at most maxPubs, about maxBytes of payload, within
// the frame budget) into buf: first is the
// sequence of buf[0]. lost is a range that left the window meanwhile (0,0 = none). done says
// the job is finished (nothing taken).
func (t *txLink) nextRepair(job uint64, buf []publication, maxPubs, maxBytes, budget int, now int64) (out []publication, first, lostFrom, lostTo uint64, done bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.win.trim(now)
	if job != t.job {
		return buf[:0], 0, 0, 0, true // superseded (abort, then a new job)
	}
	if t.next > t.to {
		t.repairing = false
		return buf[:0], 0, 0, 0, true
	}
	if old := t.win.oldest(); t.next < old {
		lostFrom, lostTo = t.next, min(t.to, old-1)
		t.next = lostTo + 1
	}
	out, first = buf[:0], t.next
	size, cost := 0, 0
	for t.next <= t.to && len(out) < maxPubs && size < maxBytes {
		pb, ok := t.win.get(t.next)
		if !ok {
			break
		}
		// Same bounds as a live batch (take): it fits the frame limit.
		c := pubCost(pb)
		if len(out) > 0 && cost+c > budget {
			break
		}
		cost += c
		out = append(out, pb)
		size += len(pb.data)
		t.next++
	}
	t.covered = max(t.covered, t.next)
	return out, first, lostFrom, lostTo, false
}

type repairReply struct {
	epoch, lostFrom, lostTo, last, current uint64
}
