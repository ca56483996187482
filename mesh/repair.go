package mesh

import (
	"slices"
	"time"
)

// Repair, receiver side. Every publication an origin sends us carries a per-link sequence
// (epoch, seq). rxLink delivers them to the node strictly in that order, once each:
//
//   - a gap (a batch starts past what we expect, a heartbeat tail or a repair reply says the
//     origin numbered more) sends a RepairRequest for the missing range to the origin's
//     mailbox; publications after the gap wait in a reorder buffer (bounded in bytes) until the
//     retransmission fills it, then go out in order; what does not fit is let go and asked
//     for in its turn (it is still in the origin's window);
//   - a link that comes back (new subscribe socket) asks for everything after what it has;
//   - the origin answers every request with a RepairReply (what left its window, its last
//     sequence) before it retransmits; what left the window is counted as lost, in order;
//   - a repair that makes no progress for `wait` while publications wait behind it (or for
//     `idle` with nothing waiting: the origin may be unreachable for a while) is given up:
//     the missing range is counted as lost and delivery moves on;
//   - an origin that changed the link's epoch (it forgot the stream, or it was replaced) makes
//     what was missing of the old stream lost;
//   - anything below what we expect is a duplicate (a retransmission racing a live batch, or a
//     reply to a repeated request) and is skipped.
//
// Lost publications are counted (gaps_total and unrepaired_messages_total{reason}) and logged
// once per link by the caller. rxLink is deterministic (time passed in, no goroutines, no locks)
// so that the protocol is tested with scripted links (repair_test.go); the peer guards it with
// its receive mutex.

// Reasons a missing range is given up.
const (
	lostBeyondWindow = "beyond_window" // the origin no longer had it (age or byte bound)
	lostRestarted    = "restarted"     // the origin started a new stream (forgot us, or was replaced)
	lostTimeout      = "timeout"       // no progress for the repair wait
	lostGone         = "peer_gone"     // the link was removed while publications waited
)

// rxOutput is what an rxLink does to the world.
type rxOutput interface {
	deliver(pb pubIn)
	// ask sends a RepairRequest for [from, to] (to = 0: everything after from) in epoch.
	ask(epoch, from, to uint64)
	lost(n uint64, reason string)
	repaired(n uint64)
	duplicate(n uint64)
}

type rxConfig struct {
	wait     time.Duration // longest a repair may make no progress while publications wait
	idle     time.Duration // longest with nothing waiting (the origin's window, at least wait)
	retry    time.Duration // between repeated requests
	maxBytes int           // reorder buffer bound (payload + channel bytes)
}

type heldPub struct {
	pubIn
	retransmit bool
}

type rxLink struct {
	epoch  uint64
	expect uint64 // next sequence to deliver; everything below was delivered or given up
	known  uint64 // highest sequence known to exist in epoch
	// counter is the last seal counter accepted from the sender (closed mesh): anything not
	// above it is a replay.
	counter uint64

	held      map[uint64]heldPub
	heldBytes int

	repairing bool
	progress  int64 // when the repair started or last moved expect (unix nanos)
	asked     int64 // when the last request went out
	askedTo   uint64
	resume    bool // the link came back: ask for everything after expect until answered
}

// pubIn is one publication as the receiver sees it.
type pubIn struct {
	channel string
	data    []byte
	pos     []byte
}

// size is what a held publication counts against the reorder buffer.
func (pb pubIn) size() int { return len(pb.channel) + len(pb.data) + len(pb.pos) }

// adopt switches to epoch; what was missing of the old stream is lost (waiting publications of
// the old stream go out first, in order).
func (r *rxLink) adopt(epoch uint64, o rxOutput) {
	if r.epoch != 0 {
		r.giveUp(r.known+1, lostRestarted, o)
	}
	r.epoch, r.expect, r.known = epoch, 1, 0
	r.repairing = false
	r.askedTo = 0
}

