package chaos

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/integration/chaos/checker"
	"github.com/sockmesh/sockmesh/integration/harness"
)

// Issue 16 scenarios: a peer that is slow but alive, and hostile bytes on the mesh and gossip
// ports, both under the standard load with exact accounting.

const (
	// SlowPeerFloodRate: publications/s of FloodPad bytes from n1 to a subscriber on the slow n3.
	SlowPeerFloodRate = 1000
	FloodPad          = 16 << 10
	// SlowPeerStop / SlowPeerCont: n3's duty cycle while it is slow.
	SlowPeerStop = 1500 * time.Millisecond
	SlowPeerCont = 250 * time.Millisecond
	// HostileLogLinesMax: log lines a node may write about all the hostile input of the scenario.
	HostileLogLinesMax = 40
	chaosClusterKey    = "c29ja21lc2gtdGVzdC1jbHVzdGVyLWtleS0zMmJ5dGU="
)

func slowFor() time.Duration {
	if full {
		return 20 * time.Second
	}
	return 6 * time.Second
}

// Scenario 9: n3 slowed but alive (duty-cycled SIGSTOP) while n1 floods it: the healthy
// nodes keep their throughput, n3 is cut as a slow peer rather than pacing the others, and
// every loss is on n3's paths and detected.
func TestSlowPeer(t *testing.T) {
	needFull(t)
	sc := newScenario(t, "9 slow peer: n3 duty-cycled SIGSTOP 1.5 s/0.25 s under a 16 MB/s flood")
	c := startLoopbackCluster(t, 3, "--send-queue", "1GiB")
	l := newLoad(t, c)
	standardLoad(t, c, l)
	l.subscribe("sub-n3-flood", "n3", "flood")
	harness.Eventually(t, 10*time.Second, "n3's flood interest known", func() error { return c.wantedErr("n3", len(chans)+1, "n1") })
	l.publish("pub-n1-flood", "n1", SlowPeerFloodRate, FloodPad, "flood")
	l.expectAll()
	tr := newMetricsTracker(func() []*harness.Node { return c.nodes })
	healthy := set([]string{"n1", "n2"})
	w0 := time.Now()
	waitSent(t, l, 3*time.Second)
	w1 := time.Now()
	warmRate := float64(l.rec.SentBetween(w0, w1, healthy)) / w1.Sub(w0).Seconds()
	victim := c.byName("n3")
	start := time.Now()
	f := l.rec.AddFault(&checker.Fault{Name: "n3 slow", Start: start.Add(-InFlightSlack), Settle: FaultSettle, Crosses: checker.NodeFault("n3")})
	for time.Since(start) < slowFor() {
		victim.Signal(syscall.SIGSTOP)
		waitSent(t, l, SlowPeerStop)
		victim.Signal(syscall.SIGCONT)
		waitSent(t, l, SlowPeerCont)
	}
	end := time.Now()
	rate := float64(l.rec.SentBetween(start, end, healthy)) / end.Sub(start).Seconds()
	exp, got := l.rec.DeliveredBetween(start, end, healthy, healthy)
	ratio := min(rate/warmRate, float64(got)/float64(max(exp, 1)))
	sc.bound("healthy publishers' throughput to healthy peers while n3 is slow (FreezeThroughputMin)",
		fmt.Sprintf("≥ %.0f%%", FreezeThroughputMin*100),
		fmt.Sprintf("%.1f%% (rate %.0f/s vs %.0f/s; delivered %d/%d)", ratio*100, rate, warmRate, got, exp), ratio >= FreezeThroughputMin)
	err := harness.Poll(FreezeRecoverBound, func() error { return c.convergedErr(c.names()...) })
	f.End = time.Now()
	sc.bound("n3 back to normal → converged (FreezeRecoverBound)", FreezeRecoverBound, f.End.Sub(end).Round(time.Millisecond), err == nil)
	cuts, _ := c.byName("n1").Metric("sockmesh_mesh_slow_peers_total", `peer="n3"`)
	sc.note("n1 cut n3 as a slow peer %v times", cuts)
	waitSent(t, l, 2*time.Second)
	stop := l.stopPublishing()
	l.waitDelivered(stop, DeliverTailBound)
	tr.finish(c.nodes)
	sc.account(l, stop, tr)
}

