package bench

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// fakeCentrifugo speaks the part of Centrifugo's JSON protocol the tool uses, the way
// Centrifugo writes it: several messages in one frame, one per line, a ping ({}) among
// pushes, replies by id. It counts the pongs ({} from a client).
type fakeCentrifugo struct {
	mu    sync.Mutex
	subs  map[string][]*fakeClient
	pongs atomic.Int64
}

type fakeClient struct {
	mu sync.Mutex
	ws *websocket.Conn
}

func (c *fakeClient) send(lines ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.ws.WriteMessage(websocket.TextMessage, []byte(strings.Join(lines, "\n")))
}

func (f *fakeCentrifugo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	c := &fakeClient{ws: ws}
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		for _, line := range bytes.Split(msg, []byte("\n")) {
			if string(line) == "{}" {
				f.pongs.Add(1)
				continue
			}
			var cmd struct {
				ID      int64     `json:"id"`
				Connect *struct{} `json:"connect"`
				Sub     *struct {
					Channel string `json:"channel"`
				} `json:"subscribe"`
				Pub *struct {
					Channel string          `json:"channel"`
					Data    json.RawMessage `json:"data"`
				} `json:"publish"`
			}
			if json.Unmarshal(line, &cmd) != nil || cmd.ID == 0 {
				return // Centrifugo closes on a bad command; every command needs an id
			}
			id := string(mustJSON(cmd.ID))
			switch {
			case cmd.Connect != nil:
				c.send(`{"id":` + id + `,"connect":{"client":"c","version":"0","ping":25,"pong":true}}`)
			case cmd.Sub != nil:
				f.mu.Lock()
				f.subs[cmd.Sub.Channel] = append(f.subs[cmd.Sub.Channel], c)
				f.mu.Unlock()
				c.send(`{"id":` + id + `,"subscribe":{}}`)
			case cmd.Pub != nil:
				f.mu.Lock()
				subs := f.subs[cmd.Pub.Channel]
				f.mu.Unlock()
				push := `{"push":{"channel":` + string(mustJSON(cmd.Pub.Channel)) + `,"pub":{"data":` + string(cmd.Pub.Data) + `}}}`
				for _, s := range subs {
					s.send(push, "{}", `{"push":{"channel":"other","pub":{"data":{}}}}`) // a ping between pushes
				}
				c.send(`{"id":` + id + `,"publish":{}}`)
			}
		}
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// The tool's Centrifugo protocol: connect, subscribe, publish with ids, acks by id, pings
// answered also when they share a frame with pushes, and every delivery counted.
func TestCentrifugoProtocol(t *testing.T) {
	f := &fakeCentrifugo{subs: map[string][]*fakeClient{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/connection/websocket"
	ack := true
	for _, cfg := range []Config{
		{Scenario: "fanout", Subscribers: 20, Publishers: 2, Rate: 100},
		{Scenario: "channels", Connections: 50, Rate: 200, Ack: &ack},
	} {
		cfg.URLs, cfg.Protocol, cfg.ServerPIDs = []string{url}, "centrifugo", []int{os.Getpid()}
		cfg.Duration, cfg.Warmup, cfg.Drain = 500*time.Millisecond, 0, time.Second
		before := f.pongs.Load()
		res := runOne(t, cfg)
		per := int64(20)
		if cfg.Scenario == "channels" {
			per = 1
			if res[0].AckP99Ms <= 0 || res[0].AckErrors != 0 {
				t.Fatalf("acks: %+v", res[0])
			}
		}
		checkTraffic(t, res[0], per)
		// Every delivery came with a ping behind it: one pong per delivery frame at least.
		if got := f.pongs.Load() - before; got < res[0].Delivered {
			t.Fatalf("%s: %d pongs for %d deliveries", cfg.Scenario, got, res[0].Delivered)
		}
	}
	if _, err := Run(t.Context(), Config{URLs: []string{url}, Protocol: "mqtt"}); err == nil || !strings.Contains(err.Error(), "unknown protocol") {
		t.Fatalf("unknown protocol: %v", err)
	}
}
