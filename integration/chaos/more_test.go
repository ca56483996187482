package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sockmesh/sockmesh/integration/chaos/checker"
	"github.com/sockmesh/sockmesh/integration/harness"
)

// Scenario 2: the node killed with kill -9 restarts under the same name: it rejoins, links
// and interest are restored, and nothing is lost once the cluster is ready again.
func TestKilledNodeRestarts(t *testing.T) {
	needFull(t)
	sc := newScenario(t, "2 killed node restarts, same name")
	c := startLoopbackCluster(t, 3, recoverArgs...)
	l := newLoad(t, c)
	standardLoad(t, c, l)
	recoveringLoad(c, l)
	l.expectAll()
	tr := newMetricsTracker(func() []*harness.Node { return c.nodes })
	waitSent(t, l, time.Second)
	victim := c.byName("n3")
	kill := time.Now()
	f := l.rec.AddFault(&checker.Fault{Name: "kill -9 n3 until ready again", Start: kill.Add(-InFlightSlack), Crosses: checker.NodeFault("n3")})
	l.failed = append(l.failed, "n3")
	victim.Kill()
	harness.Eventually(t, 10*time.Second, "n3 seen failed", func() error { return c.failedErr("n3", "n1", "n2") })
	restart := time.Now()
	tr.forget("n3")
	victim.Start()
	err := harness.Poll(RejoinBound, func() error {
		if err := c.convergedErr(c.names()...); err != nil {
			return err
		}
		for _, n := range []string{"n1", "n2"} {
			if err := c.wantedErr(n, len(chans), "n3"); err != nil {
				return err
			}
		}
		return nil
	})
	ready := time.Now()
	f.End = ready // no settling time: nothing may be lost once ready
	sc.bound("restart → ready, links up, interest synced (RejoinBound)", RejoinBound, ready.Sub(restart).Round(time.Millisecond), err == nil)
	// New clients of the restarted node: its interest reaches the others, its publications reach everyone.
	s := l.subscribe("sub-n3-new", "n3", chans...)
	err = harness.Poll(RejoinBound, func() error { return c.wantedErr("n3", len(chans), c.names()...) })
	live := time.Now()
	sc.bound("new subscription on n3 live cluster-wide (RejoinBound)", RejoinBound, live.Sub(ready).Round(time.Millisecond), err == nil)
	for _, ch := range chans {
		s.Expect(ch, live)
	}
	l.publish("pub-n3-new", "n3", PubRate, PubPad, chans...)
	waitSent(t, l, 3*time.Second)
	end := l.stopPublishing()
	l.waitDelivered(end, DeliverTailBound)
	tr.finish(c.nodes)
	sc.account(l, end, tr)
	sc.recovered(l, end, len(chans)) // rsub-n3 resubscribes both channels elsewhere
}

func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			v, _ := strconv.Atoi(strings.Fields(l)[1])
			return v
		}
	}
	return 0
}

// Scenario 3: SIGSTOP one node, then SIGCONT. 3a (both profiles) and 3b (full) freeze it for
// less than the clients' ping timeout and the origins' retransmission window: every client that
// stayed connected, those of the frozen node included, receives every publication exactly once
// and in order (the mesh repairs what the freeze cut). 3c (full) freezes it past the window: the
// loss is counted as lost beyond the window, never silent, and new publications flow again.
func TestFreeze(t *testing.T) {
	freezeScenario(t, "3a SIGSTOP one of 3 for 5 s, then SIGCONT", 5*time.Second, false)
}

func TestFreezeLong(t *testing.T) {
	needFull(t)
	freezeScenario(t, "3b SIGSTOP one of 3 for 15 s, then SIGCONT", 15*time.Second, false)
}

func TestFreezePastWindow(t *testing.T) {
	needFull(t)
	freezeScenario(t, "3c SIGSTOP one of 3 for 45 s (past the 30 s window), then SIGCONT", 45*time.Second, true)
}

// NewAfterFreezeBound: after SIGCONT, the frozen node's subscribers receive publications made
// after it by another node within this long.
const NewAfterFreezeBound = 2 * time.Second

