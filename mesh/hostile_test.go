package mesh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/proto/meshpb"
)

// Hostile bytes on the mesh port, from a stranger and from a member. zmq4 v0.17.0 allocates
// what a frame header announces, indexes READY metadata without bounds checks, and parks a
// subscriber's non-subscription messages for ever; the transport's guard must stop each before
// zmq4 sees it, close the connection, count it, and leave every other link working.

// zmtpGreetingBytes is a peer's ZMTP 3.0 greeting under NULL security.
func zmtpGreetingBytes(asServer bool) []byte {
	g := bytes.Clone(zmtpGreeting)
	if asServer {
		g[32] = 1
	}
	return g
}

// readyFrame is a READY command frame with the given metadata body.
func readyFrame(meta []byte) []byte {
	body := append([]byte{5}, "READY"...)
	body = append(body, meta...)
	return append([]byte{zmtpCommand, byte(len(body))}, body...)
}

func prop(k, v string) []byte {
	b := append([]byte{byte(len(k))}, k...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// longHeader is a message frame header announcing n bytes.
func longHeader(flags byte, n uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{flags | zmtpLong}, n)
}

func subHandshake() []byte {
	return append(zmtpGreetingBytes(false), readyFrame(prop("Socket-Type", "SUB"))...)
}

// hostileInputs are byte sequences a stranger sends to a PUB port, each with the reason it
// must be rejected under (on an open mesh; a keyed mesh rejects every one as "auth").
func hostileInputs() []struct {
	name, reason string
	bytes        []byte
} {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	subs := subHandshake()
	for range 10_000 {
		subs = append(subs, 0, 5, 1, 2, 'x', 'y', 0) // subscribe "\x02xy\x00"
	}
	junk := subHandshake()
	for range 20 {
		junk = append(junk, 0, 4, 'j', 'u', 'n', 'k')
	}
	return []struct {
		name, reason string
		bytes        []byte
	}{
		// The 73 bytes that used to kill a node: greeting, READY, a frame announcing 1 TiB.
		{"1TiB frame after READY", "frame_too_large", append(subHandshake(), longHeader(0, 1<<40)...)},
		{"2^64-1 frame after READY", "frame_too_large", append(subHandshake(), longHeader(0, ^uint64(0))...)},
		{"2^63 command before READY", "frame_too_large", append(zmtpGreetingBytes(false), longHeader(zmtpCommand, 1<<63)...)},
		{"READY metadata past its end", "bad_frame", append(zmtpGreetingBytes(false), readyFrame([]byte{11, 'S', 'o', 'c', 'k', 'e', 't', '-', 'T', 'y', 'p', 'e', 0xff, 0xff, 0xff, 0xff})...)},
		{"READY name length past its end", "bad_frame", append(zmtpGreetingBytes(false), readyFrame([]byte{200, 'x'})...)},
		{"not a greeting", "bad_greeting", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"random bytes", "bad_greeting", random},
		{"other mechanism", "bad_greeting", plainGreeting()},
		{"junk messages from a subscriber", "bad_frame", junk},
		{"10,000 subscriptions", "bad_frame", subs},
		{"multi-frame message from a subscriber", "bad_frame", append(subHandshake(), zmtpMore, 3, 1, 2, 0, 0, 3, 1, 2, 0)},
		{"reserved flag bits", "bad_frame", append(subHandshake(), 0x80, 1, 0)},
	}
}

func plainGreeting() []byte {
	g := zmtpGreetingBytes(false)
	copy(g[12:], "PLAIN")
	return g
}

// sendHostile connects to addr, writes b, and returns what came back before the node closed
// the connection (or the deadline passed).
func sendHostile(t *testing.T, addr string, b []byte, within time.Duration) (got []byte, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() { _, _ = c.Write(b) }()
	_ = c.SetReadDeadline(time.Now().Add(within))
	got, err = io.ReadAll(c)
	var ne net.Error
	timeout := err != nil && errors.As(err, &ne) && ne.Timeout()
	return got, !timeout
}

func TestHostileBytesOnMeshPort(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		name := "open"
		var mods []func(*Config)
		if keyed {
			name = "keyed"
			mods = append(mods, withKey(testKeyA))
		}
		t.Run(name, func(t *testing.T) {
			n1 := startMesh(t, "n1", nil, mods...)
			n2 := startMesh(t, "n2", []string{n1.GossipEndpoint()}, mods...)
			waitFor(t, 5*time.Second, "linked", func() bool { return n1.Ready() && n2.Ready() })
			n2.AddInterest("live")
			waitInterest(t, []*testNode{n1}, "n2", "live", true)
			sent := 0
			check := func(what string) {
				t.Helper()
				sent++
				n1.Publish("live", []byte("still here"))
				waitFor(t, 5*time.Second, "delivery after "+what, func() bool { return n2.rec.count("live") == sent })
			}
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			heapBefore := ms.HeapAlloc

			for _, in := range hostileInputs() {
				want := in.reason
				if keyed {
					want = "auth"
				}
				before := counterValue(t, n1.met.rejConns, want)
				got, closed := sendHostile(t, n1.MeshEndpoint(), in.bytes, 3*time.Second)
				if !closed {
					t.Fatalf("%s: connection still open after 3 s", in.name)
				}
				if keyed && len(got) != 0 {
					t.Fatalf("%s: a stranger read %d bytes from a keyed node: %q", in.name, len(got), got)
				}
				if !keyed && (bytes.Contains(got, []byte(n1.SerfName())) || bytes.Contains(got, []byte(controlTopic))) {
					t.Fatalf("%s: a stranger read names or topics: %q", in.name, got)
				}
				waitFor(t, 2*time.Second, in.name+" counted as "+want, func() bool {
					return counterValue(t, n1.met.rejConns, want) > before
				})
				check(in.name)
			}
			runtime.GC()
			runtime.ReadMemStats(&ms)
			if grown := int64(ms.HeapAlloc) - int64(heapBefore); grown > 64<<20 {
				t.Fatalf("heap grew by %d MiB after the hostile inputs", grown>>20)
			}
			if ps := peerStatus(n2.Mesh, "n1"); ps.Gaps != 0 || ps.Reconnects != 0 {
				t.Fatalf("the real link suffered: gaps %d, reconnects %d", ps.Gaps, ps.Reconnects)
			}
		})
	}
}

