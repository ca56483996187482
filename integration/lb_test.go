package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/integration/harness"
)

// ensureNginx returns the nginx binary, installing Debian's nginx-light when it is missing
// and we are root; otherwise the test is skipped with the reason.
func ensureNginx(t *testing.T) string {
	t.Helper()
	find := func() string {
		if p, err := exec.LookPath("nginx"); err == nil {
			return p
		}
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
		return ""
	}
	if p := find(); p != "" {
		return p
	}
	if os.Geteuid() != 0 {
		t.Skip("nginx is not installed and we are not root to install it (apt-get install nginx-light)")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("nginx is not installed and there is no apt-get to install it")
	}
	install := func() ([]byte, error) {
		cmd := exec.Command("apt-get", "install", "-y", "-qq", "nginx-light")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	t.Log("installing nginx-light from Debian's packages")
	if out, err := install(); err != nil {
		_ = exec.Command("apt-get", "update", "-qq").Run()
		if out2, err := install(); err != nil {
			t.Skipf("could not install nginx-light: %v\n%s\n%s", err, out, out2)
		}
	}
	if p := find(); p != "" {
		return p
	}
	t.Skip("nginx-light installed but no nginx binary found")
	return ""
}

// ensureJSClient returns the directory of the real socketcluster-client (integration/jsclient,
// node_modules installed by `npm ci` there, which this runs when they are missing).
func ensureJSClient(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed: the real socketcluster-client cannot run")
	}
	dir, _ := filepath.Abs("jsclient")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "socketcluster-client", "package.json")); err == nil {
		return dir
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Skip("integration/jsclient/node_modules missing and no npm to install it (npm ci in integration/jsclient)")
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("npm ci in integration/jsclient failed: %v\n%s", err, out)
	}
	return dir
}

// nginxConfig turns deploy/nginx/sockmesh.conf into a runnable nginx.conf in dir: the three
// upstream servers become the nodes' client addresses and it listens on listen; the
// operators' server listens on opsListen in front of the first node's admin listener.
func nginxConfig(t *testing.T, dir, listen, opsListen string, nodes []*harness.Node) string {
	t.Helper()
	tmpl, err := os.ReadFile(filepath.Join("..", "deploy", "nginx", "sockmesh.conf"))
	if err != nil {
		t.Fatal(err)
	}
	site := string(tmpl)
	for i, n := range nodes {
		from := fmt.Sprintf("10.0.0.1%d:8000", i+1)
		if !strings.Contains(site, from) {
			t.Fatalf("deploy/nginx/sockmesh.conf has no upstream %s", from)
		}
		site = strings.ReplaceAll(site, from, n.WSAddr)
	}
	if !strings.Contains(site, "listen 80;") || !strings.Contains(site, "listen 10.0.0.1:8081;") || !strings.Contains(site, "http://10.0.0.11:8001;") {
		t.Fatal("deploy/nginx/sockmesh.conf has no `listen 80;`, no operators' `listen 10.0.0.1:8081;` or no admin upstream 10.0.0.11:8001")
	}
	site = strings.Replace(site, "listen 80;", "listen "+listen+";", 1)
	site = strings.Replace(site, "listen 10.0.0.1:8081;", "listen "+opsListen+";", 1)
	site = strings.Replace(site, "http://10.0.0.11:8001;", "http://"+nodes[0].AdminAddr+";", 1)
	if err := os.WriteFile(filepath.Join(dir, "sockmesh.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n" // workers must reach the test's private directory
	}
	main := fmt.Sprintf(`%sworker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    include %[2]s/sockmesh.conf;
}
`, user, dir)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// startNginx runs nginx in the foreground in front of nodes and returns its host:port and
// the operators' host:port.
func startNginx(t *testing.T, bin string, nodes []*harness.Node) (string, string) {
	t.Helper()
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t, false))
	ops := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t, false))
	conf := nginxConfig(t, dir, addr, ops, nodes)
	base := []string{"-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf}
	if out, err := exec.Command(bin, append(base, "-t")...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, append(base, "-g", "daemon off;")...)
	out, _ := os.Create(filepath.Join(dir, "stdout.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("--- nginx error.log ---\n%s", b)
		}
	})
	harness.Eventually(t, 10*time.Second, "nginx listening", func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	return addr, ops
}

// lbEvent is one line of integration/jsclient/lb-sub.cjs.
type lbEvent struct {
	T    int64  `json:"t"`
	Ev   string `json:"ev"`
	Code int    `json:"code"`
	Ch   string `json:"ch"`
	Data struct {
		S int   `json:"s"`
		T int64 `json:"t"`
	} `json:"data"`
}

