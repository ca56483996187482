package mesh

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sockmesh/sockmesh/proto/meshpb"
)

// fmtFailedRoutes renders the routes of the given channels: "a:x,y b:- c:x".
func fmtFailedRoutes(f *FailedRoutes[string], chs ...string) string {
	var b []string
	for _, ch := range chs {
		r := slices.Clone(f.Route(ch))
		slices.Sort(r)
		s := strings.Join(r, ",")
		if s == "" {
			s = "-"
		}
		b = append(b, ch+":"+s)
	}
	return strings.Join(b, " ")
}

// TestFailedRoutes drives the failed-peer record through scripts; every step states the routes
// of channels a, b, c and the number of records afterwards. Values are "name/instance" so that a
// replaced value is visible.
func TestFailedRoutes(t *testing.T) {
	type step struct {
		op      string // add | remove | expire
		name    string
		v       string
		chs     []string
		ms      int
		ret     string // remove: "true"/"false"; expire: the expired names
		routes  string // routes of a, b, c
		records int
	}
	cases := []struct {
		name  string
		ttl   time.Duration
		max   int
		steps []step
	}{
		{"add routes every channel the peer wanted; remove forgets exactly it", time.Minute, 8, []step{
			{op: "add", name: "x", v: "x/1", chs: []string{"a", "b"}, routes: "a:x/1 b:x/1 c:-", records: 1},
			{op: "add", name: "y", v: "y/1", chs: []string{"b", "c"}, routes: "a:x/1 b:x/1,y/1 c:y/1", records: 2},
			{op: "remove", name: "x", ret: "true", routes: "a:- b:y/1 c:y/1", records: 1},
			{op: "remove", name: "x", ret: "false", routes: "a:- b:y/1 c:y/1", records: 1},
			{op: "remove", name: "y", ret: "true", routes: "a:- b:- c:-", records: 0},
		}},
		{"a peer that wanted nothing leaves no record", time.Minute, 8, []step{
			{op: "add", name: "x", v: "x/1", routes: "a:- b:- c:-", records: 0},
			{op: "remove", name: "x", ret: "false", routes: "a:- b:- c:-", records: 0},
		}},
		{"failing again before back in sync merges the sets and takes the new value", time.Minute, 8, []step{
			{op: "add", name: "x", v: "x/1", chs: []string{"a"}, routes: "a:x/1 b:- c:-", records: 1},
			// re-added, not synced yet (the table knew nothing), failed again
			{op: "add", name: "x", v: "x/2", chs: nil, ms: 100, routes: "a:x/2 b:- c:-", records: 1},
			{op: "add", name: "x", v: "x/3", chs: []string{"b"}, ms: 200, routes: "a:x/3 b:x/3 c:-", records: 1},
		}},
		{"records expire after TTL, counted from the last failure", time.Second, 8, []step{
			{op: "add", name: "x", v: "x/1", chs: []string{"a"}, routes: "a:x/1 b:- c:-", records: 1},
			{op: "add", name: "y", v: "y/1", chs: []string{"a"}, ms: 500, routes: "a:x/1,y/1 b:- c:-", records: 2},
			{op: "expire", ms: 999, ret: "", routes: "a:x/1,y/1 b:- c:-", records: 2},
			{op: "expire", ms: 1000, ret: "x", routes: "a:y/1 b:- c:-", records: 1},
			{op: "add", name: "y", v: "y/2", chs: nil, ms: 1400, routes: "a:y/2 b:- c:-", records: 1},
			{op: "expire", ms: 1500, ret: "", routes: "a:y/2 b:- c:-", records: 1},
			{op: "expire", ms: 2400, ret: "y", routes: "a:- b:- c:-", records: 0},
		}},
		{"bounded: beyond Max the oldest record goes", time.Minute, 2, []step{
			{op: "add", name: "x", v: "x/1", chs: []string{"a"}, routes: "a:x/1 b:- c:-", records: 1},
			{op: "add", name: "y", v: "y/1", chs: []string{"b"}, ms: 1, routes: "a:x/1 b:y/1 c:-", records: 2},
			{op: "add", name: "z", v: "z/1", chs: []string{"c"}, ms: 2, routes: "a:- b:y/1 c:z/1", records: 2},
			// a merge of an existing record never evicts another
			{op: "add", name: "y", v: "y/2", chs: []string{"a"}, ms: 3, routes: "a:y/2 b:y/2 c:z/1", records: 2},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFailedRoutes[string](tc.ttl, tc.max)
			for i, s := range tc.steps {
				now := at(s.ms)
				var ret string
				switch s.op {
				case "add":
					f.Add(s.name, s.v, s.chs, now)
				case "remove":
					ret = fmt.Sprint(f.Remove(s.name))
				case "expire":
					names := f.Expire(now)
					slices.Sort(names)
					ret = strings.Join(names, ",")
				}
				if ret != s.ret {
					t.Fatalf("step %d %s %s: returned %q, want %q", i, s.op, s.name, ret, s.ret)
				}
				if got := fmtFailedRoutes(f, "a", "b", "c"); got != s.routes {
					t.Fatalf("step %d %s %s: routes %q, want %q", i, s.op, s.name, got, s.routes)
				}
				if f.Len() != s.records {
					t.Fatalf("step %d %s %s: %d records, want %d", i, s.op, s.name, f.Len(), s.records)
				}
			}
		})
	}
}

