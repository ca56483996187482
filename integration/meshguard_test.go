package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/integration/harness"
)

// Issue 16 against the real binary: hostile bytes on the mesh port, and a subscribe burst that
// must not cost anyone else's messages.

const testClusterKey = "c29ja21lc2gtdGVzdC1jbHVzdGVyLWtleS0zMmJ5dGU="

// zmtp builds the byte sequences a ZMTP 3 peer sends.
func zmtpGreeting() []byte {
	g := make([]byte, 64)
	g[0], g[9], g[10] = 0xFF, 0x7F, 3
	copy(g[12:], "NULL")
	return g
}

func zmtpReady(meta []byte) []byte {
	body := append([]byte{5}, "READY"...)
	body = append(body, meta...)
	return append([]byte{0x04, byte(len(body))}, body...)
}

func zmtpProp(k, v string) []byte {
	b := append([]byte{byte(len(k))}, k...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

func longFrame(n uint64) []byte { return binary.BigEndian.AppendUint64([]byte{0x02}, n) }

func hostileMeshInputs() map[string][]byte {
	sub := append(zmtpGreeting(), zmtpReady(zmtpProp("Socket-Type", "SUB"))...)
	rng := rand.New(rand.NewPCG(16, 73))
	random := make([]byte, 8192)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	subs := bytes.Clone(sub)
	for range 10_000 {
		subs = append(subs, 0, 5, 1, 2, 'x', 'y', 0)
	}
	return map[string][]byte{
		"73 bytes announcing 1 TiB":   append(bytes.Clone(sub), longFrame(1<<40)...),
		"length 2^64-1":               append(bytes.Clone(sub), longFrame(^uint64(0))...),
		"truncated greeting":          zmtpGreeting()[:30],
		"READY metadata past its end": append(zmtpGreeting(), zmtpReady([]byte{11, 'S', 'o', 'c', 'k', 'e', 't', '-', 'T', 'y', 'p', 'e', 0xff, 0xff, 0xff, 0xff})...),
		"READY without a socket type": append(zmtpGreeting(), zmtpReady(zmtpProp("Identity", "x"))...),
		"random bytes":                random,
		"junk messages":               append(bytes.Clone(sub), bytes.Repeat([]byte{0, 4, 'j', 'u', 'n', 'k'}, 50)...),
		"10,000 subscriptions":        subs,
	}
}

// TestMeshPortHostileBytes: every hostile input to the mesh port of a keyed and of an open
// node leaves both nodes alive, delivering, and within their memory; each is refused and
// counted; a stranger learns nothing from a keyed node. Before: the first input (73 bytes)
// killed the node with a fatal out-of-memory.
func TestMeshPortHostileBytes(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		name := "open"
		var extra []string
		if keyed {
			name, extra = "keyed", []string{"--cluster-key", testClusterKey}
		}
		t.Run(name, func(t *testing.T) {
			nodes := startCluster(t, 2, extra...)
			n1, n2 := nodes[0], nodes[1]
			col := newSeqChecker()
			if err := dial(t, n2.URL()).Subscribe(context.Background(), "live", col.handler); err != nil {
				t.Fatal(err)
			}
			waitWanted(t, nodes, "n2", 1)
			pub := dial(t, n1.URL())
			sent := 0
			rss0 := rssKiB(n1.Pid())
			for what, in := range hostileMeshInputs() {
				c, err := net.Dial("tcp", n1.MeshAddr)
				if err != nil {
					t.Fatal(err)
				}
				go func() { _, _ = c.Write(in) }()
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				got, rerr := io.ReadAll(c)
				c.Close()
				if ne, ok := rerr.(net.Error); ok && ne.Timeout() {
					t.Fatalf("%s: the node kept the connection open for 5 s", what)
				}
				if keyed && len(got) != 0 {
					t.Fatalf("%s: a stranger read %d bytes from a keyed node", what, len(got))
				}
				if bytes.Contains(got, []byte("\x01ctl")) || bytes.Contains(got, []byte("n1-")) {
					t.Fatalf("%s: a stranger read topics or names: %q", what, got)
				}
				if n1.Exited() {
					t.Fatalf("%s: n1 died\n%s", what, n1.Log())
				}
				pub.Publish("live", pubMsg{P: "n1", S: sent})
				sent++
				harness.Eventually(t, 5*time.Second, "delivery after "+what, func() error {
					if n, _, _ := col.stats(); n < sent {
						return fmt.Errorf("%d of %d", n, sent)
					}
					return nil
				})
			}
			if _, err := n1.Get("/healthz"); err != nil {
				t.Fatal(err)
			}
			if _, dups, order := col.stats(); dups != 0 || order != 0 {
				t.Fatalf("duplicates %d, out of order or lost %d", dups, order)
			}
			if grown := rssKiB(n1.Pid()) - rss0; grown > 200<<10 {
				t.Fatalf("n1's RSS grew by %d MiB", grown>>10)
			}
			rejected, _ := n1.Metric("sockmesh_mesh_rejected_connections_total")
			if int(rejected) < len(hostileMeshInputs())-1 { // the truncated greeting may end as a timeout
				t.Fatalf("%v connections counted as rejected, want about %d", rejected, len(hostileMeshInputs()))
			}
			if keyed {
				if auth, _ := n1.Metric("sockmesh_mesh_rejected_connections_total", `reason="auth"`); auth < rejected {
					t.Fatalf("keyed node: %v of %v rejections are auth", auth, rejected)
				}
			}
			if !strings.Contains(n1.Log(), "mesh: connection rejected") {
				t.Fatal("no log line about the rejected connections")
			}
		})
	}
}

// TestSubscribeBurstLosesNothing (issue 16, scenario 3): two keyed nodes; a stream of 200
// publications/s from n1 to 50 subscribers on n2 while, twice, 100 connections on n1 each
// subscribe to 1,000 distinct channels, hold them 2 s and disconnect. Before: 5,600 of
// 160,000 deliveries lost (112 gaps on n2). Now: none lost, no gap, and a channel subscribed
// at the end of the burst gets its first cross-node publication within a second.
func TestSubscribeBurstLosesNothing(t *testing.T) {
	nodes := startCluster(t, 2, "--cluster-key", testClusterKey)
	n1, n2 := nodes[0], nodes[1]
	ctx := context.Background()
	const subs = 50
	var got atomic.Int64
	for range subs {
		c := dial(t, n2.URL())
		if err := c.Subscribe(ctx, "stream", func(string, json.RawMessage) { got.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	waitWanted(t, nodes, "n2", 1)
	pub := dial(t, n1.URL())
	var published atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if pub.Publish("stream", published.Load()) == nil {
					published.Add(1)
				}
			}
		}
	}()
	for round := range 2 {
		var bwg sync.WaitGroup
		clients := make(chan interface{ Close() error }, 100)
		for i := range 100 {
			bwg.Add(1)
			go func() {
				defer bwg.Done()
				c := dial(t, n1.URL())
				clients <- c
				for j := range 1000 {
					ch := fmt.Sprintf("burst-%d-%d-%d", round, i, j)
					if err := c.Subscribe(ctx, ch, func(string, json.RawMessage) {}); err != nil {
						t.Errorf("subscribe %s: %v", ch, err)
						return
					}
				}
			}()
		}
		bwg.Wait()
		close(clients)
		time.Sleep(2 * time.Second)
		for c := range clients {
			c.Close()
		}
	}
	// A channel subscribed at the end of the burst, on the bursting node.
	late := make(chan struct{}, 1)
	lc := dial(t, n1.URL())
	if err := lc.Subscribe(ctx, "late", func(string, json.RawMessage) {
		select {
		case late <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	subscribed := time.Now()
	lp := dial(t, n2.URL())
	harness.Eventually(t, 5*time.Second, "first publication on the late channel", func() error {
		lp.Publish("late", "x")
		select {
		case <-late:
			return nil
		case <-time.After(20 * time.Millisecond):
			return fmt.Errorf("nothing yet")
		}
	})
	if d := time.Since(subscribed); d > time.Second {
		t.Errorf("a channel subscribed after the burst got its first cross-node publication after %v", d)
	}
	close(stop)
	wg.Wait()
	want := published.Load() * subs
	harness.Eventually(t, 10*time.Second, "stream delivered", func() error {
		if g := got.Load(); g != want {
			return fmt.Errorf("%d of %d deliveries", g, want)
		}
		return nil
	})
	if gaps, _ := n2.Metric("sockmesh_mesh_gaps_total"); gaps != 0 {
		t.Fatalf("n2 counted %v gaps", gaps)
	}
	msgs, _ := n1.Metric("sockmesh_mesh_interest_messages_sent_total")
	changes, _ := n1.Metric("sockmesh_mesh_interest_changes_sent_total")
	t.Logf("%d deliveries, 0 lost; n1 announced %v interest changes in %v deltas", want, changes, msgs)
}
