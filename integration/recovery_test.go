package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sockmesh/sockmesh/client"
)

// recoverer is a raw SocketCluster client that reads positions off the #publish packets.
type recoverer struct {
	t  *testing.T
	ws *websocket.Conn
	// acked: when the last resubscribe's acknowledgement arrived.
	acked time.Time
}

func dialRecoverer(t *testing.T, url string) *recoverer {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	r := &recoverer{t: t, ws: ws}
	r.send(`{"event":"#handshake","data":{},"cid":1}`)
	if m := r.next(); !strings.Contains(m, `"rid":1`) {
		t.Fatalf("handshake: %s", m)
	}
	return r
}

func (r *recoverer) send(s string) {
	r.t.Helper()
	if err := r.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		r.t.Fatal(err)
	}
}

// next returns the next message other than a ping (answered).
func (r *recoverer) next() string {
	r.t.Helper()
	for {
		_ = r.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, m, err := r.ws.ReadMessage()
		if err != nil {
			r.t.Fatalf("read: %v", err)
		}
		if len(m) == 0 {
			r.send("")
			continue
		}
		return string(m)
	}
}

type pubPacket struct {
	Event string `json:"event"`
	Data  struct {
		Channel string            `json:"channel"`
		Data    json.RawMessage   `json:"data"`
		Pos     []json.RawMessage `json:"pos"`
	} `json:"data"`
}

