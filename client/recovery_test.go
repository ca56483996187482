package client_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/client"
	"github.com/sockmesh/sockmesh/node"
)

// With Options.Recover, a client whose connection drops resubscribes with its last position
// and a sockmesh node serving the channel as a recovery channel replays what it missed, once
// and in order, before anything newer; OnRecovery hears the answer (docs/recovery.md).
func TestRecoverAcrossAReconnect(t *testing.T) {
	n, err := node.New(node.Config{Name: "r", WSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0",
		GossipAddr: "127.0.0.1:0", DrainDuration: time.Millisecond, Recover: node.RecoverConfig{Channels: []string{"rc.*"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := func(o client.Options) *client.Client {
		o.URLs = []string{n.WSURL()}
		c, err := client.Dial(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	keeper := dial(client.Options{})
	if err := keeper.Subscribe(ctx, "rc.feed", func(string, json.RawMessage) {}); err != nil {
		t.Fatal(err)
	}
	pub := dial(client.Options{})

	var mu sync.Mutex
	var got []string
	type answer struct {
		recovered bool
		missed    int
		reason    string
	}
	answers := make(chan answer, 4)
	a := dial(client.Options{Recover: true, MinBackoff: 500 * time.Millisecond, MaxBackoff: time.Second,
		OnRecovery: func(ch string, recovered bool, missed int, reason string) {
			answers <- answer{recovered, missed, reason}
		}})
	if err := a.Subscribe(ctx, "rc.feed", func(_ string, d json.RawMessage) {
		mu.Lock()
		got = append(got, string(d))
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	wait := func(k int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); count() < k; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d publications", count(), k)
			}
		}
	}
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			if err := pub.PublishAck(ctx, "rc.feed", i); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(1, 3)
	wait(3)
	// Drop A's connection from the server side; it reconnects after its 500 ms backoff (not
	// with 4000, after which the first attempt is immediate and may come back before the
	// publications below: then nothing is missed, which made this test fail now and then).
	for _, s := range n.Front().Sockets() {
		if s.ID() == a.ID() {
			s.Close(4500, "test")
		}
	}
	publish(4, 6)
	select {
	case ans := <-answers:
		// The close races the first publications after it: those that reach the socket
		// before it is gone are received, not missed; at least the last one is missed.
		if !ans.recovered || ans.missed < 1 || ans.missed > 3 {
			t.Fatalf("answer %+v, want recovered with 1 to 3 missed", ans)
		}
	case <-ctx.Done():
		t.Fatal("no recovery answer")
	}
	wait(6)
	publish(7, 7)
	wait(7)
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for i, d := range got {
		if d != strconv.Itoa(i+1) {
			t.Fatalf("received %v, want 1..7 each once, in order", got)
		}
	}
	if len(got) != 7 {
		t.Fatalf("received %v, want 1..7", got)
	}
}
