package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// recoverer is a raw SocketCluster client that reads positions off the #publish packets.
type recoverer struct {
	t  *testing.T
	ws *websocket.Conn
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