func freezeScenario(t *testing.T, name string, freeze time.Duration, pastWindow bool) {
	sc := newScenario(t, name)
	c := startLoopbackCluster(t, 3)
	l := newLoad(t, c)
	standardLoad(t, c, l)
	l.expectAll()
	tr := newMetricsTracker(func() []*harness.Node { return c.nodes })
	healthy := set([]string{"n1", "n2"})
	w0 := time.Now()
	waitSent(t, l, 3*time.Second)
	w1 := time.Now()
	warmRate := float64(l.rec.SentBetween(w0, w1, healthy)) / w1.Sub(w0).Seconds()
	rss0 := map[string]int{"n1": rssKiB(c.byName("n1").Pid()), "n2": rssKiB(c.byName("n2").Pid())}
	victim := c.byName("n3")
	stop := time.Now()
	f := l.rec.AddFault(&checker.Fault{Name: "SIGSTOP n3", Start: stop.Add(-InFlightSlack), Settle: FaultSettle, Crosses: checker.NodeFault("n3")})
	victim.Signal(syscall.SIGSTOP)
	maxGrowth := 0
	for time.Since(stop) < freeze {
		waitSent(t, l, 500*time.Millisecond)
		for n, r0 := range rss0 {
			if g := rssKiB(c.byName(n).Pid()) - r0; g > maxGrowth {
				maxGrowth = g
			}
		}
	}
	cont := time.Now()
	victim.Signal(syscall.SIGCONT)
	rate := float64(l.rec.SentBetween(stop, cont, healthy)) / cont.Sub(stop).Seconds()
	exp, got := l.rec.DeliveredBetween(stop, cont, healthy, healthy)
	ratio := min(rate/warmRate, float64(got)/float64(max(exp, 1)))
	sc.bound("healthy publishers' throughput to healthy peers while n3 frozen (FreezeThroughputMin)",
		fmt.Sprintf("≥ %.0f%%", FreezeThroughputMin*100),
		fmt.Sprintf("%.1f%% (rate %.0f/s vs %.0f/s; delivered %d/%d)", ratio*100, rate, warmRate, got, exp), ratio >= FreezeThroughputMin)
	sc.bound("healthy nodes' RSS growth during the freeze (FreezeRSSGrowthMaxKiB)", fmt.Sprintf("%d KiB", FreezeRSSGrowthMaxKiB), fmt.Sprintf("%d KiB", maxGrowth), maxGrowth <= FreezeRSSGrowthMaxKiB)
	// The node delivers new publications again: a client that connects to n3 right after
	// SIGCONT receives n1's. (After a freeze past the clients' ping timeout, n3's own
	// subscribers have failed over; they are followed wherever they are by the checks below.)
	late := l.subscribe("sub-n3-late", "n3", "c0")
	ferr := harness.Poll(FreezeRecoverBound, func() error {
		if last, ok := late.Last("pub-n1"); !ok || !sentAfter(l.pubs["pub-n1"].Pub, last, cont) {
			return fmt.Errorf("a subscriber on n3 has nothing from n1 since SIGCONT")
		}
		return nil
	})
	sc.bound("SIGCONT → a subscriber on n3 receives new publications from n1 (NewAfterFreezeBound)", NewAfterFreezeBound, time.Since(cont).Round(time.Millisecond), ferr == nil && time.Since(cont) <= NewAfterFreezeBound)
	fresh := func() error {
		for _, id := range []string{"sub-n3-a", "sub-n3-b"} {
			if last, ok := l.subs[id].Last("pub-n1"); !ok || !sentAfter(l.pubs["pub-n1"].Pub, last, cont) {
				return fmt.Errorf("%s has nothing from n1 since SIGCONT", id)
			}
		}
		return nil
	}
	err := harness.Poll(FreezeRecoverBound, func() error {
		if err := c.convergedErr(c.names()...); err != nil {
			return err
		}
		if err := fresh(); err != nil {
			return err
		}
		if last, ok := l.subs["sub-n1-a"].Last("pub-n3"); !ok || !sentAfter(l.pubs["pub-n3"].Pub, last, cont) {
			return fmt.Errorf("sub-n1-a has nothing from n3 since SIGCONT")
		}
		return nil
	})
	f.End = time.Now()
	sc.bound("SIGCONT → converged and delivering both ways (FreezeRecoverBound)", FreezeRecoverBound, f.End.Sub(cont).Round(time.Millisecond), err == nil)
	if err != nil {
		t.Errorf("no recovery: %v", err)
	}
	waitSent(t, l, 2*time.Second)
	end := l.stopPublishing()
	l.waitDelivered(end, DeliverTailBound)
	tr.finish(c.nodes)
	cn := sc.account(l, end, tr)
	if !pastWindow {
		sc.repairedAll(cn)
		return
	}
	// n3 asked for more than the window held: the rest is counted as lost beyond it (by n3, per
	// publication it missed), and nothing was lost silently, duplicated or reordered (account).
	sc.bound("past the window: n3 counts what left the window as lost beyond it", "> 0",
		fmt.Sprintf("%d (lost for clients that stayed connected: %d)", sc.r.LostBeyondWindow, cn.Lost-cn.LostTold), sc.r.LostBeyondWindow > 0)
}

