package node

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func startTestNode(t testing.TB) *Node {
	t.Helper()
	n, err := New(Config{
		Name: "t", WSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		AuthKey: "k", Demo: true, DrainDuration: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

// wsClient is a minimal raw client: handshake, subscribe, read publications.
func wsClient(t testing.TB, url string, channels ...string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"#handshake","data":{"authToken":null},"cid":1}`))
	for i, ch := range channels {
		b, _ := json.Marshal(map[string]any{"event": "#subscribe", "data": map[string]string{"channel": ch}, "cid": i + 2})
		ws.WriteMessage(websocket.TextMessage, b)
	}
	// Wait for every ack (they may arrive batched).
	acks := 0
	for acks < len(channels)+1 {
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		acks += strings.Count(string(m), `"rid":`)
	}
	ws.SetReadDeadline(time.Time{})
	return ws
}

func TestNodeStartServeStopLeavesNoGoroutines(t *testing.T) {
	// zmq4 v0.17.0's PUB socket never stops its writer goroutine on Close (a library bug
	// measured in the reference); sockmesh creates one PUB per node, so one such goroutine
	// per node that ever started is expected. Everything else must be gone.
	defer goleak.VerifyNone(t, goleak.IgnoreAnyFunction("github.com/go-zeromq/zmq4.(*pubMWriter).run"))
	n := startTestNode(t)
	url := n.WSURL()
	var clients []*websocket.Conn
	for i := 0; i < 100; i++ {
		clients = append(clients, wsClient(t, url, "room"))
	}
	if got := n.Broker().Subscribers("room"); got != 100 {
		t.Fatalf("%d subscribers, want 100", got)
	}
	if err := n.Publish("room", json.RawMessage(`"hello"`)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func(c *websocket.Conn) {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, m, err := c.ReadMessage()
			if err != nil || !strings.Contains(string(m), `"hello"`) {
				t.Errorf("client got %q, %v", m, err)
			}
		}(c)
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		c.Close()
	}
	if got := n.Broker().Subscribers("room"); got != 0 {
		t.Fatalf("%d subscribers left after shutdown", got)
	}
}