// A flood of connections that send a greeting (or nothing) and stop must not keep a real peer
// from linking: they wait in their own goroutines, at most MaxPendingHandshakes at once.
func TestHandshakeFloodDoesNotBlockPeers(t *testing.T) {
	short := func(c *Config) { c.HandshakeTimeout = 3 * time.Second; c.MaxPendingHandshakes = 32 }
	n1 := startMesh(t, "n1", nil, short)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 200 {
		c, err := net.Dial("tcp", n1.MeshEndpoint())
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			_, _ = c.Write(zmtpGreetingBytes(false)) // then silence
		}
		conns = append(conns, c)
	}
	start := time.Now()
	n2 := startMesh(t, "n2", []string{n1.GossipEndpoint()}, short)
	waitFor(t, 10*time.Second, "a real peer links despite the flood", func() bool { return n1.Ready() && n2.Ready() })
	n2.AddInterest("x")
	waitInterest(t, []*testNode{n1}, "n2", "x", true)
	n1.Publish("x", []byte("y"))
	waitFor(t, 5*time.Second, "delivery", func() bool { return n2.rec.count("x") == 1 })
	t.Logf("linked %v after 200 stalled connections", time.Since(start).Round(time.Millisecond))
	if time.Since(start) > 3*time.Second {
		t.Fatalf("linking took %v: the flood held up the accept loop", time.Since(start))
	}
	waitFor(t, 2*time.Second, "the excess refused", func() bool {
		return counterValue(t, n1.met.rejConns, "too_many_handshakes") > 0
	})
}

// rogueServer is a mesh endpoint that answers every connection with serve.
func rogueServer(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				serve(c)
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// rogueMember completes the link authentication (when key is set) and the ZMTP handshake as a
// PUB, then sends evil.
func rogueMember(key, evil []byte) func(net.Conn) {
	return func(c net.Conn) {
		if key != nil {
			ak, _ := deriveAuthKey(key)
			if authAccept(c, ak) != nil {
				return
			}
		}
		_, _ = c.Write(zmtpGreetingBytes(true))
		_, _ = c.Write(readyFrame(prop("Socket-Type", "PUB")))
		_, _ = c.Write(evil)
	}
}

// A member (or anyone an open mesh learns of by gossip) whose mesh endpoint sends a huge frame
// must not kill the nodes that dial it.
func TestRogueMemberFrames(t *testing.T) {
	for _, tc := range []struct {
		name   string
		key    []byte
		evil   []byte
		reason string
	}{
		{"open, 1 TiB frame", nil, longHeader(0, 1<<40), "frame_too_large"},
		{"keyed member, 2^64-1 frame", testKeyA, longHeader(0, ^uint64(0)), "frame_too_large"},
		{"keyed member, 100 frames in one message", testKeyA, bytes.Repeat([]byte{zmtpMore, 1, 'x'}, 100), "bad_frame"},
		{"open, READY metadata past its end", nil, nil, "bad_frame"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mods []func(*Config)
			if tc.key != nil {
				mods = append(mods, withKey(tc.key))
			}
			n1 := startMesh(t, "n1", nil, mods...)
			serve := rogueMember(tc.key, tc.evil)
			if tc.evil == nil {
				bad := append(zmtpGreetingBytes(true), readyFrame([]byte{11, 'S', 'o', 'c', 'k', 'e', 't', '-', 'T', 'y', 'p', 'e', 0x7f, 0xff, 0xff, 0xff})...)
				serve = func(c net.Conn) { _, _ = c.Write(bad) }
			}
			addr := rogueServer(t, serve)
			injectPeer(t, n1.Mesh, "rogue-1", "rogue", addr)
			waitFor(t, 5*time.Second, "the rogue's connections rejected as "+tc.reason, func() bool {
				return counterValue(t, n1.met.rejConns, tc.reason) >= 1
			})
			n1.AddInterest("still")
			if !n1.Ready() {
				t.Fatal("node not ready")
			}
		})
	}
}

