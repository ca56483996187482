package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/client"
	"github.com/sockmesh/sockmesh/integration/chaos/checker"
	"github.com/sockmesh/sockmesh/integration/harness"
	"github.com/sockmesh/sockmesh/node"
)

func view(n *harness.Node) (node.Cluster, error) { return n.Cluster() }

// cluster is a set of node processes addressed by name.
type cluster struct {
	t     *testing.T
	nodes []*harness.Node
}

func (c *cluster) byName(name string) *harness.Node {
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	c.t.Fatalf("no node %s", name)
	return nil
}

func (c *cluster) names() []string {
	var s []string
	for _, n := range c.nodes {
		s = append(s, n.Name)
	}
	return s
}

// nodeOfURL maps a client URL back to its node's name.
func (c *cluster) nodeOfURL(u string) string {
	for _, n := range c.nodes {
		if n.URL() == u {
			return n.Name
		}
	}
	return "?" + u
}

// urls returns the URL of first followed by every other node's (a client's failover list).
func (c *cluster) urls(first string) []string {
	out := []string{c.byName(first).URL()}
	for _, n := range c.nodes {
		if n.Name != first {
			out = append(out, n.URL())
		}
	}
	return out
}

// startLoopbackCluster starts size nodes on loopback, the first a new cluster and the others
// joining it, and waits until all are converged.
func startLoopbackCluster(t *testing.T, size int, extra ...string) *cluster {
	t.Helper()
	c := &cluster{t: t}
	for i := 0; i < size; i++ {
		n := harness.NewNode(t, fmt.Sprintf("n%d", i+1), append([]string{"--drain-duration", DrainDuration.String()}, extra...)...)
		if i > 0 {
			n.Args = append(n.Args, "--join", c.nodes[0].GossipAddr)
		}
		n.Start()
		c.nodes = append(c.nodes, n)
	}
	c.waitConverged(ConvergeBound, c.names()...)
	return c
}

// rejoinArgs makes n join through every other node's gossip address on its next start (a
// restarted seed must find the cluster that carried on without it).
func (c *cluster) rejoinArgs(n *harness.Node) {
	var args, seeds []string
	for i := 0; i < len(n.Args); i++ {
		if n.Args[i] == "--join" {
			i++
			continue
		}
		args = append(args, n.Args[i])
	}
	for _, o := range c.nodes {
		if o != n {
			seeds = append(seeds, o.GossipAddr)
		}
	}
	n.Args = append(args, "--join", strings.Join(seeds, ","))
}

// convergedErr reports why the nodes named are not one converged cluster of exactly them.
func (c *cluster) convergedErr(names ...string) error {
	for _, name := range names {
		v, err := view(c.byName(name))
		if err != nil {
			return err
		}
		alive, up := 0, 0
		for _, m := range v.Members {
			if m.Status == "alive" {
				alive++
			}
		}
		for _, p := range v.Peers {
			if p.Link == "up" && p.InterestSynced {
				up++
			}
		}
		if !v.Ready || alive != len(names) || up != len(names)-1 {
			return fmt.Errorf("%s: ready=%v alive=%d synced links up=%d (want %d nodes)", name, v.Ready, alive, up, len(names))
		}
	}
	return nil
}

func (c *cluster) waitConverged(within time.Duration, names ...string) time.Duration {
	c.t.Helper()
	start := time.Now()
	harness.Eventually(c.t, within, "cluster converged", func() error { return c.convergedErr(names...) })
	return time.Since(start)
}

// wantedErr checks that every node in `at` sees peer `wanter` wanting exactly `channels`
// channels, synced.
func (c *cluster) wantedErr(wanter string, channels int, at ...string) error {
	for _, name := range at {
		if name == wanter {
			continue
		}
		v, err := view(c.byName(name))
		if err != nil {
			return err
		}
		found := false
		for _, p := range v.Peers {
			if p.Name == wanter {
				found = true
				if p.Channels != channels || !p.InterestSynced {
					return fmt.Errorf("%s sees %s wanting %d channels (synced %v), want %d", name, wanter, p.Channels, p.InterestSynced, channels)
				}
			}
		}
		if !found {
			return fmt.Errorf("%s has no link from %s", name, wanter)
		}
	}
	return nil
}