// lbSub is one real socketcluster-client process.
type lbSub struct {
	ch     string
	mu     sync.Mutex
	events []lbEvent
	cmd    *exec.Cmd
}

func startLBSub(t *testing.T, jsdir, lbAddr, ch string) *lbSub {
	t.Helper()
	host, port, _ := net.SplitHostPort(lbAddr)
	s := &lbSub{ch: ch}
	s.cmd = exec.Command("node", filepath.Join(jsdir, "lb-sub.cjs"), host, port, ch)
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	s.cmd.Stderr = &stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e lbEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				s.mu.Lock()
				s.events = append(s.events, e)
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-done
		_ = s.cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("--- %s stderr ---\n%s", ch, stderr.String())
		}
	})
	return s
}

func (s *lbSub) snapshot() []lbEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]lbEvent(nil), s.events...)
}

// lastMsgPublishedAfter reports whether the client received a publication published after t.
func (s *lbSub) receivedPublishedAfter(t time.Time) bool {
	for _, e := range s.snapshot() {
		if e.Ev == "msg" && e.Data.T > t.UnixMilli() {
			return true
		}
	}
	return false
}

func connections(t *testing.T, n *harness.Node) int {
	var v struct {
		Connections int `json:"connections"`
	}
	if err := n.GetJSON("/cluster", &v); err != nil {
		t.Fatalf("%s /cluster: %v", n.Name, err)
	}
	return v.Connections
}

