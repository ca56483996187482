package chaos

import (
	"fmt"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/integration/chaos/checker"
	"github.com/sockmesh/sockmesh/integration/chaos/netns"
	"github.com/sockmesh/sockmesh/integration/harness"
)

// PartRate: publications per second per publisher in the 5-node partition scenarios.
const PartRate = 80

// startNetnsCluster starts size nodes, each in its own network namespace on one bridge.
func startNetnsCluster(t *testing.T, size int) (*cluster, *netns.Net) {
	t.Helper()
	nw := netns.New(t, size)
	t.Logf("namespaces %v on %s.0/24 (hub %s, test process at %s)", nw.NS, nw.Subnet, nw.Hub, nw.HostIP)
	c := &cluster{t: t}
	for i := 0; i < size; i++ {
		n := harness.NewNodeAt(t, fmt.Sprintf("n%d", i+1), nw.IP(i), 8000, "--drain-duration", DrainDuration.String())
		n.Wrap = nw.Wrap(i)
		if i > 0 {
			n.Args = append(n.Args, "--join", c.nodes[0].GossipAddr)
		}
		n.Start()
		c.nodes = append(c.nodes, n)
	}
	c.waitConverged(ConvergeBound, c.names()...)
	return c, nw
}

// Scenario 4: 5 nodes in their own namespaces; a two-way partition {n1,n2} | {n3,n4,n5}
// for partitionFor(), proved first, then healed; then (full profile) a one-way partition.
func TestPartition(t *testing.T) {
	c, nw := startNetnsCluster(t, 5)
	a, b := []int{0, 1}, []int{2, 3, 4}
	partitionPhase(t, c, nw, a, b, false)
	if full {
		partitionPhase(t, c, nw, a, b, true)
	}
}

func names(c *cluster, idx []int) []string {
	var s []string
	for _, i := range idx {
		s = append(s, c.nodes[i].Name)
	}
	return s
}

func set(s []string) map[string]bool {
	m := map[string]bool{}
	for _, x := range s {
		m[x] = true
	}
	return m
}