// hostileMesh: byte sequences for a mesh port.
func hostileMesh(rng *rand.Rand) [][]byte {
	greet := make([]byte, 64)
	greet[0], greet[9], greet[10] = 0xFF, 0x7F, 3
	copy(greet[12:], "NULL")
	body := append([]byte{5}, "READY"...)
	body = append(body, 11)
	body = append(body, "Socket-Type"...)
	body = binary.BigEndian.AppendUint32(body, 3)
	body = append(body, "SUB"...)
	sub := append(bytes.Clone(greet), append([]byte{0x04, byte(len(body))}, body...)...)
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	return [][]byte{
		append(bytes.Clone(sub), binary.BigEndian.AppendUint64([]byte{0x02}, 1<<40)...), // 73 bytes, 1 TiB
		append(bytes.Clone(sub), binary.BigEndian.AppendUint64([]byte{0x02}, ^uint64(0))...),
		greet[:20],
		random,
		append(bytes.Clone(sub), bytes.Repeat([]byte{0, 4, 'j', 'u', 'n', 'k'}, 40)...),
	}
}

// Scenario 10: hostile bytes on every node's mesh and gossip ports while the cluster carries
// the standard load. No node dies or loses anything; the garbage is counted; the logs stay
// calm.
func TestHostileBytes(t *testing.T) {
	needFull(t)
	for _, keyed := range []bool{false, true} {
		name, extra := "10a hostile bytes on mesh and gossip ports, open mesh", []string(nil)
		if keyed {
			name, extra = "10b hostile bytes on mesh and gossip ports, keyed mesh", []string{"--cluster-key", chaosClusterKey}
		}
		t.Run(fmt.Sprint(keyed), func(t *testing.T) {
			sc := newScenario(t, name)
			c := startLoopbackCluster(t, 3, append(extra, "--log-level", "info")...)
			l := newLoad(t, c)
			standardLoad(t, c, l)
			l.expectAll()
			tr := newMetricsTracker(func() []*harness.Node { return c.nodes })
			waitSent(t, l, 2*time.Second)
			logs0 := map[string]int{}
			for _, n := range c.nodes {
				logs0[n.Name] = len(n.Log())
			}
			rng := rand.New(rand.NewPCG(16, 10))
			rounds := 3
			if full {
				rounds = 10
			}
			for range rounds {
				for _, n := range c.nodes {
					for _, in := range hostileMesh(rng) {
						conn, err := net.Dial("tcp", n.MeshAddr)
						if err != nil {
							t.Fatal(err)
						}
						go func() { _, _ = conn.Write(in) }()
						_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
						got, _ := io.ReadAll(conn)
						conn.Close()
						if keyed && len(got) > 0 {
							t.Errorf("a stranger read %d bytes from keyed %s", len(got), n.Name)
						}
					}
					udp, err := net.Dial("udp", n.GossipAddr)
					if err != nil {
						t.Fatal(err)
					}
					buf := make([]byte, 1200)
					for i := range 1000 {
						k := 1 + rng.IntN(len(buf))
						for j := range k {
							buf[j] = byte(rng.Uint32())
						}
						_, _ = udp.Write(buf[:k])
						if i%50 == 0 {
							time.Sleep(time.Millisecond)
						}
					}
					udp.Close()
					for range 10 {
						if tc, err := net.Dial("tcp", n.GossipAddr); err == nil {
							_, _ = tc.Write(binary.BigEndian.AppendUint32([]byte{9}, ^uint32(0)))
							tc.Close()
						}
					}
				}
				waitSent(t, l, 500*time.Millisecond)
			}
			for _, n := range c.nodes {
				if n.Exited() {
					t.Fatalf("%s died", n.Name)
				}
				rej, _ := n.Metric("sockmesh_mesh_rejected_connections_total")
				gos, _ := n.Metric("sockmesh_mesh_gossip_errors_total")
				lines := 0
				for _, line := range strings.Split(n.Log()[logs0[n.Name]:], "\n") {
					if strings.Contains(line, "connection rejected") || strings.Contains(line, "gossip port") || strings.Contains(line, "memberlist") {
						lines++
					}
				}
				sc.bound(n.Name+": log lines about the hostile input (HostileLogLinesMax)", HostileLogLinesMax,
					fmt.Sprintf("%d (rejected connections %v, gossip errors %v)", lines, rej, gos), lines <= HostileLogLinesMax && rej > 0 && gos > 0)
			}
			if err := c.convergedErr(c.names()...); err != nil {
				t.Errorf("cluster not converged after the hostile input: %v", err)
			}
			waitSent(t, l, time.Second)
			stop := l.stopPublishing()
			l.waitDelivered(stop, DeliverTailBound)
			tr.finish(c.nodes)
			sc.account(l, stop, tr)
		})
	}
}
