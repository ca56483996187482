package chaos

import (
	"fmt"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/integration/chaos/checker"
	"github.com/sockmesh/sockmesh/integration/harness"
)

// InFlightSlack: a fault window opens this long before the fault, for publications still in
// flight when it hits.
const InFlightSlack = 1 * time.Second

// Load rates of the 3-node scenarios.
const (
	PubRate = 150 // publications per second per publisher
	PubPad  = 64  // payload padding bytes
)

var chans = []string{"c0", "c1"}

// standardLoad: on every node two Go subscribers (one on both channels, one on c0) and one
// publisher; every client fails over along the node list. Waits until every node's interest
// is known everywhere, then expects from now.
func standardLoad(t *testing.T, c *cluster, l *load) {
	t.Helper()
	for _, n := range c.nodes {
		l.subscribe("sub-"+n.Name+"-a", n.Name, chans...)
		l.subscribe("sub-"+n.Name+"-b", n.Name, "c0")
	}
	for _, n := range c.nodes {
		name := n.Name
		harness.Eventually(t, 10*time.Second, name+"'s interest known", func() error { return c.wantedErr(name, len(chans), c.names()...) })
	}
	for _, n := range c.nodes {
		l.publish("pub-"+n.Name, n.Name, PubRate, PubPad, chans...)
	}
}

// Recovery settings of the scenarios with recovering subscribers: the load's channels recover,
// and each keeps enough for the longest a client is away (the load is 225 publications per
// second per channel; a killed node's clients are back within ClientRecoverBound, a drained
// node's within DrainDuration more).
var recoverArgs = []string{"--recover-channels", "c*", "--recover-messages", "10000", "--recover-age", "1m"}

// recoveringLoad adds, on every node, a subscriber of both channels that resubscribes with its
// position after each reconnect (docs/recovery.md).
func recoveringLoad(c *cluster, l *load) {
	for _, n := range c.nodes {
		l.subscribeRecovering("rsub-"+n.Name, n.Name, chans...)
	}
}

// failedErr: every node in `at` shows `gone` not alive and holds no link from it.
func (c *cluster) failedErr(gone string, at ...string) error {
	for _, name := range at {
		v, err := view(c.byName(name))
		if err != nil {
			return err
		}
		for _, m := range v.Members {
			if m.Name == gone && m.Status == "alive" {
				return fmt.Errorf("%s still sees %s alive", name, gone)
			}
		}
		for _, p := range v.Peers {
			if p.Name == gone {
				return fmt.Errorf("%s still holds a link from %s (%s)", name, gone, p.Link)
			}
		}
	}
	return nil
}

// Scenario 1: kill -9 one of three nodes under load.
func TestKill9(t *testing.T) {
	sc := newScenario(t, "1 kill -9 one of 3")
	c := startLoopbackCluster(t, 3, recoverArgs...)
	l := newLoad(t, c)
	standardLoad(t, c, l)
	recoveringLoad(c, l)
	js := l.jsSubscribe("js-n1", "n1", chans...)
	harness.Eventually(t, 10*time.Second, "js subscriber's interest", func() error { return c.wantedErr("n1", len(chans), c.names()...) })
	l.expectAll()
	for _, ch := range chans {
		js.Expect(ch, time.Now())
	}
	tr := newMetricsTracker(func() []*harness.Node { return c.nodes })
	waitSent(t, l, 2*time.Second)

	victim := c.byName("n3")
	survivors := []string{"n1", "n2"}
	kill := time.Now()
	f := l.rec.AddFault(&checker.Fault{Name: "kill -9 n3", Start: kill.Add(-InFlightSlack), Settle: FaultSettle, Crosses: checker.NodeFault("n3")})
	l.failed = append(l.failed, "n3")
	victim.Kill()

	// Failure detected and link freed on every survivor.
	var detected time.Duration
	err := harness.Poll(FailureDetectBound+10*time.Second, func() error { return c.failedErr("n3", survivors...) })
	detected = time.Since(kill)
	sc.bound("failure detected + link freed (FailureDetectBound)", FailureDetectBound, detected.Round(time.Millisecond), err == nil && detected <= FailureDetectBound)

	// The killed node's clients reconnect elsewhere and receive again.
	var worst time.Duration
	err = harness.Poll(ClientRecoverBound+10*time.Second, func() error {
		worst = 0
		for _, id := range []string{"sub-n3-a", "sub-n3-b"} {
			s := l.subs[id]
			at, ok := s.FirstAfter(kill)
			if !ok || s.Conns.NodeAt(at) == "n3" {
				return fmt.Errorf("%s has not received since the kill", id)
			}
			if d := at.Sub(kill); d > worst {
				worst = d
			}
		}
		return nil
	})
	sc.bound("n3's clients receive again elsewhere (ClientRecoverBound)", ClientRecoverBound, worst.Round(time.Millisecond), err == nil && worst <= ClientRecoverBound)
	f.End = time.Now()
	waitSent(t, l, 2*time.Second)
	end := l.stopPublishing()
	l.waitDelivered(end, DeliverTailBound)
	tr.finish(c.nodes)
	sc.account(l, end, tr)
	sc.recovered(l, end, len(chans)) // rsub-n3 resubscribes both channels elsewhere
	if js.Count() == 0 {
		t.Errorf("socketcluster-client subscriber received nothing")
	}
	sc.note("socketcluster-client subscriber on n1 received %d publications", js.Count())
}

// waitSent lets the load run for d (a phase of the scenario, not an assertion).
func waitSent(t *testing.T, l *load, d time.Duration) {
	t.Helper()
	select {
	case <-time.After(d):
	case <-l.ctx.Done():
	}
}