// Scenario 5: rolling restart of every node with SIGTERM (drain) under load.
func TestRollingRestart(t *testing.T) {
	needFull(t)
	sc := newScenario(t, "5 rolling restart with SIGTERM (drain)")
	c := startLoopbackCluster(t, 3, recoverArgs...)
	l := newLoad(t, c)
	standardLoad(t, c, l)
	recoveringLoad(c, l)
	// socketcluster-client with the recovery helper reconnects to its own node once it is back:
	// a restarted node that no longer receives the channels, so it asks a peer.
	js := l.jsSubscribeRecovering("js-rec-n1", "n1", chans...)
	harness.Eventually(t, 10*time.Second, "js subscriber's interest", func() error { return c.wantedErr("n1", len(chans), c.names()...) })
	l.expectAll()
	for _, ch := range chans {
		js.Expect(ch, time.Now())
	}
	tr := newMetricsTracker(func() []*harness.Node { return c.nodes })
	waitSent(t, l, 2*time.Second)
	var worstExit, worstMove, worstRejoin time.Duration
	for _, n := range c.nodes {
		name := n.Name
		term := time.Now()
		f := l.rec.AddFault(&checker.Fault{Name: "SIGTERM " + name, Start: term.Add(-InFlightSlack), Settle: FaultSettle, Crosses: checker.NodeFault(name)})
		// Its clients, as of now.
		var moving []*subscriber
		for _, s := range l.subs {
			if s.Conns.Node() == name {
				moving = append(moving, s)
			}
		}
		if err := n.Stop(DrainExitBound); err != nil {
			t.Errorf("%s after SIGTERM: %v (want exit 0 within %s)", name, err, DrainExitBound)
		}
		if d := time.Since(term); d > worstExit {
			worstExit = d
		}
		err := harness.Poll(ClientRecoverBound+DrainDuration, func() error {
			for _, s := range moving {
				if _, ok := s.FirstAwayAfter(term, name); !ok {
					return fmt.Errorf("%s has not received elsewhere since the SIGTERM", s.ID)
				}
			}
			return nil
		})
		if err != nil {
			t.Errorf("clients of %s: %v", name, err)
		}
		for _, s := range moving {
			if at, ok := s.FirstAwayAfter(term, name); ok && at.Sub(term) > worstMove {
				worstMove = at.Sub(term)
			}
		}
		restart := time.Now()
		tr.forget(name)
		c.rejoinArgs(n)
		n.Start()
		c.waitConverged(RejoinBound, c.names()...)
		if d := time.Since(restart); d > worstRejoin {
			worstRejoin = d
		}
		f.End = time.Now()
	}
	sc.bound("SIGTERM → exit 0 (DrainExitBound)", DrainExitBound, worstExit.Round(time.Millisecond), worstExit <= DrainExitBound)
	sc.bound("drained clients receive elsewhere (ClientRecoverBound + DrainDuration)", ClientRecoverBound+DrainDuration, worstMove.Round(time.Millisecond), worstMove <= ClientRecoverBound+DrainDuration)
	sc.bound("restart → converged (RejoinBound)", RejoinBound, worstRejoin.Round(time.Millisecond), worstRejoin <= RejoinBound)
	waitSent(t, l, 2*time.Second)
	end := l.stopPublishing()
	l.waitDelivered(end, DeliverTailBound)
	tr.finish(c.nodes)
	sc.account(l, end, tr)
	// Nothing dies with a drained origin (it hands over before it exits), so nothing is
	// excused; every node's recovering subscriber moves at least once.
	sc.recovered(l, end, len(c.nodes)*len(chans)+len(chans))
	if js.Count() == 0 {
		t.Errorf("socketcluster-client subscriber received nothing")
	}
}

