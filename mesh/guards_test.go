package mesh

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// One test per zmq4 v0.17.0 behaviour the mesh guards against (reference 1.4, 1.5, 1.7). Each
// fails (or crashes the test binary) if its guard is removed.

// Without the frame check, zmq4's PUB accepts a zero-frame message and its writer goroutine
// panics on Frames[0], killing the process.
func TestGuardZeroFrameSend(t *testing.T) {
	nodes := startCluster(t, 2)
	n1, n2 := nodes[0], nodes[1]
	if n1.pubSend() {
		t.Fatal("zero-frame message accepted")
	}
	if n1.pubSend([]byte{}) {
		t.Fatal("one-frame message accepted")
	}
	if n1.pubSend([]byte("chat"), []byte("x")) {
		t.Fatal("topic without NUL terminator accepted")
	}
	// The PUB writer is still alive: publications still flow.
	n2.AddInterest("after")
	waitInterest(t, nodes, "n2", "after", true)
	n1.Publish("after", []byte("ok"))
	waitFor(t, 5*time.Second, "delivery after refused sends", func() bool { return n2.rec.count("after") == 1 })
}

// zmq4's SUB.SetOption converts the value with an unchecked value.(string): a []byte panics.
func TestGuardSetOptionNonString(t *testing.T) {
	registerTransport()
	sub := zmq4.NewSub(context.Background())
	defer closeSocket(sub)
	if err := setOption(sub, zmq4.OptionSubscribe, []byte("a")); err == nil {
		t.Fatal("[]byte subscription accepted")
	}
	if err := setOption(sub, zmq4.OptionSubscribe, "a\x00"); err != nil {
		t.Fatalf("string subscription refused: %v", err)
	}
}

// zmq4's PUB runs the ZMTP handshake inline in its one accept loop: a TCP client that connects
// and says nothing blocks every later peer. The transport's handshake deadline closes it.
func TestGuardHandshakeDeadlineSilentClient(t *testing.T) {
	n1 := startMesh(t, "n1", nil, func(c *Config) { c.HandshakeTimeout = 300 * time.Millisecond })
	silent, err := net.Dial("tcp", n1.MeshEndpoint())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// Make sure the accept loop has picked up the silent client before the real peer dials.
	waitFor(t, 2*time.Second, "silent client accepted", func() bool {
		silent.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		var b [1]byte
		n, err := silent.Read(b[:])
		return n > 0 || (err != nil && !isTimeout(err)) // the PUB sent its greeting, or closed
	})

	start := time.Now()
	n2 := startMesh(t, "n2", []string{n1.GossipEndpoint()}, func(c *Config) { c.HandshakeTimeout = 300 * time.Millisecond })
	waitFor(t, 5*time.Second, "n2 linked to n1 despite the silent client", func() bool {
		return n2.Ready() && n1.Ready() && len(n2.Status().Peers) == 1
	})
	t.Logf("n2 linked after %v", time.Since(start))

	// The silent client was disconnected by the deadline.
	silent.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = io.ReadAll(silent)
	if err != nil {
		t.Fatalf("silent client not closed by the PUB: %v", err)
	}
	if n1.Status().HandshakeTimeouts == 0 {
		t.Fatal("handshake timeout not counted")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// zmq4's Dial to a peer whose kernel completes the TCP handshake but whose process never
// answers (frozen, or just not ZeroMQ) hangs forever: the greeting read has no deadline.
func TestGuardDialDeadline(t *testing.T) {
	registerTransport()
	ln, err := net.Listen("tcp", "127.0.0.1:0") // never accepts: the kernel backlog answers
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	opts := &connOpts{handshake: 300 * time.Millisecond}
	sub := zmq4.NewSub(withConnOpts(context.Background(), opts), zmq4.WithDialerMaxRetries(0))
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- dial(sub, "smtcp://"+ln.Addr().String()) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("dial to a silent listener succeeded")
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("dial returned after %v, deadline 300ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("dial to a silent listener still blocked after 5s")
	}
	closeSocket(sub)
}

// zmq4's PUB writes to all peers from one goroutine with blocking writes: one peer that stops
// reading stops delivery to every peer. The stall watchdog closes that peer's connection.
func TestGuardStallWatchdog(t *testing.T) {
	big := func(c *Config) {
		c.StallTimeout = 400 * time.Millisecond
		c.PeerQueueBytes = 64 << 20
	}
	n1 := startMesh(t, "n1", nil, big)
	n2 := startMesh(t, "n2", []string{n1.GossipEndpoint()}, big)
	waitFor(t, 5*time.Second, "linked", func() bool { return n1.Ready() && n2.Ready() && len(n1.Status().Peers) == 1 })
	n2.AddInterest("bulk")
	waitInterest(t, []*testNode{n1}, "n2", "bulk", true)

	raw := stuckSubscriber(t, n1.MeshEndpoint(), "frozen", n2.mailbox)
	defer raw.Close()

	const N, size = 1000, 16 << 10 // 16 MB: far beyond the socket buffers
	payload := make([]byte, size)
	for range N {
		n1.Publish("bulk", payload)
	}
	waitFor(t, 20*time.Second, "all publications at n2 despite the frozen subscriber", func() bool {
		return n2.rec.count("bulk") == N
	})
	// The frozen subscriber no longer delays n2 (its own send queue absorbs the backlog), and
	// the watchdog still frees it.
	waitFor(t, 5*time.Second, "the watchdog closes the frozen subscriber", func() bool {
		return n1.Status().StalledConnections > 0
	})
	if ps := peerStatus(n2.Mesh, "n1"); ps.Gaps != 0 {
		t.Fatalf("n2 counted %d gaps", ps.Gaps)
	}
}
