package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"
)

// recorder collects what a mesh delivers.
type recorder struct {
	mu  sync.Mutex
	got map[string][]string // channel → payloads in arrival order
	pos map[string][]string // channel → positions, beside got
}

func newRecorder() *recorder {
	return &recorder{got: make(map[string][]string), pos: make(map[string][]string)}
}

func (r *recorder) deliver(ch string, data, pos []byte) {
	r.mu.Lock()
	r.got[ch] = append(r.got[ch], string(data))
	r.pos[ch] = append(r.pos[ch], string(pos))
	r.mu.Unlock()
}

func (r *recorder) positions(ch string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.pos[ch]...)
}

func (r *recorder) get(ch string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got[ch]...)
}

func (r *recorder) count(ch string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got[ch])
}

func testLogger() *slog.Logger {
	level := slog.LevelError
	if os.Getenv("MESH_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

type testNode struct {
	*Mesh
	rec *recorder
}

// startMesh starts a mesh on 127.0.0.1 with ephemeral ports, joined to seeds.
func startMesh(t testing.TB, name string, seeds []string, mod ...func(*Config)) *testNode {
	t.Helper()
	rec := newRecorder()
	cfg := Config{
		Name:             name,
		MeshAddr:         "127.0.0.1:0",
		GossipAddr:       "127.0.0.1:0",
		Join:             seeds,
		WSURL:            "ws://127.0.0.1:1/socketcluster/",
		Profile:          "local",
		Logger:           testLogger(),
		Deliver:          rec.deliver,
		UnsubscribeDelay: 200 * time.Millisecond,
	}
	for _, f := range mod {
		f(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { m.Close() })
	return &testNode{Mesh: m, rec: rec}
}

// startCluster starts n meshes, all joined to the first, and waits until all are ready.
func startCluster(t testing.TB, n int) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i := range n {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].GossipEndpoint()}
		}
		nodes = append(nodes, startMesh(t, fmt.Sprintf("n%d", i+1), seeds))
	}
	waitFor(t, 10*time.Second, "cluster ready", func() bool {
		for _, nd := range nodes {
			if !nd.Ready() || len(nd.Status().Peers) != n-1 {
				return false
			}
		}
		return true
	})
	return nodes
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// peerWants reports whether node m's table routes channel to the peer with logical name peer.
func peerWants(m *Mesh, peer, channel string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, p := range m.table.Route(channel) {
		if p.logical == peer {
			return true
		}
	}
	return false
}

// waitInterest waits until every node in from routes channel to peer.
func waitInterest(t testing.TB, from []*testNode, peer, channel string, want bool) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("%s wants %q = %v everywhere", peer, channel, want), func() bool {
		for _, nd := range from {
			if nd.cfg.Name == peer {
				continue
			}
			if peerWants(nd.Mesh, peer, channel) != want {
				return false
			}
		}
		return true
	})
}

func peerStatus(m *Mesh, peer string) PeerStatus {
	for _, ps := range m.Status().Peers {
		if ps.Name == peer {
			return ps
		}
	}
	return PeerStatus{}
}