// SlowQueue is the --send-queue of the slow-consumer scenario.
const SlowQueue = "256KiB"

// Scenario 7: clients that stop reading are cut once their send queue fills (close 4100 when
// their socket can take it, else a TCP cut); every other client is unaffected.
func TestSlowConsumers(t *testing.T) {
	needFull(t)
	sc := newScenario(t, "7 slow consumers (stop reading)")
	c := startLoopbackCluster(t, 3, "--send-queue", SlowQueue)
	l := newLoad(t, c)
	for _, n := range c.nodes {
		l.subscribe("sub-"+n.Name, n.Name, "c0")
	}
	// Two clients that subscribe and then never read, on n1 and n2, with a small socket buffer.
	var stuck []*websocket.Conn
	for _, n := range c.nodes[:2] {
		stuck = append(stuck, stuckClient(t, n.URL(), "c0"))
	}
	for _, n := range c.nodes {
		nm := n.Name
		harness.Eventually(t, 10*time.Second, nm+"'s interest known", func() error { return c.wantedErr(nm, 1, c.names()...) })
	}
	for _, n := range c.nodes {
		l.publish("pub-"+n.Name, n.Name, 300, 1024, "c0")
	}
	l.expectAll()
	tr := newMetricsTracker(func() []*harness.Node { return c.nodes })
	start := time.Now()
	err := harness.Poll(SlowCutBound, func() error {
		for _, n := range c.nodes[:2] {
			v, err := n.Metric("sockmesh_ws_slow_consumer_disconnects_total")
			if err != nil || v < 1 {
				return fmt.Errorf("%s: no slow consumer cut yet (%v)", n.Name, err)
			}
		}
		return nil
	})
	sc.bound("stuck clients cut as slow consumers (SlowCutBound)", SlowCutBound, time.Since(start).Round(time.Millisecond), err == nil)
	// The close code the stuck clients get once they read again.
	codes := []string{}
	for _, ws := range stuck {
		// Longer than the server's default --write-timeout, so a close frame stuck behind the
		// full buffers has time to come out once we read again.
		ws.SetReadDeadline(time.Now().Add(15 * time.Second))
		code := "none"
		frames := 0
		for i := 0; i < 1_000_000; i++ {
			if _, _, err := ws.ReadMessage(); err != nil {
				if ce, ok := err.(*websocket.CloseError); ok {
					code = strconv.Itoa(ce.Code)
				} else {
					code = "no close frame: " + err.Error()
				}
				break
			}
			frames++
		}
		sc.note("stuck client read %d frames after it resumed reading, then: %s", frames, code)
		codes = append(codes, code)
	}
	// The stuck clients' sockets are gone on the server (the policy cuts them).
	err = harness.Poll(5*time.Second, func() error {
		for _, n := range c.nodes[:2] {
			if v, err := view(n); err != nil || v.Connections != 2 { // its Go subscriber and publisher
				return fmt.Errorf("%s still has %d connections (%v)", n.Name, v.Connections, err)
			}
		}
		return nil
	})
	sc.bound("stuck connections closed server-side (/cluster connections back to 2)", "5s", fmt.Sprint(err == nil), err == nil)
	// The docs promise close 4100 when the client's socket can still take the close frame
	// (asserted in wsfront's TestSlowConsumerGets4100), and a TCP cut otherwise. These clients'
	// kernel buffers are full; what they see when they read again is reported, not asserted:
	// so far a read timeout after the buffered frames, not the end of the connection (open in
	// issue 18: the server has removed the socket, but the client does not see it close).
	sc.note("close seen by the stuck clients after reading again: %s", strings.Join(codes, "; "))
	waitSent(t, l, 2*time.Second)
	end := l.stopPublishing()
	l.waitDelivered(end, DeliverTailBound)
	tr.finish(c.nodes)
	cn := sc.account(l, end, tr)
	sc.bound("fast subscribers unaffected: delivered/expected", "= 100%", fmt.Sprintf("%d/%d", cn.Delivered, cn.Expected), cn.Lost == 0)
}

