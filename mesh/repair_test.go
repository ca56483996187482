package mesh

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// The repair protocol with scripted links: an origin's txLink and a receiver's rxLink joined by
// a "network" the test controls batch by batch, with a clock the test moves. No sockets, no
// goroutines, no sleeps.

type scriptNet struct {
	t   *testing.T
	now int64
	cfg rxConfig
	tx  *txLink
	rx  rxLink

	got      []string // delivered payloads, in order
	gotPos   []string // their positions
	lostN    map[string]uint64
	fixed    uint64
	dups     uint64
	asks     [][3]uint64 // requests the receiver sent and the network has not carried yet
	dropAsks bool        // the receiver → origin direction is cut
}

func newScriptNet(t *testing.T, maxBytes int, maxAge time.Duration) *scriptNet {
	return &scriptNet{
		t: t, now: time.Unix(1000, 0).UnixNano(),
		cfg:   rxConfig{wait: 2 * time.Second, idle: 30 * time.Second, retry: 250 * time.Millisecond, maxBytes: 1 << 20},
		tx:    newTxLink("rx", 7, maxBytes, maxAge),
		lostN: map[string]uint64{},
	}
}

func (s *scriptNet) deliver(pb pubIn) {
	s.got = append(s.got, string(pb.data))
	s.gotPos = append(s.gotPos, string(pb.pos))
}
func (s *scriptNet) ask(epoch, from, to uint64) {
	if !s.dropAsks {
		s.asks = append(s.asks, [3]uint64{epoch, from, to})
	}
}
func (s *scriptNet) lost(n uint64, reason string) { s.lostN[reason] += n }
func (s *scriptNet) repaired(n uint64)            { s.fixed += n }
func (s *scriptNet) duplicate(n uint64)           { s.dups += n }

func (s *scriptNet) advance(d time.Duration) { s.now += int64(d) }

// scriptPos is the position the script gives publication p<i>: two of three carry one (as a
// recovery channel's do, beside others' without), so that every scenario shows positions kept
// with their publications through the window, the reorder buffer and retransmission.
func scriptPos(i int) []byte {
	if i%3 == 0 {
		return nil
	}
	return []byte(fmt.Sprintf("pos%d", i))
}

// publish numbers n publications p<i> on the link and returns them as a live batch.
func (s *scriptNet) publish(from, n int) (first uint64, pubs []pubIn) {
	var ps []publication
	for i := from; i < from+n; i++ {
		ps = append(ps, publication{"ch", []byte(fmt.Sprintf("p%d", i)), scriptPos(i)})
		pubs = append(pubs, pubIn{"ch", []byte(fmt.Sprintf("p%d", i)), scriptPos(i)})
	}
	first = s.tx.number(ps, s.now, true)
	s.tx.handed(first + uint64(n) - 1)
	return first, pubs
}

func (s *scriptNet) arrive(first uint64, pubs []pubIn) {
	s.rx.batch(s.tx.epoch, first, pubs, false, s.now, s.cfg, s)
}

// serve carries the receiver's requests to the origin and its answers back: the reply, then
// the retransmission in batches of at most 3.
func (s *scriptNet) serve() {
	for len(s.asks) > 0 {
		a := s.asks[0]
		s.asks = s.asks[1:]
		rep, job, start := s.tx.request(a[0], a[1], a[2], s.now)
		s.rx.reply(rep, s.now, s.cfg, s)
		if !start {
			continue
		}
		for {
			pubs, first, lf, lt, done := s.tx.nextRepair(job, nil, 3, 1<<20, 1<<20, s.now)
			if done {
				break
			}
			if lt != 0 {
				s.rx.reply(repairReply{epoch: s.tx.epoch, lostFrom: lf, lostTo: lt, last: s.tx.seq, current: s.tx.epoch}, s.now, s.cfg, s)
			}
			var in []pubIn
			for _, p := range pubs {
				in = append(in, pubIn{p.channel, p.data, p.pos})
			}
			if len(in) > 0 {
				s.rx.batch(s.tx.epoch, first, in, true, s.now, s.cfg, s)
			}
		}
	}
}

