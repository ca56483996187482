package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/integration/harness"
)

// A node whose seed is not up yet keeps retrying and joins once it is; the first address of
// the seed list may be dead for good.
func TestJoinRetriesDeadSeeds(t *testing.T) {
	n1 := harness.NewNode(t, "n1")
	dead := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t, true))
	n2 := harness.NewNode(t, "n2", "--join", dead+","+n1.GossipAddr)
	n2.Start()                         // neither seed answers yet
	time.Sleep(300 * time.Millisecond) // let n2 fail at least one attempt
	if v, err := view(n2); err != nil || len(v.Members) != 1 {
		t.Fatalf("n2 should be alone before n1 starts: %+v %v", v, err)
	}
	n1.Start()
	waitConverged(t, []*harness.Node{n1, n2})
}

// A second live process with a logical name already alive in the cluster is refused with a
// clear error and exits; the original keeps its name.
func TestDuplicateNameRefused(t *testing.T) {
	nodes := startCluster(t, 2)
	dup := harness.NewNode(t, "n2", "--join", nodes[0].GossipAddr)
	dup.Launch()
	harness.Eventually(t, 15*time.Second, "duplicate exits", func() error {
		if !dup.Exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	t.Logf("duplicate's log:\n%s", dup.Log())
	if !strings.Contains(dup.Log(), "n2") || !strings.Contains(strings.ToLower(dup.Log()), "name") {
		t.Fatalf("exit without a clear error naming the conflict:\n%s", dup.Log())
	}
	waitConverged(t, nodes)
}

// 50 join/leave cycles of a peer leave no goroutines, sockets or interest behind on the
// node that stays.
func TestJoinLeaveCyclesLeaveNothingBehind(t *testing.T) {
	if testing.Short() {
		t.Skip("50 cycles")
	}
	n1 := harness.NewNode(t, "n1")
	n1.Start()
	sub := dial(t, n1.URL())
	if err := sub.Subscribe(context.Background(), "stay", (&collector{}).handler); err != nil {
		t.Fatal(err)
	}
	baseline := func() (g, fds float64) {
		g, _ = n1.Metric("go_goroutines")
		fds, _ = n1.Metric("process_open_fds")
		return
	}
	// One cycle first, so lazily started pieces (the PUB socket's writer, Serf's pools) count
	// in the baseline.
	cycle := func(i int, graceful bool) {
		p := harness.NewNode(t, "peer", "--join", n1.GossipAddr, "--drain-duration", "10ms")
		p.Start()
		c := dial(t, p.URL())
		ch := fmt.Sprintf("cycle-%d", i)
		if err := c.Subscribe(context.Background(), ch, (&collector{}).handler); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, 10*time.Second, "peer linked and its interest known", func() error {
			v, err := view(n1)
			if err != nil {
				return err
			}
			for _, pr := range v.Peers {
				if pr.Name == "peer" && pr.Link == "up" && pr.Channels == 1 {
					return nil
				}
			}
			return fmt.Errorf("n1 peers: %+v", v.Peers)
		})
		c.Close()
		if graceful {
			if err := p.Stop(10 * time.Second); err != nil {
				t.Fatal(err)
			}
		} else {
			p.Kill()
		}
	}
	waitGone := func() {
		harness.Eventually(t, 20*time.Second, "n1 forgets the peer", func() error {
			v, err := view(n1)
			if err != nil {
				return err
			}
			if len(v.Peers) != 0 {
				return fmt.Errorf("n1 still has links: %+v", v.Peers)
			}
			return nil
		})
	}
	cycle(0, true)
	waitGone()
	g0, fd0 := baseline()
	for i := 1; i <= 50; i++ {
		cycle(i, i%2 == 0) // alternate SIGTERM (leave) and kill -9 (failure)
	}
	waitGone()
	var g1, fd1 float64
	harness.Eventually(t, 15*time.Second, "goroutines and fds back to baseline", func() error {
		g1, fd1 = baseline()
		if g1 > g0+5 || fd1 > fd0+3 {
			return fmt.Errorf("goroutines %v → %v, fds %v → %v", g0, g1, fd0, fd1)
		}
		return nil
	})
	t.Logf("after 50 join/leave cycles: goroutines %v → %v, open fds %v → %v", g0, g1, fd0, fd1)
}