// TestRecoveryAcrossNodes: a client that leaves one node and subscribes on another with its
// last position gets every publication it missed from two origins, once and in order per
// origin, then the live ones; the answer (acknowledgement and event) says it is complete.
// Past the retention bound the answer says incomplete. Without a position nothing changes.
func TestRecoveryAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3, "--recover-channels", "rc.*", "--recover-messages", "50")
	// A subscriber on every node: every node receives the channel from the start.
	for _, n := range nodes {
		if err := dial(t, n.URL()).Subscribe(context.Background(), "rc.news", func(string, json.RawMessage) {}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		waitWanted(t, nodes, n.Name, 1)
	}
	settle() // a node vouches for a channel from interestSettle after it began receiving it
	p1, p3 := dial(t, nodes[0].URL()), dial(t, nodes[2].URL())
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			if err := p1.PublishAck(context.Background(), "rc.news", fmt.Sprintf("a%d", i)); err != nil {
				t.Fatal(err)
			}
			if err := p3.PublishAck(context.Background(), "rc.news", fmt.Sprintf("c%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}

	a := dialRecoverer(t, nodes[1].URL())
	a.send(`{"event":"#subscribe","data":{"channel":"rc.news"},"cid":2}`)
	if m := a.next(); !strings.Contains(m, `"rid":2`) {
		t.Fatalf("subscribe: %s", m)
	}
	publish(1, 5)
	seqs := map[string]uint64{}
	var last int64
	for got := 0; got < 10; got++ {
		var p pubPacket
		if err := json.Unmarshal([]byte(a.next()), &p); err != nil || p.Event != "#publish" || len(p.Data.Pos) != 3 {
			t.Fatalf("publication %d without a position: %+v %v", got, p, err)
		}
		var o string
		var seq uint64
		_ = json.Unmarshal(p.Data.Pos[0], &o)
		_ = json.Unmarshal(p.Data.Pos[1], &seq)
		_ = json.Unmarshal(p.Data.Pos[2], &last)
		seqs[o] = seq
	}
	a.ws.Close()
	publish(6, 9) // missed by a

	pos, _ := json.Marshal(map[string]any{"recover": map[string]any{"seqs": seqs, "time": last}})
	b := dialRecoverer(t, nodes[2].URL())
	b.send(`{"event":"#subscribe","data":{"channel":"rc.news","data":` + string(pos) + `},"cid":2}`)
	var replayed []string
	var ack, event string
	for ack == "" || event == "" || len(replayed) < 8 {
		m := b.next()
		switch {
		case strings.Contains(m, `"rid":2`):
			ack = m
		case strings.Contains(m, `"sockmesh:recovery"`):
			event = m
		case strings.Contains(m, `"#publish"`):
			var p pubPacket
			_ = json.Unmarshal([]byte(m), &p)
			var s string
			_ = json.Unmarshal(p.Data.Data, &s)
			replayed = append(replayed, s)
		default:
			t.Fatalf("unexpected %s", m)
		}
	}
	var fromA, fromC []string
	for _, s := range replayed {
		if s[0] == 'a' {
			fromA = append(fromA, s)
		} else {
			fromC = append(fromC, s)
		}
	}
	if strings.Join(fromA, ",") != "a6,a7,a8,a9" || strings.Join(fromC, ",") != "c6,c7,c8,c9" {
		t.Fatalf("replayed %v, want a6..a9 and c6..c9 once each, in order", replayed)
	}
	for _, m := range []string{ack, event} {
		if !strings.Contains(m, `"recovered":true`) || !strings.Contains(m, `"missed":8`) {
			t.Errorf("answer %s, want recovered with 8 missed", m)
		}
	}
	publish(10, 10)
	for _, want := range []string{`"a10"`, `"c10"`} {
		if m := b.next(); !strings.Contains(m, `"#publish"`) {
			t.Fatalf("after the replay, want %s live: %s", want, m)
		}
	}

	// Past the bound (50 kept): the answer says incomplete.
	publish(11, 40)
	c := dialRecoverer(t, nodes[0].URL())
	c.send(`{"event":"#subscribe","data":{"channel":"rc.news","data":` + string(pos) + `},"cid":2}`)
	for {
		m := c.next()
		if strings.Contains(m, `"rid":2`) {
			if !strings.Contains(m, `"recovered":false`) || !strings.Contains(m, "retention bound") {
				t.Fatalf("past the bound: %s", m)
			}
			break
		}
	}
}

// publishRange publishes prefix+from … prefix+to on ch through c, each acknowledged.
func publishRange(t *testing.T, c *client.Client, ch, prefix string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := c.PublishAck(context.Background(), ch, fmt.Sprintf("%s%d", prefix, i)); err != nil {
			t.Fatal(err)
		}
	}
}

// settle waits out node.interestSettle (100 ms): a node vouches that it received a channel
// only from that long after it began receiving it (its interest takes that long, at most, to
// reach the channel's other origins).
func settle() { time.Sleep(150 * time.Millisecond) }

// position is what a recovering client keeps: per origin the last sequence, and the last time.
type position struct {
	Seqs map[string]uint64 `json:"seqs"`
	Time int64             `json:"time"`
}

// take reads n publications, returning their data (as strings) and advancing pos.
func (r *recoverer) take(n int, pos *position) []string {
	r.t.Helper()
	var out []string
	for len(out) < n {
		m := r.next()
		var p pubPacket
		if err := json.Unmarshal([]byte(m), &p); err != nil || p.Event != "#publish" {
			r.t.Fatalf("want a publication, got %s", m)
		}
		out = append(out, r.note(p, pos))
	}
	return out
}

func (r *recoverer) note(p pubPacket, pos *position) string {
	r.t.Helper()
	if len(p.Data.Pos) != 3 {
		r.t.Fatalf("publication without a position: %+v", p)
	}
	var o string
	var seq uint64
	_ = json.Unmarshal(p.Data.Pos[0], &o)
	_ = json.Unmarshal(p.Data.Pos[1], &seq)
	_ = json.Unmarshal(p.Data.Pos[2], &pos.Time)
	if pos.Seqs == nil {
		pos.Seqs = map[string]uint64{}
	}
	pos.Seqs[o] = seq
	var s string
	_ = json.Unmarshal(p.Data.Data, &s)
	return s
}

// resubscribe subscribes ch with pos and returns what was replayed before the answer, and the
// answer (the sockmesh:recovery event). The acknowledgement comes first; when the replay had to
// wait (its turn, or a peer) it has no data and the replay follows it.
func (r *recoverer) resubscribe(ch string, pos *position) (replayed []string, answer string) {
	r.t.Helper()
	b, _ := json.Marshal(map[string]any{"recover": pos})
	r.send(`{"event":"#subscribe","data":{"channel":"` + ch + `","data":` + string(b) + `},"cid":7}`)
	acked := false
	for {
		m := r.next()
		switch {
		case strings.Contains(m, `"rid":7`):
			acked = true
			r.acked = time.Now()
		case strings.Contains(m, `"sockmesh:recovery"`):
			if !acked {
				r.t.Fatalf("the recovery event came before the acknowledgement: %s", m)
			}
			return replayed, m
		case strings.Contains(m, `"#publish"`):
			var p pubPacket
			_ = json.Unmarshal([]byte(m), &p)
			replayed = append(replayed, r.note(p, pos))
		default:
			r.t.Fatalf("unexpected %s", m)
		}
	}
}

// TestRecoveryFromPeer: a client that resubscribes on a node that was not receiving the
// channel while it was away — a node without subscribers of it, the same node restarted after
// kill -9 — gets what it missed from a peer that was, once and in order, then the live ones,
// and is told the recovery is complete. A frozen peer or one past its retention bound makes
// the answer incomplete, with a reason, in bounded time.
func TestRecoveryFromPeer(t *testing.T) {
	nodes := startCluster(t, 3, "--recover-channels", "rc.*", "--recover-messages", "30", "--recover-fetch-timeout", "1s")
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	keeper := dial(t, n2.URL()) // n2 receives the channel all along; n1 and n3 have no subscriber
	if err := keeper.Subscribe(context.Background(), "rc.feed", func(string, json.RawMessage) {}); err != nil {
		t.Fatal(err)
	}
	waitWanted(t, nodes, n2.Name, 1)
	settle()
	pub := dial(t, n2.URL())
	publish := func(from, to int) { t.Helper(); publishRange(t, pub, "rc.feed", "m", from, to) }
	seq := func(from, to int) string {
		var s []string
		for i := from; i <= to; i++ {
			s = append(s, fmt.Sprintf("m%d", i))
		}
		return strings.Join(s, ",")
	}

	// 1. On n2, then away, then back on n1, which has never received the channel.
	var pos position
	a := dialRecoverer(t, n2.URL())
	a.send(`{"event":"#subscribe","data":{"channel":"rc.feed"},"cid":2}`)
	if m := a.next(); !strings.Contains(m, `"rid":2`) {
		t.Fatalf("subscribe: %s", m)
	}
	publish(1, 5)
	a.take(5, &pos)
	a.ws.Close()
	publish(6, 9)
	b := dialRecoverer(t, n1.URL())
	replayed, ack := b.resubscribe("rc.feed", &pos)
	if strings.Join(replayed, ",") != seq(6, 9) || !strings.Contains(ack, `"recovered":true`) || !strings.Contains(ack, `"missed":4`) {
		t.Fatalf("from a node that never received the channel: replayed %v, answer %s; want m6..m9, complete", replayed, ack)
	}
	publish(10, 12)
	if got := b.take(3, &pos); strings.Join(got, ",") != seq(10, 12) {
		t.Fatalf("live after the replay: %v", got)
	}

	// 2. n1 is killed and restarts; the client comes back to it with its position.
	b.ws.Close()
	n1.Kill()
	publish(13, 16)
	n1.Start()
	waitConverged(t, nodes)
	c := dialRecoverer(t, n1.URL())
	replayed, ack = c.resubscribe("rc.feed", &pos)
	if strings.Join(replayed, ",") != seq(13, 16) || !strings.Contains(ack, `"recovered":true`) {
		t.Fatalf("on the restarted node: replayed %v, answer %s; want m13..m16, complete", replayed, ack)
	}
	publish(17, 17)
	if got := c.take(1, &pos); got[0] != "m17" {
		t.Fatalf("live after the replay: %v", got)
	}
	c.ws.Close()

	// 3. Past the peer's retention bound (30 kept): incomplete, with the peer's reason.
	old := position{Seqs: map[string]uint64{}, Time: pos.Time}
	for o, s := range pos.Seqs {
		old.Seqs[o] = s
	}
	publish(18, 60)
	d := dialRecoverer(t, n3.URL())
	replayed, ack = d.resubscribe("rc.feed", &old)
	if !strings.Contains(ack, `"recovered":false`) || !strings.Contains(ack, "retention bound") {
		t.Fatalf("past the bound: answer %s (replayed %d)", ack, len(replayed))
	}
	d.ws.Close()

	// 4. The only peer that receives the channel is frozen: the answer comes within the fetch
	// timeout and says incomplete.
	var cur position
	e := dialRecoverer(t, n2.URL())
	e.send(`{"event":"#subscribe","data":{"channel":"rc.feed"},"cid":2}`)
	if m := e.next(); !strings.Contains(m, `"rid":2`) {
		t.Fatalf("subscribe: %s", m)
	}
	publish(61, 61)
	e.take(1, &cur)
	e.ws.Close()
	publish(62, 62) // missed; n3 never received the channel since case 3
	n2.Signal(syscall.SIGSTOP)
	defer n2.Signal(syscall.SIGCONT)
	f := dialRecoverer(t, n3.URL())
	start := time.Now()
	_, ack = f.resubscribe("rc.feed", &cur)
	took := time.Since(start)
	n2.Signal(syscall.SIGCONT)
	if !strings.Contains(ack, `"recovered":false`) || took > 3*time.Second {
		t.Fatalf("with the peer frozen: answer %s after %v; want incomplete within the 1 s fetch timeout", ack, took)
	}
	t.Logf("frozen peer: answered incomplete after %v: %s", took.Round(time.Millisecond), ack)
}

// TestRecoveryReplayIsPaced: past --recover-replay-rate a recovery waits its turn; what is
// published meanwhile is replayed too, in order, nothing twice, and the answer is complete.
func TestRecoveryReplayIsPaced(t *testing.T) {
	nodes := startCluster(t, 1, "--recover-channels", "rc.*", "--recover-replay-rate", "200") // bursts of 2
	n1 := nodes[0]
	pub := dial(t, n1.URL())
	publish := func(from, to int) { t.Helper(); publishRange(t, pub, "rc.feed", "m", from, to) }
	var pos position
	a := dialRecoverer(t, n1.URL())
	a.send(`{"event":"#subscribe","data":{"channel":"rc.feed"},"cid":2}`)
	if m := a.next(); !strings.Contains(m, `"rid":2`) {
		t.Fatalf("subscribe: %s", m)
	}
	publish(1, 2)
	a.take(2, &pos)
	a.ws.Close()
	publish(3, 62) // 60 missed: 30 bursts at 200/s, about 0.3 s
	b := dialRecoverer(t, n1.URL())
	go func() {
		time.Sleep(100 * time.Millisecond)
		publish(63, 65) // while the replay waits
	}()
	start := time.Now()
	replayed, ack := b.resubscribe("rc.feed", &pos)
	took := time.Since(start)
	if !strings.Contains(ack, `"recovered":true`) || took < 200*time.Millisecond {
		t.Fatalf("answer %s after %v; want complete, paced (about 0.3 s)", ack, took)
	}
	// The subscription itself was acknowledged at once (a client waits only so long for it).
	if d := b.acked.Sub(start); d > 100*time.Millisecond {
		t.Errorf("acknowledged after %v, want at once", d)
	}
	all := append(replayed, b.take(65-2-len(replayed), &pos)...)
	var want []string
	for i := 3; i <= 65; i++ {
		want = append(want, fmt.Sprintf("m%d", i))
	}
	if strings.Join(all, ",") != strings.Join(want, ",") {
		t.Fatalf("got %v\nwant m3..m65 once, in order", all)
	}
	t.Logf("paced replay of %d answered after %v", len(replayed), took.Round(time.Millisecond))
}
