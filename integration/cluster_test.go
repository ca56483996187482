package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/client"
	"github.com/sockmesh/sockmesh/integration/harness"
	"github.com/sockmesh/sockmesh/node"
)

func view(n *harness.Node) (node.Cluster, error) { return n.Cluster() }

// startCluster starts size nodes, the first a new cluster and the others joining it, and
// waits until every node is ready and sees all of them alive.
func startCluster(t *testing.T, size int, extra ...string) []*harness.Node {
	t.Helper()
	nodes := make([]*harness.Node, size)
	for i := range nodes {
		nodes[i] = harness.NewNode(t, fmt.Sprintf("n%d", i+1), extra...)
		if i > 0 {
			nodes[i].Args = append(nodes[i].Args, "--join", nodes[0].GossipAddr)
		}
		nodes[i].Start()
	}
	waitConverged(t, nodes)
	return nodes
}

func waitConverged(t *testing.T, nodes []*harness.Node) {
	t.Helper()
	harness.Eventually(t, 20*time.Second, "cluster converged", func() error { return converged(nodes) })
}

// converged reports why not every node is ready, sees every node alive and has every link up.
func converged(nodes []*harness.Node) error {
	for _, n := range nodes {
		v, err := view(n)
		if err != nil {
			return err
		}
		alive := 0
		for _, m := range v.Members {
			if m.Status == "alive" {
				alive++
			}
		}
		up := 0
		for _, p := range v.Peers {
			if p.Link == "up" {
				up++
			}
		}
		if !v.Ready || alive != len(nodes) || up != len(nodes)-1 {
			return fmt.Errorf("%s: ready=%v alive=%d links up=%d", n.Name, v.Ready, alive, up)
		}
	}
	return nil
}

// waitWanted waits until every node's view of peer `wanter` shows it wanting `channels`
// channels, so that publications from anywhere reach it.
func waitWanted(t *testing.T, nodes []*harness.Node, wanter string, channels int) {
	t.Helper()
	harness.Eventually(t, 10*time.Second, wanter+"'s interest known cluster-wide", func() error {
		for _, n := range nodes {
			if n.Name == wanter {
				continue
			}
			v, err := view(n)
			if err != nil {
				return err
			}
			found := false
			for _, p := range v.Peers {
				if p.Name == wanter {
					found = true
					if p.Channels != channels || !p.InterestSynced {
						return fmt.Errorf("%s sees %s wanting %d channels (synced %v), want %d", n.Name, wanter, p.Channels, p.InterestSynced, channels)
					}
				}
			}
			if !found {
				return fmt.Errorf("%s has no link from %s", n.Name, wanter)
			}
		}
		return nil
	})
}

type pubMsg struct {
	P string `json:"p"`
	S int    `json:"s"`
}

// seqChecker checks exactly-once, per-publisher order delivery.
type seqChecker struct {
	mu    sync.Mutex
	last  map[string]int
	count int
	dups  int
	order int
	other []string
}

func newSeqChecker() *seqChecker { return &seqChecker{last: map[string]int{}} }

func (c *seqChecker) handler(ch string, data json.RawMessage) {
	var m pubMsg
	c.mu.Lock()
	defer c.mu.Unlock()
	if json.Unmarshal(data, &m) != nil || m.P == "" {
		c.other = append(c.other, ch+":"+string(data))
		return
	}
	c.count++
	last, seen := c.last[m.P]
	switch {
	case seen && m.S == last:
		c.dups++
	case seen && m.S < last:
		c.order++
	case !seen && m.S != 0, seen && m.S != last+1:
		c.order++ // a gap: something was lost
	}
	c.last[m.P] = m.S
}

func (c *seqChecker) stats() (count, dups, order int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count, c.dups, c.order
}