func partitionPhase(t *testing.T, c *cluster, nw *netns.Net, a, b []int, oneWay bool) {
	name := "4a partition 2/3 (5 nodes, netns)"
	if oneWay {
		name = "4b one-way partition 2→3 (5 nodes, netns)"
	}
	var sc *scenario
	t.Run(map[bool]string{false: "two-way", true: "one-way"}[oneWay], func(t *testing.T) {
		sc = newScenario(t, name)
		sideA, sideB := names(c, a), names(c, b)
		l := newLoad(t, c)
		for _, n := range c.nodes {
			l.subscribe("sub-"+n.Name, n.Name, "c0")
		}
		for _, n := range c.nodes {
			nm := n.Name
			harness.Eventually(t, 10*time.Second, nm+"'s interest known", func() error { return c.wantedErr(nm, 1, c.names()...) })
		}
		for _, n := range c.nodes {
			l.publish("pub-"+n.Name, n.Name, PartRate, PubPad, "c0")
		}
		l.expectAll()
		tr := newMetricsTracker(func() []*harness.Node { return c.nodes })
		waitSent(t, l, 2*time.Second)

		// Before: TCP and UDP cross freely.
		if !nw.TCPReach(a[0], c.nodes[b[0]].GossipAddr, 2*time.Second) || !nw.UDPReach(a[0], b[0], 9999, 3*time.Second) {
			t.Fatal("before the partition: n1 cannot reach n3 (TCP or UDP)")
		}
		cut := time.Now()
		f := l.rec.AddFault(&checker.Fault{Name: name, Start: cut.Add(-InFlightSlack), Settle: FaultSettle, Crosses: checker.SplitFault(sideA, sideB)})
		if err := nw.Block(a, b); err != nil {
			t.Fatal(err)
		}
		if !oneWay {
			if err := nw.Block(b, a); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() { nw.Heal() })

		// Prove the partition: probes blocked in the cut direction(s), the kernel counts
		// drops, mesh counters across stop, and each side sees the other not alive.
		proof := time.Now()
		var perr error
		if nw.TCPReach(a[0], c.nodes[b[0]].GossipAddr, time.Second) {
			perr = fmt.Errorf("TCP n1→n3 still connects")
		} else if nw.UDPReach(a[0], b[0], 9998, 2*time.Second) {
			perr = fmt.Errorf("UDP n1→n3 still arrives")
		} else if !oneWay && nw.TCPReach(b[0], c.nodes[a[0]].GossipAddr, time.Second) {
			perr = fmt.Errorf("TCP n3→n1 still connects")
		} else if oneWay && !nw.UDPReach(b[0], a[0], 9997, 2*time.Second) {
			// One-way: a TCP probe n3→n1 fails too (its SYN-ACK is dropped); UDP shows the open direction.
			perr = fmt.Errorf("one-way partition also cuts n3→n1 UDP")
		}
		if perr == nil {
			perr = harness.Poll(PartitionProofBound, func() error {
				droppers := append(append([]int{}, a...), b...)
				if oneWay { // A's packets die in A's OUTPUT chain; B's INPUT rules never see them
					droppers = a
				}
				for _, i := range droppers {
					if d, err := nw.Dropped(i); err != nil || d == 0 {
						return fmt.Errorf("%s: no packet dropped yet (%v)", nw.NS[i], err)
					}
				}
				for _, x := range sideA {
					for _, y := range sideB {
						if err := c.failedErr(y, x); err != nil {
							return err
						}
						if !oneWay {
							if err := c.failedErr(x, y); err != nil {
								return err
							}
						}
					}
				}
				return nil
			})
		}
		sc.bound("partition proven: probes dropped, sides see each other failed (PartitionProofBound)", PartitionProofBound, time.Since(proof).Round(time.Millisecond), perr == nil)
		if perr != nil {
			t.Fatalf("the partition does not stop traffic: %v", perr)
		}
		rx := func() uint64 { // what n3 received from n1, per /cluster (0 when no link)
			v, _ := view(c.nodes[b[0]])
			for _, p := range v.Peers {
				if p.Name == sideA[0] {
					return p.Received
				}
			}
			return 0
		}
		r0 := rx()
		waitSent(t, l, partitionFor()-time.Since(cut))
		if r1 := rx(); r1 > r0 {
			t.Errorf("n3 received %d publications from n1 during the partition", r1-r0)
		}
		heal := time.Now()
		if err := nw.Heal(); err != nil {
			t.Fatal(err)
		}
		// The fault lasts until the cluster is one again (measured below against HealBound):
		// until Serf re-merges the sides and interest is re-synced, cross-side publications
		// cannot be delivered. FaultSettle then applies after that.
		f.End = heal.Add(HealBound)
		// While the sides re-merge, gossip carries each side's stale view of the other, and a
		// node may for a moment take a peer of its own side for failed (its link is then
		// recycled). Losses on any path are allowed during the re-merge — they must still be
		// detected (gaps or drops), which the checker enforces separately.
		remerge := l.rec.AddFault(&checker.Fault{Name: name + " (re-merge)", Start: heal, End: heal.Add(HealBound), Settle: FaultSettle})
		// Each side kept working inside during the partition.
		for _, side := range [][]string{sideA, sideB} {
			exp, got := l.rec.DeliveredBetween(cut, heal, set(side), set(side))
			sc.bound(fmt.Sprintf("delivery inside %v during the cut", side), "= 100%", fmt.Sprintf("%d/%d", got, exp), exp > 0 && got == exp)
		}
		// After the heal: one cluster, interest re-synced, cross-side delivery.
		err := harness.Poll(HealBound, func() error {
			if err := c.convergedErr(c.names()...); err != nil {
				return err
			}
			for _, n := range c.nodes {
				if err := c.wantedErr(n.Name, 1, c.names()...); err != nil {
					return err
				}
			}
			for _, pair := range [][2]string{{sideA[0], sideB[0]}, {sideB[0], sideA[0]}} {
				s := l.subs["sub-"+pair[1]]
				if last, ok := s.Last("pub-" + pair[0]); !ok || !sentAfter(l.pubs["pub-"+pair[0]].Pub, last, heal) {
					return fmt.Errorf("no delivery %s→%s since the heal", pair[0], pair[1])
				}
			}
			return nil
		})
		if err == nil {
			f.End = time.Now()
			remerge.End = f.End
		}
		sc.bound("heal: one cluster, interest synced, cross-side delivery (HealBound)", HealBound, time.Since(heal).Round(time.Millisecond), err == nil)
		if err != nil {
			t.Errorf("after heal: %v", err)
		}
		waitSent(t, l, 2*time.Second)
		end := l.stopPublishing()
		l.waitDelivered(end, DeliverTailBound)
		tr.finish(c.nodes)
		sc.repairedAll(sc.account(l, end, tr))
	})
}

// sentAfter reports whether publisher p's sequence seq was sent after t.
func sentAfter(p *checker.Pub, seq int64, t time.Time) bool {
	return p.SentAt(seq).After(t)
}
