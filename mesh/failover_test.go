package mesh

import (
	"github.com/sockmesh/sockmesh/proto/meshpb"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// metricValue reads one peer's series of a counter vector (the peer label outlives the peer
// objects, like the metrics the chaos checker reads).
func metricValue(t *testing.T, vec *prometheus.CounterVec, peer string) uint64 {
	t.Helper()
	var out dto.Metric
	if err := vec.WithLabelValues(peer).Write(&out); err != nil {
		t.Fatal(err)
	}
	return uint64(out.GetCounter().GetValue())
}

// failPeer removes p from m the way reconcile does when gossip declares p failed.
func failPeer(m *Mesh, p *peer) {
	m.mu.Lock()
	m.removePeer(p, true, time.Now())
	m.mu.Unlock()
	m.retirePeer(p, false)
}

// TestFailedPeerLossRepaired: a partition between n1 and n2, replayed in-process: each side
// declares the other failed, then both link the same incarnations again (the heal). Every
// publication n1 made for n2 reaches n2 exactly once and in order: those lost in flight (n2 cut
// its side first) and those n1 numbered while n2 was away come back by retransmission when n2's
// link returns and asks; nothing is counted as lost or dropped.
func TestFailedPeerLossRepaired(t *testing.T) {
	nodes := startCluster(t, 2)
	n1, n2 := nodes[0], nodes[1]
	n2.AddInterest("to2")
	waitInterest(t, nodes, "n2", "to2", true)

	published := 0
	publish := func(n int) {
		for range n {
			published++
			n1.Publish("to2", []byte(strconv.Itoa(published)))
		}
	}
	publish(100)
	waitFor(t, 5*time.Second, "before the cut", func() bool { return n2.rec.count("to2") == 100 })

	// The cut, seen first by n2: its link from n1 is closed, so whatever n1 still sends is lost
	// in flight (numbered, never received).
	n2.mu.Lock()
	p21 := n2.peers[n1.self]
	n2.mu.Unlock()
	failPeer(n2.Mesh, p21)
	n1.mu.RLock()
	p12 := n1.peers[n2.self]
	n1.mu.RUnlock()
	publish(50)
	waitFor(t, 5*time.Second, "in-flight batches handed to the PUB socket", func() bool { return p12.sent.Load() == 150 })

	// n1 declares n2 failed: what it publishes for n2 from now on is numbered and kept.
	failPeer(n1.Mesh, p12)
	n1.mu.RLock()
	recorded := n1.failed.Has("n2")
	n1.mu.RUnlock()
	if !recorded {
		t.Fatal("n2 removed as failed but not in n1's failed routes")
	}
	publish(70)
	if st := p12.tx.state(); st.seq != 220 || p12.tx.win.n != 220 {
		t.Fatalf("n1's link to n2 while n2 is away: numbered %d, retained %d; want 220, 220", st.seq, p12.tx.win.n)
	}

	// The heal: both link the same incarnations again.
	n1.reconcile()
	n2.reconcile()
	waitFor(t, 10*time.Second, "links and interest back", func() bool {
		return peerWants(n1.Mesh, "n2", "to2") && n1.Ready() && n2.Ready()
	})
	n1.mu.RLock()
	recorded = n1.failed.Has("n2")
	n1.mu.RUnlock()
	if recorded {
		t.Fatal("n2 in sync again but still in n1's failed routes")
	}
	publish(40)
	waitFor(t, 10*time.Second, "every publication", func() bool { return n2.rec.count("to2") >= published })
	time.Sleep(300 * time.Millisecond) // anything extra (a duplicate) would arrive by now

	got := n2.rec.get("to2")
	for i, g := range got {
		if g != strconv.Itoa(i+1) {
			t.Fatalf("delivery %d is %s: want 1..%d exactly once, in order (got %d)", i, g, published, len(got))
		}
	}
	if len(got) != published {
		t.Fatalf("delivered %d, want %d", len(got), published)
	}
	gaps := metricValue(t, n2.met.gaps, "n1")
	drops := metricValue(t, n1.met.dropped, "n2")
	repaired := metricValue(t, n2.met.repaired, "n1")
	retx := metricValue(t, n1.met.retransmitted, "n2")
	t.Logf("published %d, delivered %d: repaired %d (retransmitted %d), gaps %d, drops %d", published, len(got), repaired, retx, gaps, drops)
	if gaps != 0 || drops != 0 {
		t.Fatalf("counted as lost: gaps %d, drops %d", gaps, drops)
	}
	if repaired != 120 {
		t.Fatalf("repaired %d, want the 50 lost in flight and the 70 kept while away", repaired)
	}
}

// TestLeftPeerNotCountedAsFailed: a peer that leaves gracefully leaves no failed route: nothing
// published afterwards counts as dropped for it.
func TestLeftPeerNotCountedAsFailed(t *testing.T) {
	nodes := startCluster(t, 2)
	n1, n2 := nodes[0], nodes[1]
	n2.AddInterest("to2")
	waitInterest(t, nodes, "n2", "to2", true)
	if err := n2.Leave(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "n2 gone from n1", func() bool { return len(n1.Status().Peers) == 0 })
	for range 10 {
		n1.Publish("to2", []byte("x"))
	}
	n1.mu.RLock()
	n := n1.failed.Len()
	n1.mu.RUnlock()
	if n != 0 || metricValue(t, n1.met.dropped, "n2") != 0 {
		t.Fatalf("a peer that left is counted as failed: %d records, %d drops", n, metricValue(t, n1.met.dropped, "n2"))
	}
}

// TestDeadPeerRetainedUntilTTL: a peer that dies (no leave) has what it wanted numbered and kept
// (bounded by the window) while it is away, until FailedPeerTTL; nothing is counted as dropped
// (if it never returns, its clients were disconnected).
func TestDeadPeerRetainedUntilTTL(t *testing.T) {
	n1 := startMesh(t, "n1", nil, func(c *Config) { c.FailedPeerTTL = 3 * time.Second })
	n2 := startMesh(t, "n2", []string{n1.GossipEndpoint()})
	nodes := []*testNode{n1, n2}
	waitFor(t, 10*time.Second, "cluster ready", func() bool { return n1.Ready() && n2.Ready() && len(n1.Status().Peers) == 1 })
	n2.AddInterest("to2")
	waitInterest(t, nodes, "n2", "to2", true)
	n1.mu.RLock()
	p := n1.peers[n2.self]
	n1.mu.RUnlock()
	n2.Close() // no leave: failed
	waitFor(t, 10*time.Second, "n2 failed on n1", func() bool {
		n1.mu.RLock()
		defer n1.mu.RUnlock()
		return n1.failed.Has("n2")
	})
	for range 10 {
		n1.Publish("to2", []byte("x"))
	}
	if st := p.tx.state(); st.seq != 10 || metricValue(t, n1.met.dropped, "n2") != 0 {
		t.Fatalf("for the dead peer: numbered %d, dropped %d; want 10 kept, 0 dropped", st.seq, metricValue(t, n1.met.dropped, "n2"))
	}
	waitFor(t, 6*time.Second, "failed route expired", func() bool {
		n1.mu.RLock()
		defer n1.mu.RUnlock()
		return n1.failed.Len() == 0
	})
	n1.Publish("to2", []byte("x"))
	if st := p.tx.state(); st.seq != 10 {
		t.Fatalf("numbered after the TTL: %d", st.seq)
	}
}

// TestFailedRecordOverlapNumbersOnce: a peer back from failure can be routed by the table
// (its interest is known again) while its failed record has not ended yet (it does when the
// peer counts as in sync). A publication in that moment must be numbered once on the link, not
// once live and once for the record: both would be delivered (the second by repair), a
// duplicate for every subscriber.
func TestFailedRecordOverlapNumbersOnce(t *testing.T) {
	nodes := startCluster(t, 2)
	n1, n2 := nodes[0], nodes[1]
	n2.AddInterest("to2")
	waitInterest(t, nodes, "n2", "to2", true)
	for i := range 5 {
		n1.Publish("to2", []byte("before"+strconv.Itoa(i)))
	}
	waitFor(t, 5*time.Second, "5 delivered", func() bool { return n2.rec.count("to2") == 5 })
	n1.mu.RLock()
	p := n1.peers[n2.self]
	n1.mu.RUnlock()
	failPeer(n1.Mesh, p)
	n1.reconcile()
	waitFor(t, 10*time.Second, "n2 routed again", func() bool { return peerWants(n1.Mesh, "n2", "to2") && n1.Ready() })
	n1.mu.RLock()
	same := n1.peers[n2.self].tx == p.tx
	n1.mu.RUnlock()
	if !same {
		t.Fatal("the same incarnation linked again has a new send link")
	}
	// The overlap, made to last: the record of the old peer object (same incarnation, same
	// send link) is still there while the table routes to the new one.
	n1.mu.Lock()
	n1.failed.Add("n2", p, []string{"to2"}, time.Now())
	n1.mu.Unlock()
	for i := range 20 {
		n1.Publish("to2", []byte(strconv.Itoa(i)))
	}
	waitFor(t, 5*time.Second, "25 delivered", func() bool { return n2.rec.count("to2") >= 25 })
	time.Sleep(500 * time.Millisecond) // a second copy would arrive by repair within this
	if got := n2.rec.get("to2"); len(got) != 25 {
		t.Fatalf("delivered %d publications for 25 published: %v", len(got), got)
	}
}

// TestRepairRequestFloodCostsOthersNothing: a member floods the origin with 20,000 requests for
// everything (from 1 to 2^64-1) while the origin streams to another peer: the other stream
// arrives whole, with no gap, and the flooding member gets the window once plus at most once
// per rewindEvery (requests merge into the running job), not a copy per request (before: 37
// copies in about a second).
func TestRepairRequestFloodCostsOthersNothing(t *testing.T) {
	nodes := startCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n2.AddInterest("to2")
	n3.AddInterest("to3")
	waitInterest(t, nodes, "n2", "to2", true)
	waitInterest(t, nodes, "n3", "to3", true)
	for i := range 1000 {
		n1.Publish("to3", []byte(strconv.Itoa(i))) // n1's window for n3: 1,000 publications
	}
	waitFor(t, 5*time.Second, "n3 has its 1,000", func() bool { return n3.rec.count("to3") == 1000 })
	n3.mu.RLock()
	p31 := n3.peers[n1.self]
	n3.mu.RUnlock()
	n1.mu.RLock()
	p13 := n1.peers[n3.self]
	n1.mu.RUnlock()
	epoch := p13.tx.epoch
	done := make(chan struct{})
	floodStart := time.Now()
	var flood time.Duration
	go func() {
		defer close(done)
		defer func() { flood = time.Since(floodStart) }()
		for range 20_000 {
			n3.sendControl(p31.mailboxB, &meshpb.Envelope{Target: n1.self, Body: &meshpb.Envelope_RepairRequest{
				RepairRequest: &meshpb.RepairRequest{Epoch: epoch, From: 1, To: ^uint64(0)}}})
		}
	}()
	for i := range 5000 {
		n1.Publish("to2", []byte(strconv.Itoa(i)))
		if i%100 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	<-done
	waitFor(t, 10*time.Second, "n2 has all 5,000", func() bool { return n2.rec.count("to2") >= 5000 })
	if g := metricValue(t, n2.met.gaps, "n1"); g != 0 {
		t.Fatalf("n2 counted %d gaps from n1 during the flood", g)
	}
	time.Sleep(500 * time.Millisecond)
	retx := metricValue(t, n1.met.retransmitted, "n3")
	// One pass for the first request, then at most one more per rewindEvery while requests
	// are handled (they may still be queued after the sender is done).
	bound := uint64(1000 * (2 + int(time.Since(floodStart)/rewindEvery)))
	t.Logf("20,000 requests for everything in %v: n1 retransmitted %d publications to n3 (window 1,000; bound %d)", flood.Round(time.Millisecond), retx, bound)
	if retx > bound {
		t.Fatalf("n1 retransmitted %d publications for 20,000 requests over a window of 1,000 in %v (bound %d)", retx, flood, bound)
	}
	if n3.rec.count("to3") != 1000 {
		t.Fatalf("n3 delivered %d to its clients, want its 1,000 once (the rest are duplicates)", n3.rec.count("to3"))
	}
}