func TestFailedRouteSliceStableAfterChange(t *testing.T) {
	f := NewFailedRoutes[string](time.Minute, 8)
	f.Add("x", "x", []string{"a"}, t0)
	f.Add("y", "y", []string{"a"}, t0)
	r := f.Route("a")
	f.Remove("x")
	f.Add("z", "z", []string{"a"}, t0)
	if got := strings.Join(r, ","); got != "x,y" {
		t.Fatalf("a route slice handed out changed: %q", got)
	}
}

// TestLinkMemoContinuesSequence: a peer removed and added again (same Serf name) continues the
// sender's link (epoch, sequence, retransmission window) and the receiver's expectations;
// another name starts afresh. What its queue held when it was removed, and what is routed to it
// while it is away, is numbered into the window (kept for its return), never dropped.
func TestLinkMemoContinuesSequence(t *testing.T) {
	m, err := New(Config{Name: "me", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mi := memberInfo{serfName: "x-1", logical: "x", inc: "1"}
	p := m.newPeer(mi)
	close(p.done) // no supervisor
	for range 10 {
		p.enqueue(publication{"c", []byte("d"), nil})
	}
	if _, first, _ := p.take(make([]publication, 0, 4), time.Now().UnixNano()); first != 1 {
		t.Fatalf("first batch starts at %d", first)
	}
	// BatchMax defaults to 256: the whole queue went; queue 3 more that will never be sent live.
	for range 3 {
		p.enqueue(publication{"c", []byte("d"), nil})
	}
	p.rx = rxLink{epoch: 77, expect: 5, known: 4}
	p.closeQueue() // removePeer
	m.retirePeer(p, false)
	p.enqueue(publication{"c", []byte("d"), nil}) // routed just before the removal, enqueued just after
	p.retain(publication{"c", []byte("d"), nil})  // through the failed routes while it is away
	if p.dropped.Load() != 0 || p.tx.state().seq != 15 {
		t.Fatalf("removed peer: dropped %d, numbered %d; want 0 and 15", p.dropped.Load(), p.tx.state().seq)
	}
	if pb, ok := p.tx.win.get(11); !ok || pb.channel != "c" || string(pb.data) != "d" {
		t.Fatal("what the queue held at removal is not in the window")
	}
	if ep, last, ok := p.tx.tail(time.Now().UnixNano()); !ok || ep != p.tx.epoch || last != 15 {
		t.Fatalf("a link with unsent publications announces tail %d/%v, want 15", last, ok)
	}

	q := m.newPeer(mi)
	if q.tx != p.tx || q.rx.epoch != 77 || q.rx.expect != 5 {
		t.Fatalf("re-added peer: new send link %v, receive state %+v", q.tx != p.tx, q.rx)
	}
	q.enqueue(publication{"c", []byte("d"), nil})
	if _, first, _ := q.take(nil, time.Now().UnixNano()); first != 16 {
		t.Fatalf("re-added peer's first batch starts at %d, want 16", first)
	}
	if r := m.newPeer(mi); r.tx == p.tx || r.rx.epoch != 0 {
		t.Fatal("a memo is used once")
	}
	if o := m.newPeer(memberInfo{serfName: "x-2", logical: "x", inc: "2"}); o.tx.state().seq != 0 || o.tx.epoch == p.tx.epoch {
		t.Fatal("another incarnation must start a fresh sequence")
	}
}

// TestReceiveGapsAcrossEpochs: the receiver's accounting for batches of one sender, step by step
// (epoch, first_seq, count) → publications delivered and, once the link is removed with its
// repairs unanswered (no origin here), gaps.
func TestReceiveGapsAcrossEpochs(t *testing.T) {
	type batch struct {
		epoch, first uint64
		n            int
	}
	cases := []struct {
		name           string
		batches        []batch
		gaps, received uint64
	}{
		{"contiguous", []batch{{5, 1, 3}, {5, 4, 2}}, 0, 5},
		{"a lost batch is a gap", []batch{{5, 1, 3}, {5, 7, 2}}, 3, 5},
		{"duplicates are skipped", []batch{{5, 1, 3}, {5, 2, 3}}, 0, 4},
		// the sender continued its sequence after removing and re-adding us: what was in flight
		// when it declared us failed is counted
		{"continued epoch after a re-link counts what was in flight", []batch{{5, 1, 10}, {5, 31, 5}}, 20, 15},
		// a sender that forgot us starts a new epoch at 1: nothing is counted, nothing skipped
		{"new epoch restarts at 1", []batch{{5, 1, 10}, {9, 1, 5}}, 0, 15},
		// the first batch we ever see of an epoch that started before: what we missed of it
		{"first sight of an epoch mid-sequence", []batch{{5, 4, 2}}, 3, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(Config{Name: "me", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			p := m.newPeer(memberInfo{serfName: "x-1", logical: "x", inc: "1"})
			for _, b := range tc.batches {
				mb := &meshpb.Batch{Epoch: b.epoch, FirstSeq: b.first}
				for i := range b.n {
					mb.Publications = append(mb.Publications, &meshpb.Publication{Channel: "c", Data: []byte{byte(i)}})
				}
				p.receiveBatch(mb)
			}
			p.rx.flush(rxOut{p})
			if p.gaps.Load() != tc.gaps || p.received.Load() != tc.received {
				t.Fatalf("gaps %d received %d, want %d and %d", p.gaps.Load(), p.received.Load(), tc.gaps, tc.received)
			}
		})
	}
}

// TestReplacedPeerCountsWhatItOwed: an origin replaced by a new incarnation (it restarted)
// owed us what its heartbeat tail announced beyond what we had: that is lost, counted as
// restarted, when the old incarnation's link is retired; publications that waited behind the
// gap are delivered first, in order.
func TestReplacedPeerCountsWhatItOwed(t *testing.T) {
	var got []string
	m, err := New(Config{Name: "me", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Logger: testLogger(),
		Deliver: func(_ string, data, _ []byte) { got = append(got, string(data)) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.table.AddLocal("c")
	p := m.newPeer(memberInfo{serfName: "x-1", logical: "x", inc: "1"})
	close(p.done)
	// Received 1..4, then 7 (5 and 6 missing, asked for), and the tail says 9 exist.
	p.rx.batch(5, 1, []pubIn{{"c", []byte("1"), nil}, {"c", []byte("2"), nil}, {"c", []byte("3"), nil}, {"c", []byte("4"), nil}}, false, 1, m.rxCfg, rxOut{p})
	p.rx.batch(5, 7, []pubIn{{"c", []byte("7"), nil}}, false, 2, m.rxCfg, rxOut{p})
	p.rx.tail(5, 9, 3, m.rxCfg, rxOut{p})
	m.retirePeer(p, true)
	if want := []string{"1", "2", "3", "4", "7"}; !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	if g := p.gaps.Load(); g != 4 {
		t.Fatalf("gaps %d, want 4 (5 and 6 behind the waiting 7, 8 and 9 announced)", g)
	}
	if n := metricValue(t, m.met.unrepaired.MustCurryWith(prometheus.Labels{"reason": lostRestarted}), "x"); n != 2 {
		t.Fatalf("unrepaired{restarted} %d, want 2 (8 and 9; 5 and 6 were given up when the link went: peer_gone)", n)
	}
}