// Clients of the real socketcluster-client connect to a 3-node cluster through NGINX
// configured by deploy/nginx/sockmesh.conf. One node is killed (kill -9), another drained
// (SIGTERM); the clients reconnect through NGINX to the survivor and keep receiving what a
// Go client publishes there. The stated window: a client may miss only publications made
// from 300 ms before its disconnect until 500 ms after it has resubscribed (interest
// propagation); everything else arrives, exactly once. Drained clients are closed with 4000
// and come back at once.
func TestLoadBalancerKillAndDrain(t *testing.T) {
	nginx := ensureNginx(t)
	jsdir := ensureJSClient(t)
	const drain = 2 * time.Second
	nodes := startCluster(t, 3, "--drain-duration", drain.String())
	lb, ops := startNginx(t, nginx, nodes)
	t.Logf("nginx on %s in front of %s, %s, %s", lb, nodes[0].WSAddr, nodes[1].WSAddr, nodes[2].WSAddr)
	checkNginxAdminDoors(t, lb, ops, nodes[0])

	const nClients = 9
	subs := make([]*lbSub, nClients)
	for i := range subs {
		subs[i] = startLBSub(t, jsdir, lb, fmt.Sprintf("lb.%d", i))
		// One at a time, so that least_conn spreads them over the three nodes.
		harness.Eventually(t, 10*time.Second, "client subscribed", func() error {
			for _, e := range subs[i].snapshot() {
				if e.Ev == "subscribed" {
					return nil
				}
			}
			return fmt.Errorf("client %d not subscribed", i)
		})
	}
	for _, n := range nodes {
		if c := connections(t, n); c == 0 {
			t.Fatalf("nginx sent no client to %s: the test would not move anyone", n.Name)
		}
	}
	onN2, onN3 := connections(t, nodes[1]), connections(t, nodes[2])

	// The publisher: a Go client on n1, the node that survives.
	pub := dial(t, nodes[0].URL())
	var pmu sync.Mutex
	pubTimes := map[int]int64{}
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			select {
			case <-stopPub:
				return
			case <-tick.C:
			}
			now := time.Now().UnixMilli()
			pmu.Lock()
			pubTimes[seq] = now
			pmu.Unlock()
			for _, s := range subs {
				_ = pub.Publish(s.ch, map[string]int64{"s": int64(seq), "t": now})
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-stopPub:
		default:
			close(stopPub)
		}
		<-pubDone
	})
	everyoneReceivesAfter := func(what string, since time.Time, within time.Duration) {
		t.Helper()
		harness.Eventually(t, within, what, func() error {
			for i, s := range subs {
				if !s.receivedPublishedAfter(since) {
					return fmt.Errorf("client %d (%s) has received nothing published since %s", i, s.ch, since.Format("15:04:05.000"))
				}
			}
			return nil
		})
	}
	everyoneReceivesAfter("every client receives", time.Now(), 10*time.Second)
	time.Sleep(500 * time.Millisecond)

	// kill -9 one node: its clients see 1006 and come back through nginx with their backoff.
	killAt := time.Now()
	nodes[2].Kill()
	everyoneReceivesAfter("clients of the killed node back", time.Now().Add(200*time.Millisecond), 15*time.Second)
	t.Logf("after kill -9 of n3 (%d clients): back within %v", onN3, time.Since(killAt).Round(time.Millisecond))
	time.Sleep(300 * time.Millisecond)

	// Drain another with SIGTERM: its clients get 4000 over --drain-duration and reconnect at
	// once; the node waits for their channels to be wanted by n1, leaves and exits 0.
	onN2 = connections(t, nodes[1])
	drainAt := time.Now()
	if err := nodes[1].Stop(drain + 20*time.Second); err != nil {
		t.Fatalf("drained node: %v (want exit status 0)", err)
	}
	drainTook := time.Since(drainAt)
	if drainTook > drain+8*time.Second {
		t.Errorf("drain took %v, want about --drain-duration (%v) plus the handoff", drainTook, drain)
	}
	if !strings.Contains(nodes[1].Log(), "drain: interest handed off") {
		t.Errorf("drained node did not report its interest handed off:\n%s", lastChars(nodes[1].Log(), 2000))
	}
	everyoneReceivesAfter("every client receives after the drain", time.Now(), 10*time.Second)
	if c := connections(t, nodes[0]); c != nClients+1 {
		t.Errorf("survivor n1 has %d clients, want all %d and the publisher", c, nClients)
	}
	time.Sleep(500 * time.Millisecond)
	close(stopPub)
	<-pubDone
	time.Sleep(500 * time.Millisecond)

	// Analysis per client.
	pmu.Lock()
	defer pmu.Unlock()
	maxSeq := len(pubTimes)
	var kills, drains, missedIn, missedDrain, outside, dups int
	var drainGaps, killGaps []time.Duration
	for i, s := range subs {
		evs := s.snapshot()
		type window struct {
			from, to int64
			drain    bool
		}
		var wins []window
		got := map[int]int{}
		firstSub := int64(0)
		for j, e := range evs {
			switch e.Ev {
			case "subscribed":
				if firstSub == 0 {
					firstSub = e.T
				}
			case "msg":
				got[e.Data.S]++
			case "disconnect":
				w := window{from: e.T - 300, to: 1 << 62, drain: e.Code == 4000}
				for _, f := range evs[j+1:] {
					if f.Ev == "subscribed" {
						w.to = f.T + 500
						if e.Code == 4000 {
							drainGaps = append(drainGaps, time.Duration(f.T-e.T)*time.Millisecond)
						} else {
							killGaps = append(killGaps, time.Duration(f.T-e.T)*time.Millisecond)
						}
						break
					}
				}
				wins = append(wins, w)
				switch e.Code {
				case 4000:
					drains++
				default:
					kills++
				}
			}
		}
		for seq := 1; seq <= maxSeq; seq++ {
			if got[seq] > 1 {
				dups++
				t.Errorf("client %d: publication %d received %d times", i, seq, got[seq])
			}
			pt := pubTimes[seq]
			if got[seq] > 0 || pt < firstSub+500 {
				continue
			}
			in, inDrain := false, false
			for _, w := range wins {
				if pt >= w.from && pt <= w.to {
					in = true
					inDrain = inDrain || w.drain
				}
			}
			if in {
				missedIn++
				if inDrain {
					missedDrain++
				}
			} else {
				outside++
				t.Errorf("client %d (%s): publication %d (at %s) lost outside any reconnect window %v",
					i, s.ch, seq, time.UnixMilli(pt).Format("15:04:05.000"), wins)
			}
		}
	}
	sort.Slice(drainGaps, func(i, j int) bool { return drainGaps[i] < drainGaps[j] })
	sort.Slice(killGaps, func(i, j int) bool { return killGaps[i] < killGaps[j] })
	t.Logf("%d publications x %d channels; kill -9 moved %d clients (disconnects seen: %d), drain moved %d (4000 seen: %d, drain took %v); "+
		"missed inside the windows: %d (of which in drain windows: %d), outside: %d, duplicates: %d; disconnect-to-resubscribed: killed %v (client backoff 200-400 ms), drained %v",
		maxSeq, nClients, onN3, kills, onN2, drains, drainTook.Round(time.Millisecond), missedIn, missedDrain, outside, dups, killGaps, drainGaps)
	if kills < onN3 {
		t.Errorf("%d clients disconnected by the kill, want at least the %d n3 had", kills, onN3)
	}
	if drains < onN2 {
		t.Errorf("%d clients closed with 4000 by the drain, want the %d n2 had", drains, onN2)
	}
	for _, g := range drainGaps {
		if g > time.Second {
			t.Errorf("a drained client took %v to resubscribe, want an immediate reconnect", g)
		}
	}
}

