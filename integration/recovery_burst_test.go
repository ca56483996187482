package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sockmesh/sockmesh/integration/harness"
)

// TestRecoveryBurstFromPeer: many clients of a node that died resubscribe at once on a node
// that was not receiving their channel, so every one of them needs the missed range from a
// peer. Each must get it, complete and in order: the peer answers a node's fetches at
// --mesh-fetch-rate (50/s by default), so a node must not ask once per client.
func TestRecoveryBurstFromPeer(t *testing.T) {
	const clients = 400
	nodes := startCluster(t, 3, "--recover-rule", "rb.*,1000,1m") // by a rule, end to end
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	keeper := dial(t, n2.URL()) // n2 receives the channel all along; n3 never does
	if err := keeper.Subscribe(context.Background(), "rb.feed", func(string, json.RawMessage) {}); err != nil {
		t.Fatal(err)
	}
	waitWanted(t, nodes, n2.Name, 1)
	settle()
	pub := dial(t, n1.URL())
	a := dialRecoverer(t, n2.URL())
	a.send(`{"event":"#subscribe","data":{"channel":"rb.feed"},"cid":2}`)
	if m := a.next(); !strings.Contains(m, `"rid":2`) {
		t.Fatalf("subscribe: %s", m)
	}
	var pos position
	publishRange(t, pub, "rb.feed", "m", 1, 5)
	a.take(5, &pos)
	a.ws.Close()
	publishRange(t, pub, "rb.feed", "m", 6, 25)
	want := make([]string, 0, 20)
	for i := 6; i <= 25; i++ {
		want = append(want, fmt.Sprintf("m%d", i))
	}

	recoverMany := func(what string, n int, together bool, want []string) []*websocket.Conn {
		t.Helper()
		conns := make([]*websocket.Conn, n)
		for i := range conns {
			conns[i] = dialRecoverer(t, n3.URL()).ws
		}
		sub, _ := json.Marshal(map[string]any{"channel": "rb.feed", "data": map[string]any{"recover": pos}})
		req := fmt.Appendf(nil, `{"event":"#subscribe","data":%s,"cid":7}`, sub)
		begin := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i, ws := range conns {
			run := func() {
				if err := recoverOnce(ws, req, want); err != nil {
					errs <- fmt.Errorf("%s, client %d: %w", what, i, err)
				}
			}
			if !together {
				run()
				continue
			}
			wg.Add(1)
			go func() { defer wg.Done(); run() }()
		}
		wg.Wait()
		close(errs)
		failed := 0
		for err := range errs {
			if failed < 3 {
				t.Error(err)
			}
			failed++
		}
		t.Logf("%s: %d clients recovered %d publications each in %s; %d failed", what, n, len(want), time.Since(begin).Round(time.Millisecond), failed)
		if failed > 0 {
			t.FailNow()
		}
		return conns
	}
	seq := func(from, to int) []string {
		var s []string
		for i := from; i <= to; i++ {
			s = append(s, fmt.Sprintf("m%d", i))
		}
		return s
	}

	// 1. All at once: one fetch, waited for by the others.
	burst := recoverMany("at once", clients, true, seq(6, 25))
	// 2. One after the other, faster than the peer answers fetches (50/s), with publications
	// in between: the kept answer, then what n3 received since.
	publishRange(t, pub, "rb.feed", "m", 26, 30)
	later := recoverMany("one after the other", 200, false, seq(6, 30))
	kept, _ := n3.Metric("sockmesh_recovery_shared_bytes")
	viaPeer, _ := n3.Metric("sockmesh_recoveries_total", `outcome="complete"`, `source="peer"`)
	viaShared, _ := n3.Metric("sockmesh_recoveries_total", `outcome="complete"`, `source="shared"`)
	if kept <= 0 || viaPeer < 1 || viaPeer+viaShared != clients+200 {
		t.Fatalf("n3: %v bytes of answers kept, %v recoveries asked a peer and %v shared an answer; want some kept, and %d in all", kept, viaPeer, viaShared, clients+200)
	}
	t.Logf("n3: %v recoveries asked a peer, %v shared an answer; %v bytes of answers kept", viaPeer, viaShared, kept)
	// 3. n3 stops receiving the channel (every subscriber gone) and misses m31..m35: the kept
	// answer no longer continues into what n3 holds, and must not be used.
	for _, ws := range append(burst, later...) {
		ws.Close()
	}
	harness.Eventually(t, 10*time.Second, "n3's interest withdrawn", func() error {
		v, err := view(n1)
		if err != nil {
			return err
		}
		for _, p := range v.Peers {
			if p.Name == n3.Name && p.Channels != 0 {
				return fmt.Errorf("n1 sees n3 wanting %d channels", p.Channels)
			}
		}
		return nil
	})
	publishRange(t, pub, "rb.feed", "m", 31, 35)
	recoverMany("after a break in receiving", 1, false, seq(6, 35))
}