// Every subscriber on every node gets every publication of its channel exactly once and in
// per-publisher order, wherever it was published; a real socketcluster-client style
// delivery path is exercised by the conformance suite.
func TestClusterDeliversEverywhereExactlyOnceInOrder(t *testing.T) {
	nodes := startCluster(t, 3)
	ctx := context.Background()
	const perPublisher = 300
	var checkers []*seqChecker
	for _, n := range nodes {
		for k := 0; k < 2; k++ {
			c := dial(t, n.URL())
			chk := newSeqChecker()
			if err := c.Subscribe(ctx, "room", chk.handler); err != nil {
				t.Fatal(err)
			}
			checkers = append(checkers, chk)
		}
	}
	for _, n := range nodes {
		waitWanted(t, nodes, n.Name, 1)
	}
	var wg sync.WaitGroup
	for i, n := range nodes {
		pub := dial(t, n.URL())
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			for s := 0; s < perPublisher; s++ {
				if err := pub.Publish("room", pubMsg{P: id, S: s}); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}(fmt.Sprintf("pub%d", i))
	}
	wg.Wait()
	want := perPublisher * len(nodes)
	harness.Eventually(t, 20*time.Second, "all deliveries", func() error {
		for i, c := range checkers {
			if n, _, _ := c.stats(); n < want {
				return fmt.Errorf("subscriber %d got %d of %d", i, n, want)
			}
		}
		return nil
	})
	for i, c := range checkers {
		n, dups, order := c.stats()
		if n != want || dups != 0 || order != 0 {
			t.Errorf("subscriber %d: got %d (want %d), %d duplicates, %d out of order or missing", i, n, want, dups, order)
		}
	}
	for _, n := range nodes {
		gaps, _ := n.Metric("sockmesh_mesh_gaps_total")
		if gaps != 0 {
			t.Errorf("%s counted %v gaps with no fault", n.Name, gaps)
		}
	}
}