// metricsTracker samples every node's per-peer gap and drop counters and accumulates their
// increases, surviving process restarts (a counter that went down restarted from zero).
type metricsTracker struct {
	mu    sync.Mutex
	last  map[string]float64 // node|metric|peer → last value
	total map[string]float64 // accumulated increases
	stop  chan struct{}
	done  chan struct{}
}

var trackedMetrics = []string{"sockmesh_mesh_gaps_total", "sockmesh_mesh_dropped_messages_total",
	"sockmesh_mesh_repaired_messages_total", "sockmesh_mesh_unrepaired_messages_total", "sockmesh_mesh_duplicate_messages_total"}

func newMetricsTracker(nodes func() []*harness.Node) *metricsTracker {
	m := &metricsTracker{last: map[string]float64{}, total: map[string]float64{}, stop: make(chan struct{}), done: make(chan struct{})}
	m.sample(nodes())
	go func() {
		defer close(m.done)
		tick := time.NewTicker(MetricsSampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-tick.C:
				m.sample(nodes())
			}
		}
	}()
	return m
}

// forget makes the next sample of node count from zero (call it when the node restarts).
func (m *metricsTracker) forget(node string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.last {
		if strings.HasPrefix(k, node+"|") {
			m.last[k] = 0
		}
	}
}

func (m *metricsTracker) sample(nodes []*harness.Node) {
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n.Exited() {
			continue
		}
		wg.Add(1)
		go func(n *harness.Node) {
			defer wg.Done()
			b, err := n.Get("/metrics")
			if err != nil {
				return
			}
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, line := range strings.Split(string(b), "\n") {
				for _, name := range trackedMetrics {
					if !strings.HasPrefix(line, name+"{") {
						continue
					}
					i := strings.Index(line, `peer="`)
					if i < 0 {
						continue
					}
					peer := line[i+6:]
					peer = peer[:strings.IndexByte(peer, '"')]
					v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
					k := n.Name + "|" + name + "|" + peer
					if j := strings.Index(line, `reason="`); j >= 0 {
						r := line[j+8:]
						k += "|" + r[:strings.IndexByte(r, '"')]
					}
					prev := m.last[k]
					if v >= prev {
						m.total[k] += v - prev
					} else {
						m.total[k] += v
					}
					m.last[k] = v
				}
			}
		}(n)
	}
	wg.Wait()
}

func (m *metricsTracker) finish(nodes []*harness.Node) {
	close(m.stop)
	<-m.done
	m.sample(nodes)
}

// pool is the checker's detection pool for origin → receiver: the receiver's gaps from the
// origin plus the origin's drops for the receiver.
func (m *metricsTracker) pool(origin, receiver string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int(m.total[receiver+"|sockmesh_mesh_gaps_total|"+origin] + m.total[origin+"|sockmesh_mesh_dropped_messages_total|"+receiver])
}

func (m *metricsTracker) totals() (gaps, dropped int) {
	return m.sum("sockmesh_mesh_gaps_total", ""), m.sum("sockmesh_mesh_dropped_messages_total", "")
}

// sum adds up metric over every node and peer (and, with reason, only that reason).
func (m *metricsTracker) sum(metric, reason string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k, v := range m.total {
		if !strings.Contains(k, "|"+metric+"|") {
			continue
		}
		if reason != "" && !strings.HasSuffix(k, "|"+reason) {
			continue
		}
		n += int(v)
	}
	return n
}

// load drives publishers and subscribers of one scenario through the checker.
type load struct {
	t    *testing.T
	c    *cluster
	rec  *checker.Recorder
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup
	subs map[string]*subscriber
	pubs map[string]*publisher
	mu   sync.Mutex
	// failed: nodes the scenario killed or stopped (publications that died with them are not
	// expected by recovering subscribers).
	failed []string
}

type subscriber struct {
	*checker.Sub
	cl       *client.Client
	closes   map[int]int // close code → count
	closesMu sync.Mutex
}