// TestSnapshotAssemblyBounds: a member's snapshot parts out of order, of another version, with
// an absurd part count, or past MaxPeerChannels are refused and the assembly starts over.
func TestSnapshotAssemblyBounds(t *testing.T) {
	part := func(v uint64, i, n uint32, chs ...string) *meshpb.InterestSnapshot {
		return &meshpb.InterestSnapshot{Version: v, Part: i, Parts: n, Channels: chs}
	}
	var a snapshotAssembly
	if done, err := a.addPart(part(1, 0, 2, "a"), 10); done || err != nil {
		t.Fatalf("first part: %v %v", done, err)
	}
	if _, err := a.addPart(part(2, 1, 2, "b"), 10); err == nil {
		t.Fatal("a part of another version was taken")
	}
	if _, err := a.addPart(part(1, 1, 2, "b"), 10); err == nil {
		t.Fatal("a part after a dropped assembly was taken")
	}
	if _, err := a.addPart(part(1, 0, ^uint32(0), "a"), 10); err == nil {
		t.Fatal("2^32-1 parts accepted")
	}
	if _, err := a.addPart(part(1, 5, 2), 10); err == nil {
		t.Fatal("part 5 of 2 accepted")
	}
	a = snapshotAssembly{}
	a.addPart(part(3, 0, 2, "a", "b", "c"), 4)
	if _, err := a.addPart(part(3, 1, 2, "d", "e"), 4); err == nil || len(a.channels) != 0 {
		t.Fatalf("5 channels past a bound of 4: %v, %d kept", err, len(a.channels))
	}
	a = snapshotAssembly{}
	a.addPart(part(4, 0, 2, "a"), 4)
	if done, err := a.addPart(part(4, 1, 2, "b"), 4); !done || err != nil || len(a.channels) != 2 {
		t.Fatalf("a whole snapshot: done %v, %v, %v", done, err, a.channels)
	}
}

// A member's real frame one byte over the limit, written in one piece (1 MiB+), is refused;
// a publication of the largest allowed size crosses the mesh.
func TestFrameLimitInOneWrite(t *testing.T) {
	const maxFrame = 1<<20 + 64<<10
	lim := func(c *Config) { c.MaxFrame = maxFrame }
	n1 := startMesh(t, "n1", nil, lim)
	over := append([]byte{zmtpMore}, 3, 't', 'x', 0)
	over = append(over, longHeader(0, maxFrame)...) // 3 + maxFrame bytes in all
	over = append(over, make([]byte, maxFrame)...)
	addr := rogueServer(t, rogueMember(nil, over))
	injectPeer(t, n1.Mesh, "rogue-1", "rogue", addr)
	waitFor(t, 5*time.Second, "the oversize frame refused", func() bool {
		return counterValue(t, n1.met.rejConns, "frame_too_large") >= 1
	})

	n2 := startMesh(t, "n2", []string{n1.GossipEndpoint()}, lim)
	waitFor(t, 5*time.Second, "n2 linked", func() bool { return n2.Ready() })
	n2.AddInterest("big")
	waitInterest(t, []*testNode{n1}, "n2", "big", true)
	big := make([]byte, n1.frameBudget()-pubCost(publication{channel: "big"}))
	n1.Publish("big", big)
	waitFor(t, 5*time.Second, "the largest publication crosses", func() bool { return n2.rec.count("big") == 1 })
	n1.Publish("big", append(big, 'x'))
	waitFor(t, 2*time.Second, "one byte more is counted, not sent", func() bool { return counter(t, n1.met.tooLarge) == 1 })
	if ps := peerStatus(n2.Mesh, "n1"); ps.Reconnects != 0 || ps.Gaps != 0 {
		t.Fatalf("the link suffered: %+v", ps)
	}
}
