package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/client"
	"github.com/sockmesh/sockmesh/integration/harness"
)

const apiKey = "integration-api-key"

// startAPICluster starts size nodes, each with its own API listener, the same API key and
// the demo application (login by username), and returns them with their API base URLs.
func startAPICluster(t *testing.T, size int) ([]*harness.Node, []string) {
	t.Helper()
	nodes := make([]*harness.Node, size)
	apis := make([]string, size)
	for i := range nodes {
		addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t, false))
		apis[i] = "http://" + addr
		nodes[i] = harness.NewNode(t, fmt.Sprintf("n%d", i+1), "--api-addr", addr, "--api-key", apiKey, "--demo", "--auth-key", "integration-auth")
		if i > 0 {
			nodes[i].Args = append(nodes[i].Args, "--join", nodes[0].GossipAddr)
		}
		nodes[i].Start()
	}
	waitConverged(t, nodes)
	return nodes, apis
}

// apiCall does one API request with key ("" = none) and decodes the JSON answer into out.
func apiCall(t *testing.T, method, url, key string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	if key != "" {
		req.Header.Set("Authorization", "apikey "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, url, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

func subscribeCollect(t *testing.T, c *client.Client, ch string) *collector {
	t.Helper()
	col := &collector{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Subscribe(ctx, ch, col.handler); err != nil {
		t.Fatal(err)
	}
	return col
}

// A publication through the API of n2 reaches Go clients on n1 and n3; a missing or wrong
// key is refused with 401 and counted.
func TestAPIPublishReachesEveryNode(t *testing.T) {
	nodes, apis := startAPICluster(t, 3)
	c1, c3 := dial(t, nodes[0].URL()), dial(t, nodes[2].URL())
	col1, col3 := subscribeCollect(t, c1, "news"), subscribeCollect(t, c3, "news")
	waitWanted(t, nodes, "n1", 1)
	waitWanted(t, nodes, "n3", 1)

	var ans map[string]any
	if code := apiCall(t, "POST", apis[1]+"/api/publish", "", map[string]any{"channel": "news", "data": "x"}, &ans); code != 401 {
		t.Fatalf("no key: %d %v", code, ans)
	}
	if code := apiCall(t, "POST", apis[1]+"/api/publish", "wrong", map[string]any{"channel": "news", "data": "x"}, &ans); code != 401 {
		t.Fatalf("wrong key: %d %v", code, ans)
	}
	if code := apiCall(t, "POST", apis[1]+"/api/publish", apiKey, map[string]any{"channel": "news", "data": map[string]int{"n": 1}}, &ans); code != 200 {
		t.Fatalf("publish: %d %v", code, ans)
	}
	if code := apiCall(t, "POST", apis[1]+"/api/broadcast", apiKey, map[string]any{"channels": []string{"news", "other"}, "data": 2}, &ans); code != 200 {
		t.Fatalf("broadcast: %d %v", code, ans)
	}
	harness.Eventually(t, 5*time.Second, "API publications on n1 and n3", func() error {
		for name, col := range map[string]*collector{"n1": col1, "n3": col3} {
			if got := col.snapshot(); !slices.Equal(got, []string{`{"n":1}`, `2`}) {
				return fmt.Errorf("%s got %v", name, got)
			}
		}
		return nil
	})
	if v, err := nodes[1].Metric("sockmesh_api_requests_total", `endpoint="publish"`, `code="401"`); err != nil || v != 2 {
		t.Fatalf("401s counted: %v, %v; want 2", v, err)
	}
	if v, err := nodes[1].Metric("sockmesh_api_requests_total", `endpoint="publish"`, `code="200"`); err != nil || v != 1 {
		t.Fatalf("200s counted: %v, %v; want 1", v, err)
	}
	// sockmesh pub --api publishes the same way.
	out, err := exec.Command(harness.Binary(t), "pub", "--api", apis[1], "--api-key", apiKey, "news", `"from pub"`).CombinedOutput()
	if err != nil {
		t.Fatalf("sockmesh pub --api: %v\n%s", err, out)
	}
	out, err = exec.Command(harness.Binary(t), "pub", "--api", apis[1], "--api-key", "bad", "news", `1`).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "401") {
		t.Fatalf("sockmesh pub --api with a wrong key: %v\n%s", err, out)
	}
	harness.Eventually(t, 5*time.Second, "pub --api publication on n1 and n3", func() error {
		for name, col := range map[string]*collector{"n1": col1, "n3": col3} {
			if got := col.snapshot(); len(got) != 3 || got[2] != `"from pub"` {
				return fmt.Errorf("%s got %v", name, got)
			}
		}
		return nil
	})
}

type channelsAnswer struct {
	Channels []struct {
		Channel     string         `json:"channel"`
		Subscribers int            `json:"subscribers"`
		Nodes       map[string]int `json:"nodes"`
	} `json:"channels"`
	Nodes []struct {
		Node string `json:"node"`
		OK   bool   `json:"ok"`
	} `json:"nodes"`
	Complete bool `json:"complete"`
}

type countAnswer struct {
	Total    int  `json:"total"`
	Complete bool `json:"complete"`
	Nodes    []struct {
		Node  string `json:"node"`
		OK    bool   `json:"ok"`
		Count int    `json:"count"`
	} `json:"nodes"`
}

// /api/channels lists the channels of every node; kick and disconnect act on every node.
func TestAPIChannelsKickDisconnectClusterWide(t *testing.T) {
	nodes, apis := startAPICluster(t, 3)
	var mu sync.Mutex
	kicked := map[string]string{}
	closed := map[string]int{}
	dialNamed := func(name, url string) *client.Client {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, client.Options{URLs: []string{url}, AckTimeout: 5 * time.Second, MinBackoff: time.Second,
			OnKickOut: func(ch, msg string) { mu.Lock(); kicked[name] = ch + " " + msg; mu.Unlock() },
			OnDisconnect: func(code int, _ string) {
				mu.Lock()
				if closed[name] == 0 {
					closed[name] = code
				}
				mu.Unlock()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c1, c2, c3 := dialNamed("c1", nodes[0].URL()), dialNamed("c2", nodes[1].URL()), dialNamed("c3", nodes[2].URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c3.Invoke(ctx, "login", map[string]string{"username": "alice"}); err != nil {
		t.Fatal(err)
	}
	subscribeCollect(t, c1, "room.a")
	subscribeCollect(t, c1, "room.b")
	subscribeCollect(t, c2, "room.a")
	subscribeCollect(t, c3, "room.a")
	subscribeCollect(t, c3, "lobby")

	var ch channelsAnswer
	if code := apiCall(t, "GET", apis[0]+"/api/channels?pattern=room.*", apiKey, nil, &ch); code != 200 {
		t.Fatalf("channels: %d %+v", code, ch)
	}
	got, _ := json.Marshal(ch.Channels)
	if want := `[{"channel":"room.a","subscribers":3,"nodes":{"n1":1,"n2":1,"n3":1}},{"channel":"room.b","subscribers":1,"nodes":{"n1":1}}]`; string(got) != want || !ch.Complete || len(ch.Nodes) != 3 {
		t.Fatalf("channels %s (complete %v, nodes %+v), want %s", got, ch.Complete, ch.Nodes, want)
	}

	var ka countAnswer
	if code := apiCall(t, "POST", apis[1]+"/api/kick", apiKey, map[string]string{"channel": "room.a", "message": "closing"}, &ka); code != 200 || ka.Total != 3 || !ka.Complete {
		t.Fatalf("kick: %d %+v", code, ka)
	}
	harness.Eventually(t, 5*time.Second, "every client kicked out of room.a", func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range []string{"c1", "c2", "c3"} {
			if kicked[c] != "room.a closing" {
				return fmt.Errorf("kicked: %v", kicked)
			}
		}
		return nil
	})
	if code := apiCall(t, "GET", apis[2]+"/api/channels", apiKey, nil, &ch); code != 200 {
		t.Fatal(code)
	}
	var names []string
	for _, c := range ch.Channels {
		names = append(names, c.Channel)
	}
	sort.Strings(names)
	if !slices.Equal(names, []string{"lobby", "room.b"}) {
		t.Fatalf("channels after the kick: %v", names)
	}

	var da countAnswer
	if code := apiCall(t, "POST", apis[0]+"/api/disconnect", apiKey, map[string]any{"claim": "username", "value": "alice", "reason": "banned"}, &da); code != 200 || da.Total != 1 || !da.Complete {
		t.Fatalf("disconnect: %d %+v", code, da)
	}
	harness.Eventually(t, 5*time.Second, "alice's connection on n3 closed with 4500", func() error {
		mu.Lock()
		defer mu.Unlock()
		if closed["c3"] != 4500 || closed["c1"] != 0 || closed["c2"] != 0 {
			return fmt.Errorf("closed: %v", closed)
		}
		return nil
	})
}

// syncBuffer is a bytes.Buffer safe for a process's output and the test reading it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The example backend (a mesh/member) receives channel traffic published on every node and
// its publications reach clients on every node.
func TestBackendMemberAcrossNodes(t *testing.T) {
	nodes, apis := startAPICluster(t, 3)
	bin := filepath.Join(t.TempDir(), "backend")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/sockmesh/sockmesh/examples/backend").CombinedOutput(); err != nil {
		t.Fatalf("build examples/backend: %v\n%s", err, out)
	}
	var out syncBuffer
	cmd := exec.Command(bin, "--name", "backend",
		"--mesh-addr", fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t, false)),
		"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t, true)),
		"--join", nodes[1].GossipAddr, "--in", "orders.created", "--out", "notifications")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("backend output:\n%s", out.String())
		}
	})
	waitWanted(t, nodes, "backend", 1)

	var cols []*collector
	var pubs []*client.Client
	for i, n := range nodes {
		c := dial(t, n.URL())
		cols = append(cols, subscribeCollect(t, c, "notifications"))
		pubs = append(pubs, c)
		waitWanted(t, nodes, fmt.Sprintf("n%d", i+1), 1)
	}
	// The backend's link from every node is up and it knows every node's interest.
	harness.Eventually(t, 10*time.Second, "backend sees every node wanting notifications", func() error {
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
			if alive != 4 || !v.Ready {
				return fmt.Errorf("%s: %d alive, ready %v", n.Name, alive, v.Ready)
			}
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // the backend's view of the nodes' interest (no endpoint to poll it)
	for i, c := range pubs {
		if err := c.Publish("orders.created", map[string]int{"id": i + 1}); err != nil {
			t.Fatal(err)
		}
	}
	if code := apiCall(t, "POST", apis[2]+"/api/publish", apiKey, map[string]any{"channel": "orders.created", "data": map[string]int{"id": 4}}, nil); code != 200 {
		t.Fatalf("API publish: %d", code)
	}
	harness.Eventually(t, 10*time.Second, "backend received from every node and notified every node", func() error {
		o := out.String()
		for id := 1; id <= 4; id++ {
			if !strings.Contains(o, fmt.Sprintf(`received orders.created {"id":%d}`, id)) {
				return fmt.Errorf("backend did not receive id %d:\n%s", id, o)
			}
		}
		for i, col := range cols {
			got := col.snapshot()
			if len(got) != 4 {
				return fmt.Errorf("client on n%d got %d notifications: %v", i+1, len(got), got)
			}
			for id := 1; id <= 4; id++ {
				if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, fmt.Sprintf(`"order":%d`, id)) }) {
					return fmt.Errorf("client on n%d lacks order %d: %v", i+1, id, got)
				}
			}
		}
		return nil
	})
	if strings.Count(out.String(), "received ") != 4 {
		t.Fatalf("backend received duplicates:\n%s", out.String())
	}
}