func (s *scriptNet) want(from, to int) {
	s.t.Helper()
	var w, wp []string
	for i := from; i <= to; i++ {
		w = append(w, fmt.Sprintf("p%d", i))
		wp = append(wp, string(scriptPos(i)))
	}
	if !slices.Equal(s.got, w) {
		s.t.Fatalf("delivered %v, want p%d..p%d in order", s.got, from, to)
	}
	if !slices.Equal(s.gotPos, wp) {
		s.t.Fatalf("positions %q, want %q", s.gotPos, wp)
	}
}

func TestRepairGapIsFilledInOrder(t *testing.T) {
	s := newScriptNet(t, 64<<20, 30*time.Second)
	s.arrive(s.publish(0, 3)) // p0..p2
	s.publish(3, 3)           // p3..p5 lost on the way
	s.arrive(s.publish(6, 2)) // p6, p7 arrive: wait behind the gap
	if len(s.got) != 3 || len(s.asks) != 1 || s.asks[0] != [3]uint64{7, 4, 6} {
		t.Fatalf("after the gap: delivered %v, asks %v; want p0..p2 and one request for 4..6", s.got, s.asks)
	}
	s.serve()
	s.want(0, 7)
	if s.fixed != 3 || len(s.lostN) != 0 || s.dups != 0 {
		t.Fatalf("repaired %d, lost %v, dups %d; want 3, none, 0", s.fixed, s.lostN, s.dups)
	}
}

func TestRepairDuplicatesAreDeliveredOnce(t *testing.T) {
	s := newScriptNet(t, 64<<20, 30*time.Second)
	f0, b0 := s.publish(0, 4)
	s.arrive(f0, b0)
	s.arrive(f0, b0) // the same batch again (a retransmission racing a reconnect)
	// The receiver asks for a range it already has (its request crossed the live batch).
	s.asks = append(s.asks, [3]uint64{7, 1, 4})
	s.serve()
	s.arrive(s.publish(4, 1))
	s.want(0, 4)
	if s.dups != 8 {
		t.Fatalf("duplicates skipped: %d, want 8 (4 live + 4 retransmitted)", s.dups)
	}
}

func TestRepairReorderedRetransmissions(t *testing.T) {
	s := newScriptNet(t, 64<<20, 30*time.Second)
	s.arrive(s.publish(0, 1))
	f1, b1 := s.publish(1, 2) // p1, p2 lost
	f2, b2 := s.publish(3, 2) // p3, p4 lost
	s.arrive(s.publish(5, 1))
	// The later loss arrives first (as a late retransmission would), then the earlier.
	s.rx.batch(7, f2, b2, true, s.now, s.cfg, s)
	if len(s.got) != 1 {
		t.Fatalf("delivered %v before the hole at p1 was filled", s.got)
	}
	s.rx.batch(7, f1, b1, true, s.now, s.cfg, s)
	s.want(0, 5)
	s.asks = nil
}

func TestRepairBeyondWindowIsCountedAndDeliveryMovesOn(t *testing.T) {
	s := newScriptNet(t, 64<<20, 30*time.Second)
	s.arrive(s.publish(0, 2))
	s.publish(2, 5) // p2..p6 lost, at t
	s.advance(20 * time.Second)
	s.publish(7, 3) // p7..p9 lost, at t+20s
	s.advance(15 * time.Second)
	// At t+35s p2..p6 have left the 30 s window; p7..p9 have not.
	s.arrive(s.publish(10, 1))
	s.serve()
	if s.lostN[lostBeyondWindow] != 5 {
		t.Fatalf("lost beyond window %v, want 5", s.lostN)
	}
	want := []string{"p0", "p1", "p7", "p8", "p9", "p10"}
	if !slices.Equal(s.got, want) {
		t.Fatalf("delivered %v, want %v", s.got, want)
	}
	// By bytes: a window of 3 entries' worth keeps only the last 3 numbered (p9, p10 and the
	// live p11).
	last3 := 0
	for i := 9; i <= 11; i++ {
		last3 += retainCost(&publication{"ch", []byte(fmt.Sprintf("p%d", i)), scriptPos(i)})
	}
	s = newScriptNet(t, last3, time.Hour)
	s.arrive(s.publish(0, 1))
	s.publish(1, 10)
	s.arrive(s.publish(11, 1))
	s.serve()
	if s.lostN[lostBeyondWindow] != 8 || s.fixed != 2 {
		t.Fatalf("byte-bounded window: lost %v repaired %d, want 8 beyond window and 2 repaired", s.lostN, s.fixed)
	}
	if want := []string{"p0", "p9", "p10", "p11"}; !slices.Equal(s.got, want) {
		t.Fatalf("delivered %v, want %v", s.got, want)
	}
}

