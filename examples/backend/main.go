// Command backend is an example backend that joins a sockmesh cluster as a member (package
// mesh/member): it listens to order channels, and for every order event it publishes a
// notification to another channel that browsers subscribe to. No WebSocket, no HTTP, no
// broker in between: the member is on the mesh like a node.
//
//	go run ./examples/backend --join 127.0.0.1:8003 --in orders.created,orders.paid --out notifications
//
// Every publication received is printed as `received CHANNEL DATA`, every notification as
// `published CHANNEL DATA`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sockmesh/sockmesh/mesh"
	"github.com/sockmesh/sockmesh/mesh/member"
)

func main() {
	name := flag.String("name", "backend", "member name, unique in the cluster")
	meshAddr := flag.String("mesh-addr", "127.0.0.1:8102", "this member's ZeroMQ publish socket")
	gossipAddr := flag.String("gossip-addr", "127.0.0.1:8103", "this member's Serf address (TCP and UDP)")
	join := flag.String("join", "127.0.0.1:8003", "comma-separated gossip addresses of the nodes (the nodes' --join seeds)")
	in := flag.String("in", "orders.created,orders.paid,orders.shipped", "comma-separated channels to react to")
	out := flag.String("out", "notifications", "channel the notifications go to")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m, err := member.New(mesh.Config{
		Name: *name, MeshAddr: *meshAddr, GossipAddr: *gossipAddr,
		Join: strings.Split(*join, ","), Logger: log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := m.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Handlers run on the mesh's receive goroutines: react quickly. Publish never blocks.
	react := func(ch string, data json.RawMessage) {
		fmt.Printf("received %s %s\n", ch, data)
		var order struct {
			ID any `json:"id"`
		}
		_ = json.Unmarshal(data, &order)
		event := ch[strings.LastIndexByte(ch, '.')+1:]
		note := map[string]any{"order": order.ID, "event": event, "by": *name, "at": time.Now().UTC().Format(time.RFC3339Nano)}
		if err := m.Publish(*out, note); err != nil {
			fmt.Fprintln(os.Stderr, "publish:", err)
			return
		}
		b, _ := json.Marshal(note)
		fmt.Printf("published %s %s\n", *out, b)
	}
	for _, ch := range strings.Split(*in, ",") {
		if ch = strings.TrimSpace(ch); ch == "" {
			continue
		}
		if _, err := m.Subscribe(ch, react); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	fmt.Printf("member %s joined through %s, listening to %s\n", *name, *join, *in)
	select {
	case <-ctx.Done():
	case err := <-m.Err():
		fmt.Fprintln(os.Stderr, "fatal:", err)
	}
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = m.Close(cctx)
}