func lastChars(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// The HAProxy configuration in deploy/ is valid (haproxy -c), when haproxy is installed.
func TestHAProxyConfigValid(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/haproxy"); err != nil {
			t.Skip("haproxy is not installed (apt-get install haproxy): deploy/haproxy/sockmesh.cfg not checked")
		}
		bin = "/usr/sbin/haproxy"
	}
	out, err := exec.Command(bin, "-c", "-f", filepath.Join("..", "deploy", "haproxy", "sockmesh.cfg")).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
}

// `sockmesh drain --admin URL` drains a node: readyz fails at once, its client is closed
// with 4000 and moves to the other node (Go client with both URLs), the node leaves and its
// process exits 0.
func TestDrainCommand(t *testing.T) {
	nodes := startCluster(t, 2, "--drain-duration", "1s")
	n1, n2 := nodes[0], nodes[1]
	sub := dial(t, n2.URL(), n1.URL())
	var col collector
	if err := sub.Subscribe(t.Context(), "dc", col.handler); err != nil {
		t.Fatal(err)
	}
	waitWanted(t, nodes, "n2", 1)
	pub := dial(t, n1.URL())
	// Without the admin token the node refuses, and does not drain.
	out, err := exec.Command(harness.Binary(t), "drain", "--admin", n2.AdminURL(), "--wait=false").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "401") {
		t.Fatalf("sockmesh drain without the admin token: %v\n%s", err, out)
	}
	if _, err := n2.Get("/readyz"); err != nil {
		t.Fatalf("readyz after a refused drain: %v", err)
	}
	out, err = exec.Command(harness.Binary(t), "drain", "--admin", n2.AdminURL(), "--admin-token", n2.AdminToken, "--wait=false").CombinedOutput()
	if err != nil {
		t.Fatalf("sockmesh drain: %v\n%s", err, out)
	}
	if _, err := n2.Get("/readyz"); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("readyz right after the drain request: %v, want 503", err)
	}
	cmd := exec.Command(harness.Binary(t), "drain", "--admin", n2.AdminURL(), "--timeout", "30s")
	cmd.Env = append(os.Environ(), "SOCKMESH_ADMIN_TOKEN="+n2.AdminToken) // as the k8s preStop hook passes it
	out, err = cmd.CombinedOutput()
	t.Logf("sockmesh drain (again, waiting):\n%s", out)
	if err != nil {
		t.Fatalf("sockmesh drain --wait: %v", err)
	}
	if err := n2.Stop(15 * time.Second); err != nil {
		t.Fatalf("drained node: %v (want exit status 0)", err)
	}
	harness.Eventually(t, 10*time.Second, "client moved to n1 receives", func() error {
		_ = pub.Publish("dc", "after")
		for _, m := range col.snapshot() {
			if m == `"after"` {
				return nil
			}
		}
		return fmt.Errorf("got %v", col.snapshot())
	})
}

// checkNginxAdminDoors: the public endpoint of deploy/nginx/sockmesh.conf reaches no admin
// path (404 from NGINX itself), and the operators' server passes the probes through and the
// rest only with the admin token.
func checkNginxAdminDoors(t *testing.T, public, ops string, n *harness.Node) {
	t.Helper()
	get := func(url, token string) int {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, p := range []string{"/metrics", "/cluster", "/ui", "/healthz", "/debug/pprof/", "/drain", "/socketcluster/../metrics"} {
		if code := get("http://"+public+p, n.AdminToken); code != http.StatusNotFound {
			t.Errorf("public endpoint %s: %d, want 404 (not proxied)", p, code)
		}
	}
	for p, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 401, "/cluster": 401, "/ui": 401} {
		if code := get("http://"+ops+p, ""); code != want {
			t.Errorf("operators' door %s without the token: %d, want %d", p, code, want)
		}
	}
	for _, p := range []string{"/metrics", "/cluster"} {
		if code := get("http://"+ops+p, n.AdminToken); code != http.StatusOK {
			t.Errorf("operators' door %s with the token: %d", p, code)
		}
	}
}
