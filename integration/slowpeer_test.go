package integration

import (
	"syscall"
	"testing"
	"time"
)

// TestSlowPeerDoesNotSlowOthers (issue 16, scenario 2): three nodes; a probe stream of 400
// publications/s from n2 to 50 subscribers on n1, and a flood of 2,000 × 16 KiB publications/s
// from n2 to one subscriber on n3. Then n3 is slowed but alive: SIGSTOP 1.5 s / SIGCONT 0.25 s
// in a loop. The probe's p99 must stay within max(3×, +50 ms) of its p99 with n3 healthy, with
// nothing lost. Before, zmq4's single PUB writer waited on n3 for everyone: 31 ms → 2,785 ms.
func TestSlowPeerDoesNotSlowOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("about 20 s of load")
	}
	nodes := startCluster(t, 3, "--send-queue", "1GiB", "--publish-rate", "-1")
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	pl := startProbeLoad(t, nodes, 20)
	time.Sleep(2 * time.Second) // warm-up
	h0 := time.Now()
	time.Sleep(6 * time.Second)
	h1 := time.Now()
	// n3 slowed but alive.
	cycle := make(chan struct{})
	go func() {
		defer close(cycle)
		for end := time.Now().Add(7 * time.Second); time.Now().Before(end); {
			n3.Signal(syscall.SIGSTOP)
			time.Sleep(1500 * time.Millisecond)
			n3.Signal(syscall.SIGCONT)
			time.Sleep(250 * time.Millisecond)
		}
	}()
	time.Sleep(250 * time.Millisecond)
	s0 := time.Now()
	time.Sleep(6 * time.Second)
	s1 := time.Now()
	<-cycle
	n3.Signal(syscall.SIGCONT)
	pl.stop()
	healthy, hn := pl.p99(h0, h1)
	slowed, sn := pl.p99(s0, s1)
	slowCuts, _ := n2.Metric("sockmesh_mesh_slow_peers_total", `peer="n3"`)
	t.Logf("probe p99: n3 healthy %v (%d deliveries), n3 slowed %v (%d deliveries); flood delivered on n3: %d; n3 cut as slow by n2: %v times",
		healthy.Round(time.Millisecond), hn, slowed.Round(time.Millisecond), sn, pl.flooded.Load(), slowCuts)
	if bound := max(3*healthy, healthy+50*time.Millisecond); slowed > bound {
		t.Fatalf("probe p99 with n3 slowed is %v, above max(3×, +50 ms) of %v = %v", slowed, healthy, bound)
	}
	if gaps, _ := n1.Metric("sockmesh_mesh_gaps_total", `peer="n2"`); gaps != 0 {
		t.Fatalf("n1 counted %v gaps from n2", gaps)
	}
}
