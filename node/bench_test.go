package node

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// BenchmarkFanOut1000 measures single-node fan-out end to end over real loopback WebSockets:
// one publisher connection publishes (transmit #publish), 1,000 subscriber connections read.
// One op = one publication delivered to all 1,000 subscribers. The delivered/s metric is
// the figure to compare with other servers.
func BenchmarkFanOut1000(b *testing.B) {
	const subs = 1000
	n := startTestNode(b)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	}()
	url := n.WSURL()
	var delivered atomic.Int64
	var wg sync.WaitGroup
	conns := make([]*websocket.Conn, subs)
	for i := range conns {
		conns[i] = wsClient(b, url, "fan")
	}
	for _, c := range conns {
		wg.Add(1)
		go func(c *websocket.Conn) {
			defer wg.Done()
			for {
				_, m, err := c.ReadMessage()
				if err != nil {
					return
				}
				if len(m) == 0 {
					c.WriteMessage(websocket.TextMessage, nil)
					continue
				}
				delivered.Add(int64(strings.Count(string(m), `"#publish"`)))
			}
		}(c)
	}
	pub := wsClient(b, url)
	frame, _ := json.Marshal(map[string]any{"event": "#publish", "data": map[string]any{"channel": "fan", "data": strings.Repeat("x", 100)}})
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := pub.WriteMessage(websocket.TextMessage, frame); err != nil {
			b.Fatal(err)
		}
		// Keep at most ~200 publications in flight so the benchmark measures throughput,
		// not how fast queues overflow.
		for int64(i+1)*subs-delivered.Load() > 200*subs {
			time.Sleep(50 * time.Microsecond)
		}
	}
	want := int64(b.N) * subs
	deadline := time.Now().Add(60 * time.Second)
	for delivered.Load() < want && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	el := time.Since(start)
	b.StopTimer()
	if got := delivered.Load(); got < want {
		b.Fatalf("delivered %d of %d", got, want)
	}
	b.ReportMetric(float64(want)/el.Seconds(), "delivered/s")
	pub.Close()
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
}

// BenchmarkJoinOneChannel: 100,000 subscribers join one channel, then leave it (one op = the
// whole 100,000 both ways). With a copied slice per change this took 103 s and 89 s; the set
// is O(1) per join and leave.
func BenchmarkJoinOneChannel(b *testing.B) {
	const n = 100_000
	subs := make([]*countSub, n)
	for i := range subs {
		subs[i] = &countSub{}
	}
	br := NewBroker(2, nil, nil, nil)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		for _, s := range subs {
			br.SubscribeSub(s, "one")
		}
		joined := time.Since(start)
		br.Publish("one", json.RawMessage(`1`))
		for _, s := range subs {
			br.UnsubscribeSub(s, "one")
		}
		b.ReportMetric(joined.Seconds(), "s/100k-joins")
	}
}

// BenchmarkRecoveryReplay: one op = one client that reconnects and recovers 500 missed
// publications from the node's ring, end to end over loopback (subscribe with the position,
// read the replay and the answer). B/replayed is what the process allocated per replayed
// publication, the benchmark's raw client included; a storm of recovering clients is mostly
// this, and its garbage decides how often a busy survivor collects (docs/benchmarks.md,
// "Recovery storm").
func BenchmarkRecoveryReplay(b *testing.B) {
	const missed = 500
	n, err := New(Config{Name: "t", WSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		DrainDuration: time.Millisecond, Recover: RecoverConfig{Channels: []string{"rc.*"}, ReplayRate: -1}})
	if err != nil {
		b.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	}()
	url := n.WSURL()
	keeper := wsClient(b, url, "rc.feed") // the node keeps receiving the channel
	defer keeper.Close()
	go func() {
		for {
			if _, _, err := keeper.ReadMessage(); err != nil {
				return
			}
		}
	}()
	pub := wsClient(b, url)
	defer pub.Close()
	publish := func(i int) {
		f, _ := json.Marshal(map[string]any{"event": "#publish", "data": map[string]any{"channel": "rc.feed", "data": map[string]any{"i": i, "pad": strings.Repeat("x", 100)}}, "cid": i + 10})
		if err := pub.WriteMessage(websocket.TextMessage, f); err != nil {
			b.Fatal(err)
		}
		pub.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := pub.ReadMessage(); err != nil { // the acknowledgement
			b.Fatal(err)
		}
	}
	// The position of the first publication, read as a client reads it.
	first := wsClient(b, url, "rc.feed")
	publish(0)
	first.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, m, err := first.ReadMessage()
	if err != nil {
		b.Fatal(err)
	}
	first.Close()
	var pkt struct {
		Data struct {
			Pos []json.RawMessage `json:"pos"`
		} `json:"data"`
	}
	if json.Unmarshal(m, &pkt) != nil || len(pkt.Data.Pos) != 3 {
		b.Fatalf("no position in %s", m)
	}
	for i := 1; i <= missed; i++ {
		publish(i)
	}
	sub, _ := json.Marshal(map[string]any{"event": "#subscribe", "cid": 2, "data": map[string]any{"channel": "rc.feed",
		"data": map[string]any{"recover": map[string]any{"seqs": map[string]json.RawMessage{string(pkt.Data.Pos[0][1 : len(pkt.Data.Pos[0])-1]): pkt.Data.Pos[1]}, "time": pkt.Data.Pos[2]}}}})
	var buf bytes.Buffer
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	for range b.N {
		c := wsClient(b, url)
		if err := c.WriteMessage(websocket.TextMessage, sub); err != nil {
			b.Fatal(err)
		}
		got := 0
		for {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, r, err := c.NextReader()
			if err == nil {
				buf.Reset()
				_, err = buf.ReadFrom(r) // into one buffer: the client's own garbage stays small
			}
			if err != nil {
				b.Fatal(err)
			}
			m := buf.Bytes()
			got += bytes.Count(m, []byte(`"#publish"`))
			if bytes.Contains(m, []byte(`"sockmesh:recovery"`)) { // after the replay
				break
			}
		}
		if got != missed {
			b.Fatalf("replayed %d of %d", got, missed)
		}
		c.Close()
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(b.N*missed), "B/replayed")
}
