package scale

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sockmesh/sockmesh/integration/harness"
)

// publishCost: a publisher on node 0 at rate for d, a subscriber on k other nodes; the CPU
// the publisher's node and the whole cluster spent per publication, above their idle use
// (the publisher's and subscribers' clients included: they are the nodes' work too).
func publishCost(c *cluster, k int, rate float64, d time.Duration) PublishCost {
	n := len(c.nodes)
	ch := fmt.Sprintf("cost.%d.%d", n, k)
	var got atomic.Int64
	heard := make([]atomic.Bool, k+1)
	for i := 1; i <= k; i++ {
		sub := c.dial(i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := sub.Subscribe(ctx, ch, func(string, json.RawMessage) { got.Add(1); heard[i].Store(true) }); err != nil {
			c.t.Fatal(err)
		}
		cancel()
	}
	pub := c.dial(0)
	payload := json.RawMessage(`"` + strings.Repeat("x", 100) + `"`)
	// Publish until every subscriber has heard one: the interest has reached node 0. Then
	// count from zero.
	harness.Eventually(c.t, 20*time.Second, "interest at the publisher's node", func() error {
		if err := pub.PublishRaw(ch, payload); err != nil {
			return err
		}
		for i := 1; i <= k; i++ {
			if !heard[i].Load() {
				return fmt.Errorf("subscriber on %s heard nothing yet", c.nodes[i].Name)
			}
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond)
	got.Store(0)
	cpu0 := c.cpuSeconds()
	start := time.Now()
	sent := 0
	for time.Since(start) < d {
		due := int(rate * time.Since(start).Seconds())
		for ; sent < due; sent++ {
			if err := pub.PublishRaw(ch, payload); err != nil {
				c.t.Fatal(err)
			}
		}
		time.Sleep(time.Millisecond)
	}
	expected := sent * k
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && int(got.Load()) < expected {
		time.Sleep(20 * time.Millisecond)
	}
	cpu1 := c.cpuSeconds()
	el := time.Since(start).Seconds()
	used := make([]float64, len(cpu0)) // above each node's idle use
	var total float64
	for i := range cpu0 {
		used[i] = max(0, cpu1[i]-cpu0[i]-c.idle[i]*el)
		total += used[i]
	}
	return PublishCost{Interested: k, Rate: rate, CPUUsPerMsg: 1e6 * used[0] / float64(sent),
		ClusterUsPer: 1e6 * total / float64(sent), Delivered: int(got.Load()), Expected: expected}
}

// interestTable subscribes chans channels spread evenly over the nodes (one raw connection
// per node, #subscribe packets in array frames of 1,000) and measures how long every node
// takes to know every peer's channels, and what that costs each node in memory.
func interestTable(c *cluster, chans int) InterestResult {
	n := len(c.nodes)
	runtimeSettle()
	rss0 := c.rssMiB()
	_, m0 := c.sentBytes()
	base := make([]int, n) // channels each node already announced (earlier measurements)
	for i, nd := range c.nodes {
		v, err := nd.Cluster()
		if err != nil {
			c.t.Fatal(err)
		}
		base[i] = v.Channels
	}
	per := chans / n
	// --max-subscriptions is 1,000 per connection: one connection per 1,000 channels.
	var mu sync.Mutex
	var conns []*websocket.Conn
	errs := make(chan error, n)
	for i := range n {
		go func() {
			for j := 0; j < per; j += 1000 {
				names := make([]string, 0, 1000)
				for k := j; k < min(per, j+1000); k++ {
					names = append(names, fmt.Sprintf("it.%d.%d.%d", chans, i, k))
				}
				ws, err := subscribeRaw(c.url(i), names)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", c.nodes[i].Name, err)
					return
				}
				mu.Lock()
				conns = append(conns, ws)
				mu.Unlock()
			}
			errs <- nil
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			c.t.Fatal(err)
		}
	}
	acked := time.Now()
	harness.Eventually(c.t, 120*time.Second, fmt.Sprintf("%d channels known cluster-wide", chans), func() error {
		for i, nd := range c.nodes {
			v, err := nd.Cluster()
			if err != nil {
				return err
			}
			for _, p := range v.Peers {
				j := slices.IndexFunc(c.nodes, func(x *harness.Node) bool { return x.Name == p.Name })
				if j < 0 || p.Channels < base[j]+per || !p.InterestSynced {
					return fmt.Errorf("%s knows %d channels of %s, want %d", c.nodes[i].Name, p.Channels, p.Name, base[max(j, 0)]+per)
				}
			}
		}
		return nil
	})
	res := InterestResult{Channels: chans, SyncSeconds: time.Since(acked).Seconds()}
	runtimeSettle()
	rss1 := c.rssMiB()
	_, m1 := c.sentBytes()
	var d []float64
	for i := range n {
		d = append(d, rss1[i]-rss0[i])
		if m0 != nil {
			res.InterestBytes += (m1[i] - m0[i]) / float64(n)
		}
	}
	res.RSSDeltaMiB = mean(d)
	// A node holds its own per channels (sockets, broker) and (n-1)*per remote entries.
	res.BytesPerEntry = res.RSSDeltaMiB * (1 << 20) / float64(chans)
	for _, ws := range conns {
		ws.Close()
	}
	return res
}

// subscribeRaw opens a connection, subscribes to every name in one array frame and waits
// for every answer; any error answer fails it. The connection stays open (the caller
// closes it); its pings are not answered, so it must not be held past the ping timeout.
func subscribeRaw(url string, names []string) (*websocket.Conn, error) {
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"#handshake","data":{},"cid":1}`)); err != nil {
		ws.Close()
		return nil, err
	}
	if _, _, err := ws.ReadMessage(); err != nil {
		ws.Close()
		return nil, err
	}
	var b strings.Builder
	b.WriteByte('[')
	for k, name := range names {
		if k > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"event":"#subscribe","data":{"channel":%q},"cid":%d}`, name, k+2)
	}
	b.WriteByte(']')
	if err := ws.WriteMessage(websocket.TextMessage, []byte(b.String())); err != nil {
		ws.Close()
		return nil, err
	}
	for acked := 0; acked < len(names); {
		_, m, err := ws.ReadMessage()
		if err != nil {
			ws.Close()
			return nil, err
		}
		if strings.Contains(string(m), `"error"`) {
			ws.Close()
			return nil, fmt.Errorf("subscribe refused: %.300s", m)
		}
		acked += strings.Count(string(m), `"rid":`)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return ws, nil
}