func TestRepairTimeoutGivesUpAndKeepsOrder(t *testing.T) {
	s := newScriptNet(t, 64<<20, 30*time.Second)
	s.arrive(s.publish(0, 1))
	s.publish(1, 2)
	s.dropAsks = true // the origin never hears us
	s.arrive(s.publish(3, 2))
	for i := 0; i < 7; i++ {
		s.advance(250 * time.Millisecond)
		s.rx.tick(s.now, s.cfg, s)
		if len(s.got) != 1 {
			t.Fatalf("gave up after %d ms, before the wait (%s)", (i+1)*250, s.cfg.wait)
		}
	}
	s.advance(250 * time.Millisecond)
	s.rx.tick(s.now, s.cfg, s)
	if s.lostN[lostTimeout] != 2 {
		t.Fatalf("lost %v after the wait, want 2 by timeout", s.lostN)
	}
	want := []string{"p0", "p3", "p4"}
	if !slices.Equal(s.got, want) {
		t.Fatalf("delivered %v, want %v", s.got, want)
	}
}

func TestRepairOriginRestart(t *testing.T) {
	s := newScriptNet(t, 64<<20, 30*time.Second)
	s.arrive(s.publish(0, 3))
	s.publish(3, 2) // lost
	s.arrive(s.publish(5, 1))
	s.asks = nil // the requests go to the old incarnation, which died
	// The origin's replacement (or the origin having forgotten the link) starts epoch 9.
	s.tx = newTxLink("rx", 9, 64<<20, 30*time.Second)
	s.arrive(s.publish(100, 2))
	if s.lostN[lostRestarted] != 2 {
		t.Fatalf("lost %v, want the 2 missing of the old stream as restarted", s.lostN)
	}
	want := []string{"p0", "p1", "p2", "p5", "p100", "p101"}
	if !slices.Equal(s.got, want) {
		t.Fatalf("delivered %v, want %v", s.got, want)
	}
	// A request about the old epoch: everything asked is lost, the new stream is followed.
	s.rx.epoch = 7
	s.rx.expect, s.rx.known = 4, 4
	s.asks = [][3]uint64{{7, 4, 0}}
	s.serve()
	if s.rx.epoch != 9 || s.lostN[lostRestarted] != 3 {
		t.Fatalf("after a reply from the new epoch: epoch %d lost %v", s.rx.epoch, s.lostN)
	}
}

func TestRepairTailAfterSilence(t *testing.T) {
	// The end of a stream is lost and nothing follows: the heartbeat tail, or the link coming
	// back, makes the receiver ask.
	s := newScriptNet(t, 64<<20, 30*time.Second)
	s.arrive(s.publish(0, 2))
	s.publish(2, 3) // lost, and the publisher stops
	ep, last, ok := s.tx.tail(s.now)
	if !ok {
		t.Fatal("an active link has no tail in heartbeats")
	}
	s.rx.tail(ep, last, s.now, s.cfg, s)
	s.serve()
	s.want(0, 4)

	// Numbered while the receiver was away (never sent): the tail stays in heartbeats until
	// the receiver asked for it, however long ago it was numbered.
	s.tx.number([]publication{{"ch", []byte("p5"), scriptPos(5)}}, s.now, false)
	s.advance(10 * time.Second)
	if _, _, ok := s.tx.tail(s.now); !ok {
		t.Fatal("unsent publications: no tail")
	}
	s.rx.linkUp(s.now, s)
	s.serve()
	s.want(0, 5)
	if _, _, ok := s.tx.tail(s.now); ok {
		t.Fatal("tail still announced after the receiver asked for everything")
	}
	// A receiver that never comes back: announced while the window holds something for it.
	s.tx.number([]publication{{"ch", []byte("p6"), scriptPos(6)}}, s.now, false)
	s.advance(29 * time.Second)
	if _, _, ok := s.tx.tail(s.now); !ok {
		t.Fatal("unsent publication still in the window, but no tail")
	}
	s.advance(2 * time.Second)
	s.tx.expire(s.now)
	if _, _, ok := s.tx.tail(s.now); ok {
		t.Fatal("tail announced after the window emptied (a peer that never returns would be announced forever)")
	}
}

