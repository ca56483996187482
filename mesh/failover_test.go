package mesh

import (
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
	m.retirePeer(p)
}

// TestFailedPeerLossCounted: a partition between n1 and n2, replayed in-process: each side
// declares the other failed, then both link the same incarnations again (the heal). Every
// publication n1 made for n2 is either delivered to n2 or counted, exactly once: as a gap at n2
// (numbered and lost in flight, before n1 noticed) or as a drop at n1 (not sent while n2 was
// away). Publications after the heal are delivered and counted nowhere.
func TestFailedPeerLossCounted(t *testing.T) {
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

	// n1 declares n2 failed: what it publishes for n2 from now on is counted as dropped.
	failPeer(n1.Mesh, p12)
	n1.mu.RLock()
	recorded := n1.failed.Has("n2")
	n1.mu.RUnlock()
	if !recorded {
		t.Fatal("n2 removed as failed but not in n1's failed routes")
	}
	publish(70)
	if d := metricValue(t, n1.met.dropped, "n2"); d < 70 {
		t.Fatalf("n1 counted %d drops for n2 while it was away, want at least 70", d)
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
	dropsAtHeal := metricValue(t, n1.met.dropped, "n2")
	publish(40)
	waitFor(t, 5*time.Second, "publications after the heal", func() bool {
		got := n2.rec.get("to2")
		return len(got) > 0 && got[len(got)-1] == strconv.Itoa(published)
	})

	got := n2.rec.get("to2")
	seen := make(map[string]bool, len(got))
	for _, g := range got {
		if seen[g] {
			t.Fatalf("duplicate delivery of %s", g)
		}
		seen[g] = true
	}
	missed := published - len(got)
	gaps := metricValue(t, n2.met.gaps, "n1")
	drops := metricValue(t, n1.met.dropped, "n2")
	t.Logf("published %d, delivered %d, missed %d: gaps at n2 %d + drops at n1 %d", published, len(got), missed, gaps, drops)
	if int(gaps+drops) != missed {
		t.Fatalf("missed %d publications, counted %d (gaps %d + drops %d)", missed, gaps+drops, gaps, drops)
	}
	if gaps == 0 {
		t.Error("nothing lost in flight was counted as a gap (the cut on n2's side should lose n1's batches)")
	}
	if drops != dropsAtHeal {
		t.Errorf("drops counted after the heal: %d → %d", dropsAtHeal, drops)
	}
	for i := published - 39; i <= published; i++ {
		if !seen[strconv.Itoa(i)] {
			t.Fatalf("publication %d, after the heal, not delivered", i)
		}
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

// TestDeadPeerCountedUntilTTL: a peer that dies (no leave) is counted as dropped while it is
// away, until FailedPeerTTL.
func TestDeadPeerCountedUntilTTL(t *testing.T) {
	n1 := startMesh(t, "n1", nil, func(c *Config) { c.FailedPeerTTL = 3 * time.Second })
	n2 := startMesh(t, "n2", []string{n1.GossipEndpoint()})
	nodes := []*testNode{n1, n2}
	waitFor(t, 10*time.Second, "cluster ready", func() bool { return n1.Ready() && n2.Ready() && len(n1.Status().Peers) == 1 })
	n2.AddInterest("to2")
	waitInterest(t, nodes, "n2", "to2", true)
	n2.Close() // no leave: failed
	waitFor(t, 10*time.Second, "n2 failed on n1", func() bool {
		n1.mu.RLock()
		defer n1.mu.RUnlock()
		return n1.failed.Has("n2")
	})
	for range 10 {
		n1.Publish("to2", []byte("x"))
	}
	if d := metricValue(t, n1.met.dropped, "n2"); d != 10 {
		t.Fatalf("%d drops for the dead peer, want 10", d)
	}
	waitFor(t, 6*time.Second, "failed route expired", func() bool {
		n1.mu.RLock()
		defer n1.mu.RUnlock()
		return n1.failed.Len() == 0
	})
	n1.Publish("to2", []byte("x"))
	if d := metricValue(t, n1.met.dropped, "n2"); d != 10 {
		t.Fatalf("counted after the TTL: %d drops", d)
	}
}
