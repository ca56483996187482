package mesh

import (
	"io"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
)

// TestSlowPeerCostsOnlyItself: zmq4's PUB writes every message to every peer from one
// goroutine, so one subscriber that stops reading used to stop delivery to all of them (until
// the stall watchdog, here switched off, cut it). With a send queue and writer per peer, a
// healthy peer gets everything while the stuck one is cut once its queue passes PeerBuffer.
func TestSlowPeerCostsOnlyItself(t *testing.T) {
	cfg := func(c *Config) {
		c.StallTimeout = -1 // only the per-peer bound may act
		c.PeerBuffer = 1 << 20
		c.PeerQueueBytes = 64 << 20
	}
	n1 := startMesh(t, "n1", nil, cfg)
	n2 := startMesh(t, "n2", []string{n1.GossipEndpoint()}, cfg)
	waitFor(t, 5*time.Second, "linked", func() bool { return n1.Ready() && n2.Ready() })
	n2.AddInterest("bulk")
	waitInterest(t, []*testNode{n1}, "n2", "bulk", true)

	// A subscriber to n2's mailbox, then to a topic of its own: once n1's PUB lists the
	// second, it holds both.
	raw := stuckSubscriber(t, n1.MeshEndpoint(), "stuck", n2.mailbox, "\x02stuck\x00")
	defer raw.Close()
	waitFor(t, 2*time.Second, "stuck subscriber registered", func() bool {
		return slices.Contains(n1.pub.(zmq4.Topics).Topics(), "\x02stuck\x00")
	})

	const N, size = 1000, 16 << 10 // 16 MB: far beyond the socket buffers and the 1 MiB bound
	payload := make([]byte, size)
	for range N {
		n1.Publish("bulk", payload)
	}
	waitFor(t, 20*time.Second, "all publications at n2 despite the stuck subscriber", func() bool {
		return n2.rec.count("bulk") == N
	})
	waitFor(t, 2*time.Second, "the stuck subscriber counted as a slow peer", func() bool {
		return counterValue(t, n1.met.slowPeers, "unknown") >= 1
	})
	// Its connection is closed: after what the kernel buffered, the end of the stream.
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, raw); err != nil {
		t.Fatalf("the stuck subscriber's connection was not closed: %v", err)
	}
	// n2 took a 16 MB burst through a 1 MiB send queue: paced (its batches waited in the mesh's
	// queue for it), never cut.
	if ps := peerStatus(n2.Mesh, "n1"); ps.Gaps != 0 || ps.Reconnects != 0 {
		t.Fatalf("n2 counted %d gaps, %d reconnects", ps.Gaps, ps.Reconnects)
	}
	if v := counterValue(t, n1.met.slowPeers, "n2"); v != 0 {
		t.Fatalf("the healthy peer was cut %v times", v)
	}
}

// stuckSubscriber completes a ZMTP handshake with the PUB at addr as a SUB with a tiny receive
// window, subscribes to topics, and never reads again.
func stuckSubscriber(t *testing.T, addr, identity string, topics ...string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return serr
	}}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	zc, err := zmq4.Open(raw, null.Security(), zmq4.Sub, zmq4.SocketIdentity(identity), false, nil)
	if err != nil {
		raw.Close()
		t.Fatal(err)
	}
	for _, tp := range topics {
		if err := zc.SendMsg(zmq4.NewMsg(append([]byte{1}, tp...))); err != nil {
			raw.Close()
			t.Fatal(err)
		}
	}
	return raw
}
