package scale

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/client"
	"github.com/sockmesh/sockmesh/integration/chaos/netns"
	"github.com/sockmesh/sockmesh/integration/harness"
	"github.com/sockmesh/sockmesh/mesh"
)

// ClusterResult is what one cluster size measured (docs/scaling.md reads the JSON).
type ClusterResult struct {
	Nodes     int    `json:"nodes"`
	Isolation string `json:"isolation"` // netns or loopback

	JoinSeconds     float64   `json:"join_s"`                // launch of all to every node ready with N-1 links up
	JoinPerNode     []float64 `json:"join_per_node_s"`       // the same per node
	RoutePublished  int       `json:"route_published"`       // publications in the all-to-all routing check
	RouteExpected   int       `json:"route_expected"`        // deliveries expected
	RouteDelivered  int       `json:"route_delivered"`       // deliveries received
	SubLiveP50Ms    float64   `json:"sub_live_p50_ms"`       // new subscription to a publication from every node
	SubLiveP99Ms    float64   `json:"sub_live_p99_ms"`       //
	SubLiveMaxMs    float64   `json:"sub_live_max_ms"`       //
	SubLiveTries    int       `json:"sub_live_tries"`        //
	IdleCPUPct      float64   `json:"idle_cpu_pct"`          // per node, mean over nodes, % of one core
	IdleCPUMaxPct   float64   `json:"idle_cpu_max_pct"`      //
	GossipBytesPerS float64   `json:"gossip_bytes_per_s"`    // per node, sent, mean (netns only)
	MeshBytesPerS   float64   `json:"mesh_idle_bytes_per_s"` // per node, sent while idle (heartbeats), mean (netns only)
	// ActiveMeshBytesPerS: per node, mesh bytes sent while every node publishes 2 small
	// messages/s to a channel every node wants (every link active), mean (netns only).
	ActiveMeshBytesPerS float64          `json:"mesh_active_bytes_per_s"`
	RSSMiB              float64          `json:"rss_mib"` // per node, idle, mean
	Interest            []InterestResult `json:"interest"`
	PublishCost         []PublishCost    `json:"publish_cost"`
	FailDetectS         float64          `json:"fail_detect_s"`     // kill -9 to failed on every other node
	FailDetectP50S      float64          `json:"fail_detect_p50_s"` // median over the other nodes
}

// InterestResult: channels subscribed, spread evenly over the nodes.
type InterestResult struct {
	Channels      int     `json:"channels"`
	SyncSeconds   float64 `json:"sync_s"`          // last subscribe ack to every node knowing every peer's channels
	RSSDeltaMiB   float64 `json:"rss_delta_mib"`   // per node, mean
	BytesPerEntry float64 `json:"bytes_per_entry"` // RSS delta of a node / remote channels it holds
	InterestBytes float64 `json:"interest_bytes"`  // mesh bytes sent per node while syncing, mean (netns only)
}

// PublishCost: one publisher node at a fixed rate, subscribers on k other nodes.
type PublishCost struct {
	Interested   int     `json:"interested_nodes"`
	Rate         float64 `json:"rate"`
	CPUUsPerMsg  float64 `json:"publisher_node_cpu_us_per_msg"` // the publisher's node
	ClusterUsPer float64 `json:"cluster_cpu_us_per_msg"`        // every node together
	Delivered    int     `json:"delivered"`
	Expected     int     `json:"expected"`
}

// cluster is N sockmesh processes, one network namespace each when root is available.
type cluster struct {
	t     *testing.T
	nw    *netns.Net // nil: loopback
	nodes []*harness.Node
	// idle is each node's CPU use while idle, in CPU seconds per second: subtracted from the
	// cost of publications, which would otherwise grow with the cluster's idle work.
	idle []float64
}

const basePort = 7400