// batch takes a batch of the origin's publications numbered from first.
func (r *rxLink) batch(epoch, first uint64, pubs []pubIn, retransmit bool, now int64, cfg rxConfig, o rxOutput) {
	if first == 0 || first >= ^uint64(0)-uint64(len(pubs)) {
		return // sequences start at 1 and no origin numbers near 2^64: not a batch of ours
	}
	if epoch != r.epoch {
		if retransmit {
			return // an answer to a stream we no longer follow
		}
		r.adopt(epoch, o)
	}
	if r.expect == 0 {
		r.expect = 1
	}
	seq := first
	moved := false
	for _, pb := range pubs {
		switch {
		case seq < r.expect:
			o.duplicate(1)
		case seq == r.expect:
			if h, ok := r.held[seq]; ok {
				// It was waiting already (a retransmission of a range we partly had): once.
				delete(r.held, seq)
				r.heldBytes -= h.size()
				o.duplicate(1)
			}
			o.deliver(pb)
			if retransmit {
				o.repaired(1)
			}
			r.expect++
			moved = true
		default:
			if _, ok := r.held[seq]; ok {
				o.duplicate(1)
				break
			}
			size := pb.size()
			if r.heldBytes+size > cfg.maxBytes {
				// The reorder buffer is full: let it go. It is still in the origin's window
				// and is asked for once the repair reaches it (known covers it), so a live
				// stream faster than the buffer costs retransmission, not loss.
				break
			}
			if r.held == nil {
				r.held = make(map[uint64]heldPub)
			}
			r.held[seq] = heldPub{pb, retransmit}
			r.heldBytes += size
		}
		seq++
	}
	if n := uint64(len(pubs)); n > 0 && first+n-1 > r.known {
		r.known = first + n - 1
	}
	if r.drain(o) || moved {
		r.progress = now
	}
	r.check(now, cfg, o)
}

// tail takes a heartbeat's word on the origin's last sequence for us.
func (r *rxLink) tail(epoch, last uint64, now int64, cfg rxConfig, o rxOutput) {
	if last == ^uint64(0) {
		return // no origin numbers that far; known+1 must not wrap
	}
	if epoch != r.epoch {
		if last == 0 {
			return
		}
		r.adopt(epoch, o)
	}
	if last > r.known {
		r.known = last
	}
	r.check(now, cfg, o)
}

// reply takes the origin's answer to a request.
func (r *rxLink) reply(rep repairReply, now int64, cfg rxConfig, o rxOutput) {
	if rep.epoch != r.epoch {
		return // about a stream we left
	}
	resumed := r.resume
	r.resume = false
	if rep.current != 0 && rep.current != r.epoch {
		// The origin no longer knows this stream: the rest of it is lost; follow the new one
		// from its start.
		r.adopt(rep.current, o)
		r.known = rep.last
		r.check(now, cfg, o)
		return
	}
	// The origin's own word on its last sequence bounds what we wait for: a tail that claimed
	// more (a misbehaving member) would otherwise keep a repair open for ever.
	r.known = max(rep.last, r.maxHeld())
	if rep.lostTo != 0 && rep.lostFrom <= r.expect && rep.lostTo >= r.expect && rep.lostTo < ^uint64(0) {
		r.giveUp(rep.lostTo+1, lostBeyondWindow, o)
		r.progress = now
	}
	if resumed && r.expect <= rep.last {
		// The answer to "everything after expect": the origin is retransmitting up to last,
		// so asking again for part of it would only make it send some twice.
		r.repairing, r.progress, r.asked, r.askedTo = true, now, now, rep.last
	}
	r.check(now, cfg, o)
}

// linkUp: a new subscribe socket to the origin; ask for everything after what we have (a
// freeze or a partition may have hidden the end of the stream) until the origin answers.
func (r *rxLink) linkUp(now int64, o rxOutput) {
	if r.epoch == 0 {
		return // nothing received yet: the origin's heartbeat tails say where it is
	}
	r.resume = true
	r.asked = now
	o.ask(r.epoch, r.expect, 0)
}