// recoverOnce sends a recovering subscribe and checks what comes back: the acknowledgement,
// the replay (want, in order) and a complete recovery answer.
func recoverOnce(ws *websocket.Conn, req []byte, want []string) error {
	if err := ws.WriteMessage(websocket.TextMessage, req); err != nil {
		return err
	}
	var got []string
	acked := false
	for {
		_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, m, err := ws.ReadMessage()
		if err != nil {
			return fmt.Errorf("after %d replayed: %w", len(got), err)
		}
		s := string(m)
		switch {
		case len(m) == 0:
			_ = ws.WriteMessage(websocket.TextMessage, nil)
		case strings.Contains(s, `"rid":7`):
			acked = true
		case strings.Contains(s, `"#publish"`):
			var p pubPacket
			if err := json.Unmarshal(m, &p); err != nil {
				return err
			}
			var d string
			_ = json.Unmarshal(p.Data.Data, &d)
			got = append(got, d)
		case strings.Contains(s, `"sockmesh:recovery"`):
			if !acked {
				return fmt.Errorf("answer before the acknowledgement: %s", s)
			}
			if strings.Join(got, ",") != strings.Join(want, ",") || !strings.Contains(s, `"recovered":true`) {
				return fmt.Errorf("replayed %v, answer %s; want %d publications, complete", got, s, len(want))
			}
			return nil
		default:
			return fmt.Errorf("unexpected %s", s)
		}
	}
}

// TestRecoveryFromPeerIsPaced: what a peer sends for a recovery is replayed within the node's
// --recover-replay-rate like what its own ring kept: ten clients recovering 60 publications
// each through a peer at 200 a second take about 3 s, every one complete and in order.
func TestRecoveryFromPeerIsPaced(t *testing.T) {
	nodes := startCluster(t, 3, "--recover-channels", "rp.*", "--recover-replay-rate", "200")
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	keeper := dial(t, n2.URL())
	if err := keeper.Subscribe(context.Background(), "rp.feed", func(string, json.RawMessage) {}); err != nil {
		t.Fatal(err)
	}
	waitWanted(t, nodes, n2.Name, 1)
	settle()
	pub := dial(t, n1.URL())
	a := dialRecoverer(t, n2.URL())
	a.send(`{"event":"#subscribe","data":{"channel":"rp.feed"},"cid":2}`)
	if m := a.next(); !strings.Contains(m, `"rid":2`) {
		t.Fatalf("subscribe: %s", m)
	}
	var pos position
	publishRange(t, pub, "rp.feed", "m", 1, 2)
	a.take(2, &pos)
	a.ws.Close()
	publishRange(t, pub, "rp.feed", "m", 3, 62)
	var want []string
	for i := 3; i <= 62; i++ {
		want = append(want, fmt.Sprintf("m%d", i))
	}
	const clients = 10
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		conns[i] = dialRecoverer(t, n3.URL()).ws
	}
	sub, _ := json.Marshal(map[string]any{"channel": "rp.feed", "data": map[string]any{"recover": pos}})
	req := fmt.Appendf(nil, `{"event":"#subscribe","data":%s,"cid":7}`, sub)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for _, ws := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := recoverOnce(ws, req, want); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// 600 publications at 200/s (bursts of 2): about 3 s; unpaced, well under a second.
	if took < 2*time.Second {
		t.Fatalf("%d recoveries of %d publications through a peer answered within %v: not paced by --recover-replay-rate 200", clients, len(want), took)
	}
	t.Logf("%d recoveries of %d publications through a peer, paced: %v", clients, len(want), took.Round(time.Millisecond))
}