func startCluster(t *testing.T, n int) (*cluster, time.Duration, []float64) {
	t.Helper()
	c := &cluster{t: t}
	if netns.Available() == nil {
		c.nw = netns.New(t, n)
	}
	seeds := []string{}
	for i := range n {
		var nd *harness.Node
		name := fmt.Sprintf("s%02d", i+1)
		if c.nw != nil {
			nd = harness.NewNodeAt(t, name, c.nw.IP(i), basePort)
			nd.Wrap = c.nw.Wrap(i)
		} else {
			nd = harness.NewNode(t, name)
		}
		if i < 3 {
			seeds = append(seeds, nd.GossipAddr)
		}
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		nd.Args = append(nd.Args, "--log-level", "warn", "--join", strings.Join(seeds, ","),
			"--max-connections-per-ip", "-1", "--handshake-rate", "-1", "--handshake-rate-per-ip", "-1", "--publish-rate", "-1", "--drain-duration", "100ms")
	}
	start := time.Now()
	for _, nd := range c.nodes {
		nd.Launch()
	}
	per := make([]float64, n)
	ready := make([]bool, n)
	harness.Eventually(t, 120*time.Second, fmt.Sprintf("%d nodes joined and linked", n), func() error {
		missing := 0
		for i, nd := range c.nodes {
			if ready[i] {
				continue
			}
			if nd.Exited() {
				t.Fatalf("%s exited: %s", nd.Name, nd.Log())
			}
			v, err := nd.Cluster()
			if err == nil && fullyLinked(v.Members, v.Peers, n) {
				ready[i], per[i] = true, time.Since(start).Seconds()
				continue
			}
			missing++
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d nodes not yet joined and linked", missing, n)
		}
		return nil
	})
	return c, time.Since(start), per
}

// fullyLinked: n alive members and an up link with synced interest from every other one.
func fullyLinked(members []mesh.Member, peers []mesh.PeerStatus, n int) bool {
	alive := 0
	for _, m := range members {
		if m.Status == "alive" {
			alive++
		}
	}
	up := 0
	for _, p := range peers {
		if p.Link == "up" && p.InterestSynced {
			up++
		}
	}
	return alive == n && up == n-1
}

func (c *cluster) url(i int) string { return c.nodes[i].URL() }