func TestRepairReorderBufferFullCostsRetransmissionNotLoss(t *testing.T) {
	s := newScriptNet(t, 64<<20, 30*time.Second)
	s.cfg.maxBytes = 0
	for i := 2; i <= 6; i++ {
		s.cfg.maxBytes += pubIn{"ch", []byte(fmt.Sprintf("p%d", i)), scriptPos(i)}.size()
	}
	s.arrive(s.publish(0, 1))
	s.publish(1, 1) // lost
	for i := 2; i < 9; i++ {
		s.arrive(s.publish(i, 1)) // p2..p6 wait; p7 and p8 do not fit
	}
	if len(s.rx.held) != 5 {
		t.Fatalf("%d publications wait, want the 5 that fit", len(s.rx.held))
	}
	s.serve()
	s.want(0, 8)
	if len(s.lostN) != 0 || s.fixed != 3 {
		t.Fatalf("lost %v, repaired %d; want none lost, p1, p7 and p8 retransmitted", s.lostN, s.fixed)
	}
}

// TestRepairRetransmissionOfAWaitingPublication: the origin retransmits a range that overlaps
// publications already waiting in the reorder buffer (its job merged an earlier, wider
// request). The one arriving exactly at the next expected sequence is delivered once, and its
// waiting copy is dropped: left behind, it was delivered again (and hid a loss in the count)
// when a later gap was given up.
func TestRepairRetransmissionOfAWaitingPublication(t *testing.T) {
	s := newScriptNet(t, 64<<20, 30*time.Second)
	s.arrive(s.publish(0, 1))
	f1, b1 := s.publish(1, 2) // p1, p2 lost
	s.arrive(s.publish(3, 2)) // p3, p4 wait
	s.publish(5, 1)           // p5 lost
	s.arrive(s.publish(6, 1)) // p6 waits
	s.asks = nil
	// The retransmission of p1..p4 (a wider range than asked for), then p5 never comes.
	s.rx.batch(7, f1, append(b1, pubIn{"ch", []byte("p3"), scriptPos(3)}, pubIn{"ch", []byte("p4"), scriptPos(4)}), true, s.now, s.cfg, s)
	s.dropAsks = true
	for range 20 {
		s.advance(250 * time.Millisecond)
		s.rx.tick(s.now, s.cfg, s)
	}
	want := []string{"p0", "p1", "p2", "p3", "p4", "p6"}
	if !slices.Equal(s.got, want) {
		t.Fatalf("delivered %v, want %v (each once, in order)", s.got, want)
	}
	if s.lostN[lostTimeout] != 1 {
		t.Fatalf("lost %v, want p5 counted as lost by timeout", s.lostN)
	}
}

// TestRepairRequestHostileRanges: a member's repair requests with any epoch and range (0, near
// 2^64, reversed) get a bounded answer and at most the window retransmitted, never more.
func TestRepairRequestHostileRanges(t *testing.T) {
	tx := newTxLink("rx", 7, 1<<20, time.Hour)
	for i := range 100 {
		tx.number([]publication{{"ch", []byte{byte(i)}, nil}}, 1, true)
	}
	max64 := ^uint64(0)
	for _, r := range [][3]uint64{{7, 0, 0}, {7, 0, max64}, {7, max64, max64}, {7, 50, 10}, {7, max64 - 1, 0}, {8, 1, max64}, {8, max64, 0}, {0, 0, 0}} {
		rep, job, start := tx.request(r[0], r[1], r[2], 1)
		if rep.last != 100 || rep.current != 7 {
			t.Fatalf("request %v: reply %+v", r, rep)
		}
		if !start {
			continue
		}
		sent := 0
		for {
			pubs, first, _, _, done := tx.nextRepair(job, nil, 256, 1<<20, 1<<20, 1)
			if done {
				break
			}
			if first < 1 || first+uint64(len(pubs))-1 > 100 {
				t.Fatalf("request %v: retransmits %d from %d, outside 1..100", r, len(pubs), first)
			}
			sent += len(pubs)
		}
		if sent > 100 {
			t.Fatalf("request %v: %d retransmitted from a window of 100", r, sent)
		}
	}
}
