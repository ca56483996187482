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

	"github.com/sockmesh/sockmesh/client"
	"github.com/sockmesh/sockmesh/integration/harness"
)

// TestRecoveryBurstFromPeer: many clients of a node that died resubscribe at once on a node
// that was not receiving their channel, so every one of them needs the missed range from a
// peer. Each must get it, complete and in order: the peer answers a node's fetches at
// --mesh-fetch-rate (50/s by default), so a node must not ask once per client.
func TestRecoveryBurstFromPeer(t *testing.T) {
	const clients = 400
	nodes := startCluster(t, 3, "--recover-rule", "rb.*,1000,1m") // by a rule, end to end
	n1, n3 := nodes[0], nodes[2]
	pub, pos := missedOnAPeer(t, nodes, "rb.feed", 5, 20)
	seq := func(from, to int) []string {
		var s []string
		for i := from; i <= to; i++ {
			s = append(s, fmt.Sprintf("m%d", i))
		}
		return s
	}

	// 1. All at once: one fetch, waited for by the others.
	burst, _ := recoverMany(t, "at once", n3.URL(), "rb.feed", pos, clients, true, seq(6, 25))
	// 2. One after the other, faster than the peer answers fetches (50/s), with publications
	// in between: the kept answer, then what n3 received since.
	publishRange(t, pub, "rb.feed", "m", 26, 30)
	later, _ := recoverMany(t, "one after the other", n3.URL(), "rb.feed", pos, 200, false, seq(6, 30))
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
	recoverMany(t, "after a break in receiving", n3.URL(), "rb.feed", pos, 1, false, seq(6, 35))

	// 4. A hostile position: 30,000 invented origins (about 500 KB in one frame) beside the
	// real one. The peer refuses a request that large unread, the client is told its recovery
	// is incomplete, and the next client recovers as before.
	huge := position{Seqs: map[string]uint64{}, Time: pos.Time}
	for o, sq := range pos.Seqs {
		huge.Seqs[o] = sq
	}
	for i := range 30_000 {
		huge.Seqs[fmt.Sprintf("invented-%d", i)] = uint64(i + 1)
	}
	h := dialRecoverer(t, n3.URL())
	replayedHuge, ans := h.resubscribe("rb.feed", &huge)
	t.Logf("a 30,000-origin position: %d replayed, answer %s", len(replayedHuge), ans)
	if !strings.Contains(ans, `"recovered":false`) {
		t.Fatalf("a 30,000-origin position: answer %s, want incomplete", ans)
	}
	recoverMany(t, "after a hostile position", n3.URL(), "rb.feed", pos, 1, false, seq(6, 35))
}

// missedOnAPeer makes ch a channel that nodes[1] receives all along (a subscriber stays) and
// nodes[2] never does; a client of nodes[1] takes the first seen of nodes[0]'s publications m1,
// m2, … and leaves, and missed more are published. It returns the publisher and the client's
// position.
func missedOnAPeer(t *testing.T, nodes []*harness.Node, ch string, seen, missed int) (*client.Client, position) {
	t.Helper()
	keeper := dial(t, nodes[1].URL())
	if err := keeper.Subscribe(context.Background(), ch, func(string, json.RawMessage) {}); err != nil {
		t.Fatal(err)
	}
	waitWanted(t, nodes, nodes[1].Name, 1)
	settle()
	pub := dial(t, nodes[0].URL())
	a := dialRecoverer(t, nodes[1].URL())
	a.send(`{"event":"#subscribe","data":{"channel":"` + ch + `"},"cid":2}`)
	if m := a.next(); !strings.Contains(m, `"rid":2`) {
		t.Fatalf("subscribe: %s", m)
	}
	var pos position
	publishRange(t, pub, ch, "m", 1, seen)
	a.take(seen, &pos)
	a.ws.Close()
	publishRange(t, pub, ch, "m", seen+1, seen+missed)
	return pub, pos
}

// recoverMany connects n clients to url, then has them resubscribe to ch from pos, all at
// once or one after the other; each must get want, in order, and a complete answer. It returns
// the connections and how long the recoveries took.
func recoverMany(t *testing.T, what, url, ch string, pos position, n int, together bool, want []string) ([]*websocket.Conn, time.Duration) {
	t.Helper()
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		conns[i] = dialRecoverer(t, url).ws
	}
	sub, _ := json.Marshal(map[string]any{"channel": ch, "data": map[string]any{"recover": pos}})
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
	took := time.Since(begin)
	close(errs)
	failed := 0
	for err := range errs {
		if failed < 3 {
			t.Error(err)
		}
		failed++
	}
	t.Logf("%s: %d clients recovered %d publications each in %s; %d failed", what, n, len(want), took.Round(time.Millisecond), failed)
	if failed > 0 {
		t.FailNow()
	}
	return conns, took
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
	_, pos := missedOnAPeer(t, nodes, "rp.feed", 2, 60)
	var want []string
	for i := 3; i <= 62; i++ {
		want = append(want, fmt.Sprintf("m%d", i))
	}
	const clients = 10
	_, took := recoverMany(t, "through a peer, paced", nodes[2].URL(), "rp.feed", pos, clients, true, want)
	// 600 publications at 200/s (bursts of 2): about 3 s; unpaced, well under a second.
	if took < 2*time.Second {
		t.Fatalf("%d recoveries of %d publications through a peer answered within %v: not paced by --recover-replay-rate 200", clients, len(want), took)
	}
}