// TestAPILatencyVsWebSocket logs the time from publish to delivery on another node's client,
// through the API and through a WebSocket client (numbers for docs/api.md; nothing asserted).
func TestAPILatencyVsWebSocket(t *testing.T) {
	nodes, apis := startAPICluster(t, 2)
	recv := make(chan struct{}, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub := dial(t, nodes[0].URL())
	if err := sub.Subscribe(ctx, "lat", func(string, json.RawMessage) { recv <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	waitWanted(t, nodes, "n1", 1)
	pub := dial(t, nodes[1].URL())
	hc := &http.Client{}
	body := []byte(`{"channel":"lat","data":{"n":1,"text":"hello world"}}`)
	const rounds = 300
	measure := func(publish func() error) (p50, p99 time.Duration) {
		var ds []time.Duration
		for i := 0; i < rounds; i++ {
			start := time.Now()
			if err := publish(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-recv:
			case <-time.After(5 * time.Second):
				t.Fatal("publication lost")
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds[len(ds)/2], ds[len(ds)*99/100]
	}
	apiPub := func() error {
		req, _ := http.NewRequest("POST", apis[1]+"/api/publish", bytes.NewReader(body))
		req.Header.Set("X-API-Key", apiKey)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	}
	wsPub := func() error { return pub.PublishRaw("lat", json.RawMessage(`{"n":1,"text":"hello world"}`)) }
	measure(apiPub) // warm up both paths
	measure(wsPub)
	a50, a99 := measure(apiPub)
	w50, w99 := measure(wsPub)
	t.Logf("publish on n2 → client on n1, %d rounds: API p50 %v p99 %v; WebSocket p50 %v p99 %v; API adds %v at p50",
		rounds, a50, a99, w50, w99, a50-w50)

	// Throughput: API publishes per second on one node, 8 concurrent keep-alive clients.
	const workers, per = 8, 500
	tr := &http.Transport{MaxIdleConnsPerHost: workers}
	hc = &http.Client{Transport: tr}
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				req, _ := http.NewRequest("POST", apis[1]+"/api/publish", bytes.NewReader([]byte(`{"channel":"nobody","data":1}`)))
				req.Header.Set("X-API-Key", apiKey)
				resp, err := hc.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	t.Logf("API throughput: %d publishes by %d concurrent clients in %v = %.0f/s", workers*per, workers, el, float64(workers*per)/el.Seconds())
}