// A node receives nothing for a channel none of its clients wants — `chat` subscribers never
// see `chatroom` traffic, on the wire or at the client — while it does receive what it wants.
func TestClusterSendsOnlyWantedChannels(t *testing.T) {
	nodes := startCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()
	chat := newSeqChecker()
	if err := dial(t, n3.URL()).Subscribe(ctx, "chat", chat.handler); err != nil {
		t.Fatal(err)
	}
	room := newSeqChecker()
	if err := dial(t, n2.URL()).Subscribe(ctx, "chatroom", room.handler); err != nil {
		t.Fatal(err)
	}
	waitWanted(t, nodes, "n3", 1)
	waitWanted(t, nodes, "n2", 1)
	received := func(at *harness.Node, from string) (uint64, uint64) {
		v, err := view(at)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range v.Peers {
			if p.Name == from {
				return p.Received, p.ReceivedPayloadBytes
			}
		}
		t.Fatalf("%s has no peer %s", at.Name, from)
		return 0, 0
	}
	r3, b3 := received(n3, "n1")
	r2, _ := received(n2, "n1")
	pub := dial(t, n1.URL())
	const each = 200
	for s := 0; s < each; s++ {
		pub.Publish("chatroom", pubMsg{P: "room", S: s})
		pub.Publish("chat", pubMsg{P: "chat", S: s})
		pub.Publish("nobody", pubMsg{P: "nobody", S: s})
	}
	harness.Eventually(t, 10*time.Second, "deliveries", func() error {
		if a, _, _ := chat.stats(); a < each {
			return fmt.Errorf("chat got %d", a)
		}
		if b, _, _ := room.stats(); b < each {
			return fmt.Errorf("chatroom got %d", b)
		}
		return nil
	})
	// Quiet period so any stray traffic would have arrived, measured by a marker that goes
	// through the same link after everything else.
	pub.Publish("chat", pubMsg{P: "marker", S: 0})
	harness.Eventually(t, 5*time.Second, "marker", func() error {
		chat.mu.Lock()
		defer chat.mu.Unlock()
		if _, ok := chat.last["marker"]; !ok {
			return fmt.Errorf("no marker yet")
		}
		return nil
	})
	r3b, b3b := received(n3, "n1")
	r2b, _ := received(n2, "n1")
	if got := r3b - r3; got != each+1 {
		t.Errorf("n3 received %d publications from n1, want exactly %d (chat only)", got, each+1)
	}
	if got := r2b - r2; got != each {
		t.Errorf("n2 received %d publications from n1, want exactly %d (chatroom only)", got, each)
	}
	// Payload bytes n3 got from n1 are those of chat alone: 201 payloads of ~20 bytes.
	if got := b3b - b3; got > uint64((each+1)*40) {
		t.Errorf("n3 received %d payload bytes from n1: more than its chat publications", got)
	}
	if n, d, o := chat.stats(); n != each+1 || d != 0 || o != 0 || len(chat.other) != 0 {
		t.Errorf("chat subscriber: %d messages, %d dups, %d order, other %v", n, d, o, chat.other)
	}
	room.mu.Lock()
	defer room.mu.Unlock()
	if _, ok := room.last["chat"]; ok || room.count != each {
		t.Errorf("chatroom subscriber got chat traffic or wrong count: %d", room.count)
	}
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

// One of three nodes frozen with SIGSTOP for 10 s: publishing between the other two keeps
// its rate, the publisher's memory stays bounded, and the frozen node recovers on SIGCONT.
func TestClusterFrozenNodeDoesNotStallOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s freeze")
	}
	nodes := startCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()
	healthy := newSeqChecker()
	if err := dial(t, n2.URL()).Subscribe(ctx, "feed", healthy.handler); err != nil {
		t.Fatal(err)
	}
	frozen := newSeqChecker()
	if err := dial(t, n3.URL()).Subscribe(ctx, "feed", frozen.handler); err != nil {
		t.Fatal(err)
	}
	waitWanted(t, nodes, "n2", 1)
	waitWanted(t, nodes, "n3", 1)
	pub := dial(t, n1.URL())
	const rate = 2000 // publications per second, 1 KiB each
	payload := strings.Repeat("x", 1024)
	type phase struct{ sent, got int }
	var mu sync.Mutex
	seq := 0
	publishFor := func(d time.Duration) phase {
		_, before, _ := 0, 0, 0
		c0, _, _ := healthy.stats()
		before = c0
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		end := time.Now().Add(d)
		sent := 0
		for time.Now().Before(end) {
			<-tick.C
			for i := 0; i < rate/100; i++ {
				mu.Lock()
				pub.Publish("feed", map[string]any{"p": "n1", "s": seq, "x": payload})
				seq++
				mu.Unlock()
				sent++
			}
		}
		// Let the tail of this phase arrive before counting.
		time.Sleep(300 * time.Millisecond)
		c1, _, _ := healthy.stats()
		return phase{sent, c1 - before}
	}
	warm := publishFor(2 * time.Second)
	rss0 := rssKiB(n1.Pid())
	n3.Signal(syscall.SIGSTOP)
	during := publishFor(10 * time.Second)
	rss1 := rssKiB(n1.Pid())
	n3.Signal(syscall.SIGCONT)
	t.Logf("healthy peer: warm-up %d/%d, during freeze %d/%d delivered; publisher RSS %d → %d KiB",
		warm.got, warm.sent, during.got, during.sent, rss0, rss1)
	if float64(during.got) < 0.9*float64(during.sent) {
		t.Errorf("healthy peer got %d of %d (< 90%%) while n3 was frozen", during.got, during.sent)
	}
	if rss1-rss0 > 100*1024 {
		t.Errorf("publisher RSS grew by %d KiB while a peer was frozen", rss1-rss0)
	}
	// The frozen node recovers: new publications reach its subscriber again.
	f0, _, _ := frozen.stats()
	harness.Eventually(t, 20*time.Second, "frozen node receives again", func() error {
		mu.Lock()
		pub.Publish("feed", map[string]any{"p": "after", "s": seq})
		seq++
		mu.Unlock()
		frozen.mu.Lock()
		_, ok := frozen.last["after"]
		frozen.mu.Unlock()
		if !ok {
			f1, _, _ := frozen.stats()
			return fmt.Errorf("frozen node's subscriber: %d → %d messages, none after the thaw", f0, f1)
		}
		return nil
	})
	if _, dups, _ := healthy.stats(); dups != 0 {
		t.Errorf("healthy subscriber got %d duplicates", dups)
	}
}