type publisher struct {
	*checker.Pub
	cl *client.Client
}

func newLoad(t *testing.T, c *cluster) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{t: t, c: c, rec: &checker.Recorder{}, ctx: ctx, stop: cancel, subs: map[string]*subscriber{}, pubs: map[string]*publisher{}}
	t.Cleanup(func() {
		cancel()
		l.wg.Wait()
	})
	return l
}

func (l *load) dial(urls []string, log *checker.ConnLog, raw func(ch, data []byte) bool, onClose func(int)) *client.Client {
	l.t.Helper()
	return l.dialWith(urls, log, raw, onClose, nil)
}

// dialWith is dial with the recovery options of a recovering subscriber (rec not nil).
func (l *load) dialWith(urls []string, log *checker.ConnLog, raw func(ch, data []byte) bool, onClose func(int), rec *checker.Sub) *client.Client {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var onRecovery func(string, bool, int, string)
	if rec != nil {
		onRecovery = rec.Answered
	}
	cl, err := client.Dial(ctx, client.Options{
		Recover: rec != nil, OnRecovery: onRecovery,
		URLs: urls, MinBackoff: ClientMinBackoff, MaxBackoff: ClientMaxBackoff, AckTimeout: 5 * time.Second,
		ConnectTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second,
		RawPublish: raw,
		OnConnect: func(st client.HandshakeStatus) {
			log.Up(l.c.nodeOfURL(st.URL), time.Now())
		},
		OnDisconnect: func(code int, _ string) {
			if code == 4000 { // the client's ping timeout: the server went silent
				log.DownSilent(time.Now())
			} else {
				log.Down(time.Now())
			}
			if onClose != nil {
				onClose(code)
			}
		},
	})
	if err != nil {
		l.t.Fatal(err)
	}
	if log.Node() == "" {
		log.Up(l.c.nodeOfURL(cl.Status().URL), time.Now())
	}
	l.t.Cleanup(func() { cl.Close() })
	return cl
}

// subscribe starts a subscriber on the node `at` (failing over to the others) for channels.
// Nothing is expected until expectFrom is called.
func (l *load) subscribe(id, at string, channels ...string) *subscriber {
	l.t.Helper()
	return l.subscribeWith(id, at, false, channels...)
}

// subscribeRecovering starts a subscriber that resubscribes with its position after every
// reconnect (client.Options.Recover), accounted by checker.AnalyzeRecovering.
func (l *load) subscribeRecovering(id, at string, channels ...string) *subscriber {
	l.t.Helper()
	return l.subscribeWith(id, at, true, channels...)
}

func (l *load) subscribeWith(id, at string, recovering bool, channels ...string) *subscriber {
	l.t.Helper()
	s := &subscriber{Sub: l.rec.NewSub(id), closes: map[int]int{}}
	var rec *checker.Sub
	if recovering {
		s.SetRecovering()
		rec = s.Sub
	}
	s.cl = l.dialWith(l.c.urls(at), &s.Conns, s.OnRaw, func(code int) {
		s.closesMu.Lock()
		s.closes[code]++
		s.closesMu.Unlock()
	}, rec)
	for _, ch := range channels {
		s.Holding(ch, time.Now())
		if err := s.cl.Subscribe(l.ctx, ch, func(string, json.RawMessage) {}); err != nil {
			l.t.Fatalf("%s subscribe %s: %v", id, ch, err)
		}
	}
	l.mu.Lock()
	l.subs[id] = s
	l.mu.Unlock()
	return s
}

// expectAll marks every subscriber's channels as live from now.
func (l *load) expectAll() {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.subs {
		for _, ch := range s.cl.Channels() {
			s.Expect(ch, now)
		}
	}
}