// stuckClient handshakes, subscribes to ch, reads the answers, and then never reads again.
func stuckClient(t *testing.T, url, ch string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(4096)
		}
		return c, err
	}}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	send := func(v any) {
		b, _ := json.Marshal(v)
		if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
			t.Fatal(err)
		}
	}
	send(map[string]any{"event": "#handshake", "data": map[string]any{"authToken": nil}, "cid": 1})
	send(map[string]any{"event": "#subscribe", "data": map[string]any{"channel": ch}, "cid": 2})
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for got := 0; got < 2; {
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if string(b) == "" || string(b) == "#1" {
			continue
		}
		if strings.Contains(string(b), `"rid":2`) {
			got = 2
		} else if strings.Contains(string(b), `"rid":1`) {
			got = 1
		}
	}
	return ws
}

// SubscribeLiveBound: during churn, a subscription is expected to receive everything
// published this long after its Subscribe was acknowledged.
const SubscribeLiveBound = 2 * time.Second

// Scenario 6: churn. Nodes n4 and n5 join and leave (alternating SIGTERM and kill -9) while
// clients subscribe and unsubscribe; at the end every subscriber gets every new publication
// and no node keeps interest that no client holds.
func TestChurn(t *testing.T) {
	needFull(t)
	sc := newScenario(t, "6 churn (nodes join/leave, clients sub/unsub)")
	c := startLoopbackCluster(t, 3)
	base := c.names()
	extra := []*harness.Node{}
	for i := 4; i <= 5; i++ {
		n := harness.NewNode(t, fmt.Sprintf("n%d", i), "--drain-duration", "500ms", "--join", c.nodes[0].GossipAddr)
		extra = append(extra, n)
		c.nodes = append(c.nodes, n) // URL lists include them; they start down
	}
	l := newLoad(t, c)
	channels := []string{"k0", "k1", "k2", "k3", "k4", "k5"}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	var subs []*subscriber
	for i, n := range base {
		for k := 0; k < 2; k++ {
			subs = append(subs, l.subscribe(fmt.Sprintf("sub-%s-%d", n, k), n, channels[(i+k)%len(channels)]))
		}
	}
	for _, n := range base {
		l.publish("pub-"+n, n, 60, PubPad, channels...)
	}
	for _, s := range subs {
		for _, ch := range s.cl.Channels() {
			s.Expect(ch, time.Now().Add(SubscribeLiveBound))
		}
	}
	tr := newMetricsTracker(func() []*harness.Node {
		var live []*harness.Node
		for _, n := range c.nodes {
			if !n.Exited() {
				live = append(live, n)
			}
		}
		return live
	})
	var mu sync.Mutex
	up := map[string]bool{}
	var faults []*checker.Fault
	deadline := time.Now().Add(churnFor())
	step := 0
	for time.Now().Before(deadline) && step < 10_000 {
		step++
		waitSent(t, l, 300*time.Millisecond)
		// Client churn: subscribe or unsubscribe a random channel on a random subscriber.
		s := subs[rng.Intn(len(subs))]
		ch := channels[rng.Intn(len(channels))]
		held := false
		for _, x := range s.cl.Channels() {
			held = held || x == ch
		}
		if held {
			now := time.Now()
			s.Released(ch, now)
			s.cl.Unsubscribe(ch)
		} else {
			s.Holding(ch, time.Now())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := s.cl.Subscribe(ctx, ch, func(string, json.RawMessage) {})
			cancel()
			if err == nil {
				s.Expect(ch, time.Now().Add(SubscribeLiveBound))
			} else {
				s.Released(ch, time.Now())
			}
		}
		// Node churn every 12 steps: toggle one extra node.
		if step%12 == 0 {
			n := extra[(step/12)%len(extra)]
			mu.Lock()
			if up[n.Name] {
				f := l.rec.AddFault(&checker.Fault{Name: "leave " + n.Name, Start: time.Now().Add(-InFlightSlack), Settle: FaultSettle, Crosses: checker.NodeFault(n.Name)})
				if (step/12)%4 < 2 {
					n.Stop(10 * time.Second)
				} else {
					n.Kill()
				}
				f.End = time.Now()
				up[n.Name] = false
			} else {
				f := l.rec.AddFault(&checker.Fault{Name: "join " + n.Name, Start: time.Now().Add(-InFlightSlack), Settle: FaultSettle, Crosses: checker.NodeFault(n.Name)})
				tr.forget(n.Name)
				n.Start()
				up[n.Name] = true
				live := append([]string{}, base...)
				for _, e := range extra {
					if up[e.Name] {
						live = append(live, e.Name)
					}
				}
				c.waitConverged(RejoinBound, live...)
				faults = append(faults, f)
				// A new subscriber on the joined node (it fails over to the base nodes when it leaves).
				ns := l.subscribe(fmt.Sprintf("sub-%s-%d", n.Name, step), n.Name, channels[rng.Intn(len(channels))])
				for _, ch := range ns.cl.Channels() {
					ns.Expect(ch, time.Now().Add(SubscribeLiveBound))
				}
				subs = append(subs, ns)
				f.End = time.Now()
			}
			mu.Unlock()
		}
	}
	// Settle: the extra nodes leave for good (a final clean state), then measure.
	for _, n := range extra {
		if up[n.Name] {
			f := l.rec.AddFault(&checker.Fault{Name: "final leave " + n.Name, Start: time.Now().Add(-InFlightSlack), Settle: FaultSettle, Crosses: checker.NodeFault(n.Name)})
			n.Stop(10 * time.Second)
			f.End = time.Now()
		}
	}
	c.nodes = c.nodes[:3]
	stable := time.Now()
	// No node keeps interest no client holds: what peers see each node wanting equals what its
	// connected clients hold.
	var last string
	err := harness.Poll(InterestCleanBound, func() error {
		want := map[string]map[string]bool{}
		for _, n := range base {
			want[n] = map[string]bool{}
		}
		for _, s := range subs {
			if node := s.Conns.Node(); node != "" && want[node] != nil {
				for _, ch := range s.cl.Channels() {
					want[node][ch] = true
				}
			}
		}
		for _, n := range base {
			if err := c.wantedErr(n, len(want[n]), base...); err != nil {
				last = err.Error()
				return err
			}
			v, err := view(c.byName(n))
			if err != nil {
				return err
			}
			if v.Channels != len(want[n]) || v.LocalChannels != len(want[n]) {
				return fmt.Errorf("%s announces %d channels, has %d local, its clients hold %d", n, v.Channels, v.LocalChannels, len(want[n]))
			}
		}
		return nil
	})
	sc.bound("interest equals what clients hold, cluster-wide (InterestCleanBound)", InterestCleanBound, time.Since(stable).Round(time.Millisecond), err == nil)
	if err != nil {
		t.Errorf("stale interest: %v (%s)", err, last)
	}
	// Every subscriber gets every new publication: expectations already run to the end; give
	// the final phase time with no fault.
	waitSent(t, l, FaultSettle+2*time.Second)
	end := l.stopPublishing()
	l.waitDelivered(end, DeliverTailBound)
	tr.finish(c.nodes)
	cn := sc.account(l, end, tr)
	sc.note("churn: %d steps, %d subscribers, %d node joins", step, len(subs), len(faults))
	_ = cn
}