// tick retries requests and gives up repairs that stopped making progress.
func (r *rxLink) tick(now int64, cfg rxConfig, o rxOutput) {
	if r.resume && !r.repairing && now-r.asked >= int64(cfg.retry) {
		r.asked = now
		o.ask(r.epoch, r.expect, 0)
	}
	if !r.repairing {
		return
	}
	limit := cfg.idle
	if len(r.held) > 0 {
		limit = cfg.wait
	}
	if now-r.progress >= int64(limit) {
		r.giveUp(r.nextHeld(), lostTimeout, o)
		r.progress = now
		r.check(now, cfg, o)
		return
	}
	if now-max(r.asked, r.progress) >= int64(cfg.retry) {
		r.askGap(now, o) // nothing arrived since we asked: ask again
	}
}

// flush gives up everything missing (the link is being removed): waiting publications go out
// in order; the missing ones are lost.
func (r *rxLink) flush(o rxOutput) {
	if len(r.held) > 0 {
		var top uint64
		for s := range r.held {
			top = max(top, s)
		}
		r.giveUp(top+1, lostGone, o)
	}
	r.repairing = false
	r.resume = false
}

// check starts (or continues to the next hole) a repair when something is missing.
func (r *rxLink) check(now int64, cfg rxConfig, o rxOutput) {
	if r.expect > r.known {
		r.repairing = false
		r.askedTo = 0
		return
	}
	if !r.repairing {
		r.repairing = true
		r.progress = now
		r.askGap(now, o)
		return
	}
	if r.expect > r.askedTo {
		r.askGap(now, o) // the hole we asked for is filled; the next one
	}
}

// askGap asks for the missing range starting at expect: up to the first waiting publication,
// or up to the known tail.
func (r *rxLink) askGap(now int64, o rxOutput) {
	to := r.known
	if len(r.held) > 0 {
		to = r.nextHeld() - 1
	}
	r.asked, r.askedTo = now, to
	o.ask(r.epoch, r.expect, to)
}

// maxHeld is the highest waiting sequence (expect-1 when none waits).
func (r *rxLink) maxHeld() uint64 {
	top := r.expect - 1
	for s := range r.held {
		top = max(top, s)
	}
	return top
}

// nextHeld is the lowest waiting sequence (known+1 when none waits).
func (r *rxLink) nextHeld() uint64 {
	if len(r.held) == 0 {
		return r.known + 1
	}
	low := ^uint64(0)
	for s := range r.held {
		low = min(low, s)
	}
	return low
}

// giveUp counts [expect, upto) as lost except what waits in the buffer, which is delivered in
// order, and continues from upto.
func (r *rxLink) giveUp(upto uint64, reason string, o rxOutput) {
	if upto <= r.expect {
		return
	}
	var waiting []uint64
	for s := range r.held {
		if s < upto {
			waiting = append(waiting, s)
		}
	}
	slices.Sort(waiting)
	missing := upto - r.expect - uint64(len(waiting))
	if missing > 0 {
		o.lost(missing, reason)
	}
	for _, s := range waiting {
		r.take(s, o)
	}
	r.expect = upto
	r.drain(o)
}

// drain delivers waiting publications from expect on; it reports whether expect moved.
func (r *rxLink) drain(o rxOutput) bool {
	moved := false
	for len(r.held) > 0 {
		if _, ok := r.held[r.expect]; !ok {
			break
		}
		r.take(r.expect, o)
		r.expect++
		moved = true
	}
	if len(r.held) == 0 {
		r.held = nil // give the map's memory back after a repair
	}
	return moved
}

func (r *rxLink) take(s uint64, o rxOutput) {
	h := r.held[s]
	delete(r.held, s)
	r.heldBytes -= h.size()
	o.deliver(h.pubIn)
	if h.retransmit {
		o.repaired(1)
	}
}
