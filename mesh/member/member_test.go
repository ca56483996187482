package member_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sockmesh/sockmesh/mesh"
	"github.com/sockmesh/sockmesh/mesh/member"
	"github.com/sockmesh/sockmesh/node"
)

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMemberPublishesAndReceivesThroughANode(t *testing.T) {
	n, err := node.New(node.Config{Name: "n1", WSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0",
		GossipAddr: "127.0.0.1:0", GossipProfile: "local", DrainDuration: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(ctx)

	if _, err := member.New(mesh.Config{Name: "x", Deliver: func(string, []byte, []byte) {}}); err == nil {
		t.Fatal("a Deliver of one's own was accepted")
	}
	mb, err := member.New(mesh.Config{Name: "backend", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		Join: []string{n.Mesh().GossipEndpoint()}, Profile: "local"})
	if err != nil {
		t.Fatal(err)
	}
	if err := mb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer mb.Close(ctx)
	waitFor(t, "member ready", mb.Ready)

	got := make(chan string, 10)
	sub, err := mb.Subscribe("orders.created", func(ch string, data json.RawMessage) { got <- ch + " " + string(data) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Subscribe("", func(string, json.RawMessage) {}); err == nil {
		t.Fatal("empty channel accepted")
	}
	waitFor(t, "node knows the member's interest", func() bool {
		return slices.Contains(n.Mesh().PeerChannels("backend"), "orders.created")
	})
	n.Publish("orders.created", json.RawMessage(`{"id":1}`))
	select {
	case g := <-got:
		if g != `orders.created {"id":1}` {
			t.Fatalf("member got %s", g)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("member did not receive the node's publication")
	}

	// A client on the node receives the member's publication.
	ws, _, err := websocket.DefaultDialer.Dial(n.WSURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"#handshake","data":{},"cid":1}`))
	ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"#subscribe","data":{"channel":"billing"},"cid":2}`))
	waitFor(t, "member knows the node's interest", func() bool {
		return slices.Contains(mb.Mesh().PeerChannels("n1"), "billing")
	})
	if err := mb.Publish("billing", map[string]int{"order": 1}); err != nil {
		t.Fatal(err)
	}
	if err := mb.Publish("billing", json.RawMessage(`{bad`)); err == nil {
		t.Fatal("invalid JSON published")
	}
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(m), `#publish`) {
			if !strings.Contains(string(m), `{"channel":"billing","data":{"order":1}}`) {
				t.Fatalf("client got %s", m)
			}
			break
		}
	}

	// Own publications reach own handlers; unsubscribing withdraws the interest.
	mb.Publish("orders.created", json.RawMessage(`2`))
	if g := <-got; g != "orders.created 2" {
		t.Fatalf("own publication: %s", g)
	}
	sub.Unsubscribe()
	sub.Unsubscribe()
	waitFor(t, "interest withdrawn", func() bool { return len(n.Mesh().PeerChannels("backend")) == 0 })
}