// publish starts a publisher on node `at` sending `rate` publications per second, round
// robin over channels, until the load stops or stopPub is called.
func (l *load) publish(id, at string, rate int, pad int, channels ...string) *publisher {
	l.t.Helper()
	p := &publisher{Pub: l.rec.NewPub(id)}
	p.cl = l.dial(l.c.urls(at), &p.Conns, nil, nil)
	l.mu.Lock()
	l.pubs[id] = p
	l.mu.Unlock()
	padding := strings.Repeat("x", pad)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(PublishTick)
		defer tick.Stop()
		per := float64(rate) * PublishTick.Seconds()
		acc := 0.0
		i := 0
		for {
			select {
			case <-l.ctx.Done():
				return
			case <-tick.C:
			}
			acc += per
			for ; acc >= 1; acc-- {
				ch := channels[i%len(channels)]
				i++
				m := p.Next(ch, padding)
				b, _ := json.Marshal(m)
				p.Record(m, p.cl.PublishRaw(ch, b))
			}
		}
	}()
	return p
}

// stopPublishing stops every publisher and returns the time after the last publication.
func (l *load) stopPublishing() time.Time {
	l.stop()
	l.wg.Wait()
	return time.Now()
}

// waitDelivered waits until every subscriber that is connected has received, from every
// publisher, the last publication that publisher sent before `end` (or times out quietly;
// the checker then counts what is missing).
func (l *load) waitDelivered(end time.Time, within time.Duration) {
	_ = harness.Poll(within, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		c, _ := l.rec.Analyze(end, nil)
		if c.Delivered+c.LostTold < c.Expected {
			return fmt.Errorf("%d of %d delivered", c.Delivered, c.Expected)
		}
		if rc, _ := l.rec.AnalyzeRecovering(end, l.failed...); rc.Delivered < rc.Expected {
			return fmt.Errorf("%d of %d delivered to recovering subscribers", rc.Delivered, rc.Expected)
		}
		return nil
	})
}

// jsSubscriber runs the real socketcluster-client (npm) as a subscriber process printing
// JSON lines; its deliveries feed the checker like a Go subscriber's.
type jsSubscriber struct {
	*checker.Sub
	ready chan struct{}
}

func (l *load) jsSubscribe(id, at string, channels ...string) *jsSubscriber {
	l.t.Helper()
	return l.jsSubscribeWith(id, at, false, channels...)
}

// jsSubscribeRecovering is jsSubscribe through the repository's recovery helper
// (clients/js/sockmesh-recovery.js): socketcluster-client reconnects to the same node, and
// the helper resubscribes with the channel's position.
func (l *load) jsSubscribeRecovering(id, at string, channels ...string) *jsSubscriber {
	l.t.Helper()
	return l.jsSubscribeWith(id, at, true, channels...)
}

func (l *load) jsSubscribeWith(id, at string, recovering bool, channels ...string) *jsSubscriber {
	l.t.Helper()
	js := &jsSubscriber{Sub: l.rec.NewSub(id), ready: make(chan struct{})}
	node := l.c.byName(at)
	host, port, _ := strings.Cut(node.WSAddr, ":")
	cmd := nodeCommand(l.t, "chaos-sub.cjs", host, port, strings.Join(channels, ","))
	if recovering {
		js.SetRecovering()
		cmd.Env = append(cmd.Env, "RECOVER=1")
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		readyOnce := sync.Once{}
		for sc.Scan() {
			var ev struct {
				Ev        string          `json:"ev"`
				Ch        string          `json:"ch"`
				Data      json.RawMessage `json:"data"`
				Recovered bool            `json:"recovered"`
				Missed    int             `json:"missed"`
				Reason    string          `json:"reason"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			switch ev.Ev {
			case "connect":
				js.Conns.Up(at, time.Now())
			case "disconnect":
				js.Conns.Down(time.Now())
			case "subscribed":
				js.Holding(ev.Ch, time.Now())
			case "ready":
				readyOnce.Do(func() { close(js.ready) })
			case "msg":
				js.Deliver(ev.Ch, ev.Data)
			case "answer":
				js.Answered(ev.Ch, ev.Recovered, ev.Missed, ev.Reason)
			}
		}
	}()
	select {
	case <-js.ready:
	case <-time.After(15 * time.Second):
		l.t.Fatalf("socketcluster-client subscriber %s not ready within 15s", id)
	}
	return js
}