// runtimeSettle gives the nodes' Go runtimes a moment so RSS reflects the steady state.
func runtimeSettle() { time.Sleep(3 * time.Second) }

// failureDetection kills the last node with SIGKILL and measures when each other node
// shows it as failed.
func failureDetection(c *cluster) (worst, median float64) {
	victim := c.nodes[len(c.nodes)-1]
	victim.Signal(syscall.SIGKILL)
	t0 := time.Now()
	others := c.nodes[:len(c.nodes)-1]
	seen := make([]float64, len(others))
	harness.Eventually(c.t, 60*time.Second, victim.Name+" seen failed everywhere", func() error {
		left := 0
		for i, nd := range others {
			if seen[i] > 0 {
				continue
			}
			v, err := nd.Cluster()
			if err != nil {
				return err
			}
			for _, m := range v.Members {
				if m.Name == victim.Name && m.Status != "alive" {
					seen[i] = time.Since(t0).Seconds()
				}
			}
			if seen[i] == 0 {
				left++
			}
		}
		if left > 0 {
			return fmt.Errorf("%d nodes still see %s alive", left, victim.Name)
		}
		return nil
	})
	return pct(seen, 1), pct(seen, 0.5)
}

// procCPU is a process's user+system CPU time in seconds (/proc/PID/stat, clock ticks of
// 1/100 s on Linux).
func procCPU(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100
}

func procRSSMiB(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// addPortCounters adds iptables accounting rules (no target) to the namespace's OUTPUT
// chain: bytes sent from the mesh port and from/to the gossip port.
func addPortCounters(ns string, meshPort, gossipPort int) error {
	for _, rule := range [][]string{
		{"-p", "tcp", "--sport", strconv.Itoa(meshPort)},
		{"-p", "tcp", "--dport", strconv.Itoa(meshPort)},
		{"-p", "tcp", "-m", "multiport", "--ports", strconv.Itoa(gossipPort)},
		{"-p", "udp", "-m", "multiport", "--ports", strconv.Itoa(gossipPort)},
	} {
		args := append([]string{"netns", "exec", ns, "iptables", "-w", "-A", "OUTPUT"}, rule...)
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables %v: %v %s", rule, err, out)
		}
	}
	return nil
}

// portCounters reads the accounting rules: gossip bytes (TCP+UDP) and mesh bytes sent.
func portCounters(ns string) (gossip, meshB float64, err error) {
	out, err := exec.Command("ip", "netns", "exec", ns, "iptables", "-w", "-nvx", "-L", "OUTPUT").Output()
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		bytes, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(l, "multiport ports"):
			gossip += bytes
		case strings.Contains(l, "tcp spt:") || strings.Contains(l, "tcp dpt:"):
			meshB += bytes
		}
	}
	return gossip, meshB, nil
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// pct is the q-quantile of v (nearest rank).
func pct(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}