// A peer killed with kill -9 and restarted under the same name gets its link and interest
// back within a bound, with no duplicates.
func TestClusterPeerKilledAndRestarted(t *testing.T) {
	nodes := startCluster(t, 3)
	n1, n3 := nodes[0], nodes[2]
	ctx := context.Background()
	chk := newSeqChecker()
	sub, err := client.Dial(ctx, client.Options{URLs: []string{n3.URL()}, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.Subscribe(ctx, "alerts", chk.handler); err != nil {
		t.Fatal(err)
	}
	waitWanted(t, nodes, "n3", 1)
	pub := dial(t, n1.URL())
	n3.Kill()
	restarted := time.Now()
	n3.Start()
	s := 0
	harness.Eventually(t, 15*time.Second, "delivery to the restarted node", func() error {
		pub.Publish("alerts", pubMsg{P: "n1", S: s})
		s++
		if n, _, _ := chk.stats(); n == 0 {
			return fmt.Errorf("nothing yet")
		}
		return nil
	})
	t.Logf("restart → first delivery through the restarted node: %s", time.Since(restarted).Round(time.Millisecond))
	// From now on nothing is lost or duplicated.
	chk.mu.Lock()
	first := chk.last["n1"]
	chk.mu.Unlock()
	for i := 0; i < 200; i++ {
		pub.Publish("alerts", pubMsg{P: "n1", S: s})
		s++
	}
	harness.Eventually(t, 10*time.Second, "all later publications", func() error {
		chk.mu.Lock()
		defer chk.mu.Unlock()
		if chk.last["n1"] != s-1 {
			return fmt.Errorf("last %d, want %d", chk.last["n1"], s-1)
		}
		return nil
	})
	n, dups, _ := chk.stats()
	if dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
	if n < s-first {
		t.Errorf("lost publications after the link came back: got %d, want at least %d", n, s-first)
	}
}

// TestSeedlessNodeRejoinsAfterRestart: the first node of a cluster has no seeds; when it is
// killed and restarts after the others have declared it failed, only they can find it. Serf's
// own reconnect (one random failed member per 5 s, with probability failed/alive) left it alone
// for 5 to over 20 s; every node now dials a failed member's address each second. Three
// restarts, each rejoined with every link up within 4 s of the node answering /healthz (measured
// 0.17–1.13 s; without the dials a round passes that bound about two times in three).
func TestSeedlessNodeRejoinsAfterRestart(t *testing.T) {
	nodes := startCluster(t, 3)
	n1 := nodes[0]
	for round := 1; round <= 3; round++ {
		n1.Kill()
		harness.Eventually(t, 15*time.Second, "n1 declared failed", func() error {
			for _, n := range nodes[1:] {
				v, err := view(n)
				if err != nil {
					return err
				}
				for _, m := range v.Members {
					if m.Name == "n1" && m.Status != "failed" {
						return fmt.Errorf("%s sees n1 %s", n.Name, m.Status)
					}
				}
			}
			return nil
		})
		n1.Start()
		back := time.Now()
		if err := harness.Poll(4*time.Second, func() error { return converged(nodes) }); err != nil {
			t.Fatalf("round %d: restarted seedless node not rejoined within 4 s: %v", round, err)
		}
		t.Logf("round %d: rejoined, all links up, %s after the restarted node was healthy", round, time.Since(back).Round(time.Millisecond))
	}
}