// dial opens a Go SocketCluster client on node i.
func (c *cluster) dial(i int) *client.Client {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, client.Options{URLs: []string{c.url(i)}, AckTimeout: 10 * time.Second})
	if err != nil {
		c.t.Fatalf("dial %s: %v", c.nodes[i].Name, err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// cpuSeconds is the user+system CPU time of every node process, by node.
func (c *cluster) cpuSeconds() []float64 {
	out := make([]float64, len(c.nodes))
	for i, nd := range c.nodes {
		out[i] = procCPU(nd.Pid())
	}
	return out
}

func (c *cluster) rssMiB() []float64 {
	out := make([]float64, len(c.nodes))
	for i, nd := range c.nodes {
		out[i] = procRSSMiB(nd.Pid())
	}
	return out
}

// sentBytes is what each node sent on its gossip and mesh ports (netns only: iptables
// accounting rules in each node's namespace; loopback: nil).
func (c *cluster) sentBytes() (gossip, meshB []float64) {
	if c.nw == nil {
		return nil, nil
	}
	gossip, meshB = make([]float64, len(c.nodes)), make([]float64, len(c.nodes))
	for i := range c.nodes {
		g, m, err := portCounters(c.nw.NS[i])
		if err != nil {
			c.t.Fatal(err)
		}
		gossip[i], meshB[i] = g, m
	}
	return gossip, meshB
}

// measureCluster runs every measurement of docs/scaling.md on a cluster of n nodes.
func measureCluster(t *testing.T, n int, interestSizes []int) ClusterResult {
	c, join, per := startCluster(t, n)
	res := ClusterResult{Nodes: n, Isolation: "loopback", JoinSeconds: join.Seconds(), JoinPerNode: per}
	if c.nw != nil {
		res.Isolation = "netns"
		for i := range c.nodes {
			if err := addPortCounters(c.nw.NS[i], basePort+2, basePort+3); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d nodes: joined and linked in %.2fs", n, res.JoinSeconds)

	// Idle: CPU, bytes on the wire, memory.
	time.Sleep(2 * time.Second)
	cpu0 := c.cpuSeconds()
	g0, m0 := c.sentBytes()
	const idle = 10 * time.Second
	time.Sleep(idle)
	cpu1 := c.cpuSeconds()
	g1, m1 := c.sentBytes()
	c.idle = make([]float64, n)
	for i := range c.nodes {
		c.idle[i] = (cpu1[i] - cpu0[i]) / idle.Seconds()
		pct := 100 * c.idle[i]
		res.IdleCPUPct += pct / float64(n)
		res.IdleCPUMaxPct = max(res.IdleCPUMaxPct, pct)
		if g0 != nil {
			res.GossipBytesPerS += (g1[i] - g0[i]) / idle.Seconds() / float64(n)
			res.MeshBytesPerS += (m1[i] - m0[i]) / idle.Seconds() / float64(n)
		}
	}
	res.RSSMiB = mean(c.rssMiB())
	t.Logf("%d nodes idle: CPU %.2f%% per node (max %.2f%%), gossip %.0f B/s, mesh %.0f B/s, RSS %.1f MiB", n, res.IdleCPUPct, res.IdleCPUMaxPct, res.GossipBytesPerS, res.MeshBytesPerS, res.RSSMiB)

	res.RoutePublished, res.RouteExpected, res.RouteDelivered = routeAllToAll(c, 10)
	t.Logf("%d nodes routing: %d of %d delivered", n, res.RouteDelivered, res.RouteExpected)
	if res.RouteDelivered != res.RouteExpected {
		t.Errorf("%d nodes: %d of %d deliveries in the all-to-all check", n, res.RouteDelivered, res.RouteExpected)
	}

	res.ActiveMeshBytesPerS = activeMeshBytes(c, 6*time.Second)
	t.Logf("%d nodes, every link active (2 publications/s per node): mesh %.0f B/s sent per node", n, res.ActiveMeshBytesPerS)

	lives := subscriptionLiveness(c, 100)
	res.SubLiveTries = len(lives)
	res.SubLiveP50Ms, res.SubLiveP99Ms, res.SubLiveMaxMs = pct(lives, 0.5), pct(lives, 0.99), pct(lives, 1)
	t.Logf("%d nodes: a new subscription receives from every node after p50 %.1f ms, p99 %.1f ms, max %.1f ms", n, res.SubLiveP50Ms, res.SubLiveP99Ms, res.SubLiveMaxMs)

	for _, k := range slices.Compact([]int{1, min(4, n-1), n - 1}) {
		pc := publishCost(c, k, 2000, 4*time.Second)
		res.PublishCost = append(res.PublishCost, pc)
		t.Logf("%d nodes: publish with %d interested nodes: %.1f us CPU per message on the publisher's node, %.1f us in the cluster, %d of %d delivered", n, k, pc.CPUUsPerMsg, pc.ClusterUsPer, pc.Delivered, pc.Expected)
	}

	for _, chans := range interestSizes {
		ir := interestTable(c, chans)
		res.Interest = append(res.Interest, ir)
		t.Logf("%d nodes: %d channels: interest synced %.2fs after the last subscribe ack, RSS +%.1f MiB per node, %.0f B per remote entry, %.0f interest bytes sent per node", n, chans, ir.SyncSeconds, ir.RSSDeltaMiB, ir.BytesPerEntry, ir.InterestBytes)
	}

	res.FailDetectS, res.FailDetectP50S = failureDetection(c)
	t.Logf("%d nodes: kill -9 seen as failed by every other node after %.2fs (median %.2fs)", n, res.FailDetectS, res.FailDetectP50S)
	return res
}

// routeAllToAll: a subscriber and a publisher on every node; every publisher publishes k
// messages; every subscriber must receive all n*k.
func routeAllToAll(c *cluster, k int) (published, expected, delivered int) {
	n := len(c.nodes)
	ch := "route." + strconv.Itoa(n)
	var got atomic.Int64
	for i := range n {
		sub := c.dial(i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := sub.Subscribe(ctx, ch, func(string, json.RawMessage) { got.Add(1) }); err != nil {
			c.t.Fatal(err)
		}
		cancel()
	}
	waitWanted(c)
	pubs := make([]*client.Client, n)
	for i := range n {
		pubs[i] = c.dial(i)
	}
	for j := range k {
		for i, p := range pubs {
			if err := p.Publish(ch, map[string]int{"from": i, "seq": j}); err != nil {
				c.t.Fatal(err)
			}
			published++
		}
	}
	expected = published * n
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && int(got.Load()) < expected {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // duplicates would show
	return published, expected, int(got.Load())
}

// activeMeshBytes: every node publishes a small message to route.N (wanted by every node
// since routeAllToAll) every 500 ms; the mesh bytes each node sends per second, mean.
func activeMeshBytes(c *cluster, d time.Duration) float64 {
	if c.nw == nil {
		return 0
	}
	n := len(c.nodes)
	ch := "route." + strconv.Itoa(n)
	stop := publishEvery(c, 500*time.Millisecond, func() string { return ch })
	time.Sleep(1500 * time.Millisecond) // every link active
	_, m0 := c.sentBytes()
	time.Sleep(d)
	_, m1 := c.sentBytes()
	stop()
	var sum float64
	for i := range n {
		sum += m1[i] - m0[i]
	}
	return sum / float64(n) / d.Seconds()
}

// waitWanted waits until every node knows that each of its peers wants a channel from it
// (a channel subscribed on every node).
func waitWanted(c *cluster) {
	harness.Eventually(c.t, 30*time.Second, "interest propagated", func() error {
		for _, nd := range c.nodes {
			v, err := nd.Cluster()
			if err != nil {
				return err
			}
			for _, p := range v.Peers {
				if p.Channels < 1 {
					return fmt.Errorf("%s: %s wants no channel", nd.Name, p.Name)
				}
			}
		}
		return nil
	})
}

// subscriptionLiveness: one publisher per node publishes to the channel of the current try
// every 5 ms; a subscriber on another node subscribes to it, and the time from the subscribe
// call to a publication from every node is one sample.
func subscriptionLiveness(c *cluster, tries int) []float64 {
	n := len(c.nodes)
	var cur atomic.Value
	cur.Store("")
	stop := publishEvery(c, 5*time.Millisecond, func() string { return cur.Load().(string) })
	subs := make([]*client.Client, n)
	for i := range n {
		subs[i] = c.dial(i)
	}
	var out []float64
	for try := range tries {
		ch := fmt.Sprintf("live.%d.%d", n, try)
		cur.Store(ch)
		time.Sleep(20 * time.Millisecond) // publications to nobody's channel first
		s := rand.IntN(n)
		seen := make([]atomic.Bool, n)
		var count atomic.Int32
		done := make(chan struct{})
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := subs[s].Subscribe(ctx, ch, func(_ string, d json.RawMessage) {
			from, err := strconv.Atoi(string(d))
			if err != nil || from < 0 || from >= n || seen[from].Swap(true) {
				return
			}
			if count.Add(1) == int32(n) {
				close(done)
			}
		})
		cancel()
		if err != nil {
			c.t.Fatal(err)
		}
		select {
		case <-done:
			out = append(out, float64(time.Since(t0).Microseconds())/1000)
		case <-time.After(10 * time.Second):
			c.t.Errorf("try %d: the subscription on %s heard from %d of %d nodes within 10s", try, c.nodes[s].Name, count.Load(), n)
		}
		_ = subs[s].Unsubscribe(ch)
	}
	stop()
	return out
}

// publishEvery starts a publisher on every node that publishes its node index to
// channel() at every tick (nothing while channel() is empty); stop ends them all.
func publishEvery(c *cluster, every time.Duration, channel func() string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := range c.nodes {
		p := c.dial(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := time.NewTicker(every)
			defer tk.Stop()
			for {
				select {
				case <-done:
					return
				case <-tk.C:
				}
				if ch := channel(); ch != "" {
					_ = p.Publish(ch, i)
				}
			}
		}()
	}
	return func() { close(done); wg.Wait() }
}
