package mesh

import (
	"bytes"
	"context"
	"crypto/cipher"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/sockmesh/sockmesh/proto/meshpb"
)

// The closed mesh (Config.ClusterKey). Each test names the guard it would catch.

var (
	testKeyA = []byte("A-cluster-key-of-32-bytes-000000")
	testKeyB = []byte("B-cluster-key-of-32-bytes-111111")
)

func withKey(k []byte) func(*Config) { return func(c *Config) { c.ClusterKey = k } }

func TestClusterKeyValidated(t *testing.T) {
	base := Config{Name: "x", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0"}
	for _, k := range [][]byte{make([]byte, 16), make([]byte, 33), make([]byte, 32)} {
		c := base
		c.ClusterKey = k
		if _, err := New(c); err == nil {
			t.Errorf("key of %d bytes (all zero: %v) accepted", len(k), k[0] == 0)
		}
	}
	c := base
	c.ClusterKey = []byte{}
	if m, err := New(c); err != nil || m.sealer != nil {
		t.Fatalf("empty key: err %v, sealer %v (want an open mesh)", err, m.sealer)
	}
	// The key is copied: changing the caller's slice afterwards changes nothing.
	k := append([]byte(nil), testKeyA...)
	c.ClusterKey = k
	m, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	k[0] ^= 1
	if !bytes.Equal(m.cfg.ClusterKey, testKeyA) {
		t.Fatal("ClusterKey shares the caller's slice")
	}
	// Gossip and envelope keys are distinct derivations, neither equal to the cluster key.
	gk, _ := deriveGossipKey(testKeyA)
	if len(gk) != 32 || bytes.Equal(gk, testKeyA) {
		t.Fatal("gossip key not derived")
	}
}

// capConn records every byte read from the wire.
type capConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *capConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *capConn) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

// injectPeer makes m link to the PUB at endpoint as if serfName were a member (the only way an
// outsider that cannot join the gossip gets a link at all).
func injectPeer(t *testing.T, m *Mesh, serfName, logical, endpoint string) *peer {
	t.Helper()
	p := m.newPeer(memberInfo{serfName: serfName, logical: logical, inc: "x", member: Member{Mesh: endpoint}})
	m.mu.Lock()
	m.peers[p.serfName] = p
	m.table.AddPeer(p)
	m.mu.Unlock()
	go p.supervise()
	t.Cleanup(p.shutdown)
	return p
}

// TestClosedMeshOutsidersLearnNothing: two keyed nodes deliver to each other; a keyless and a
// wrong-key mesh cannot join the gossip, and when they (and a raw ZMTP subscriber to every
// topic) dial a keyed node's PUB directly, nothing they read contains a payload or a channel
// name, and nothing is delivered to them.
// Guards: the gossip key (outsiders would appear in Members), sealing of batches and control
// messages (the marker or channel name would appear on the wire), the "sealed"/"auth" rejections.
func TestClosedMeshOutsidersLearnNothing(t *testing.T) {
	const marker, channel = "MARKER-5b1e-plaintext", "secret-channel-name"
	reg := prometheus.NewRegistry()
	n1 := startMesh(t, "n1", nil, withKey(testKeyA))
	n2 := startMesh(t, "n2", []string{n1.GossipEndpoint()}, withKey(testKeyA), func(c *Config) { c.Registerer = reg })
	waitFor(t, 5*time.Second, "keyed pair ready", func() bool { return n1.Ready() && n2.Ready() && len(n1.Status().Peers) == 1 })

	open := startMesh(t, "open", []string{n1.GossipEndpoint()})
	wrong := startMesh(t, "wrong", []string{n1.GossipEndpoint()}, withKey(testKeyB))
	// The same two configurations dialling n1's PUB directly, as if n1 were their member (a
	// started mesh would drop the injected peer at its next reconcile, n1 not being a member).
	dialer := func(name string, key []byte) (*recorder, *Mesh) {
		rec := newRecorder()
		m, err := New(Config{Name: name, MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
			Logger: testLogger(), ClusterKey: key, Deliver: rec.deliver})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		m.AddInterest(channel)
		return rec, m
	}
	recOpen, dOpen := dialer("open-dial", nil)
	recWrong, dWrong := dialer("wrong-dial", testKeyB)
	pOpen := injectPeer(t, dOpen, n1.SerfName(), "n1", n1.MeshEndpoint())
	pWrong := injectPeer(t, dWrong, n1.SerfName(), "n1", n1.MeshEndpoint())

	// A raw ZMTP subscriber to everything n1 publishes, recording the wire bytes: with a cluster
	// key it must not even get a ZMTP greeting.
	tc, err := net.Dial("tcp", n1.MeshEndpoint())
	if err != nil {
		t.Fatal(err)
	}
	raw := &capConn{Conn: tc}
	defer raw.Close()
	spyDone := make(chan error, 1)
	go func() {
		zc, err := zmq4.Open(raw, null.Security(), zmq4.Sub, zmq4.SocketIdentity("spy"), false, nil)
		if err == nil {
			err = zc.SendMsg(zmq4.NewMsg([]byte{1})) // subscribe to "" = all topics
			for err == nil {
				_, err = zc.RecvMsg()
			}
		}
		spyDone <- err
	}()

	n2.AddInterest(channel)
	waitInterest(t, []*testNode{n1}, "n2", channel, true)
	const N = 50
	for i := range N {
		n1.Publish(channel, []byte(marker+" #"+string(rune('a'+i%26))))
	}
	waitFor(t, 5*time.Second, "keyed delivery", func() bool { return n2.rec.count(channel) == N })
	if !strings.HasPrefix(n2.rec.get(channel)[0], marker) {
		t.Fatalf("n2 got %q", n2.rec.get(channel)[0])
	}
	select {
	case <-spyDone:
	case <-time.After(5 * time.Second):
		t.Fatal("a keyless ZMTP subscriber is still connected to a keyed node")
	}
	if wire := raw.bytes(); len(wire) != 0 {
		t.Fatalf("a keyless ZMTP subscriber read %d bytes from a keyed node: %q", len(wire), wire)
	}
	// The keyless and wrong-key meshes dialling n1 are refused in the link authentication, and
	// n1 counts them (and the spy).
	waitFor(t, 5*time.Second, "outsiders refused", func() bool {
		return counterValue(t, n1.met.rejConns, "auth") >= 3 && counterValue(t, dWrong.met.rejConns, "auth") >= 1
	})
	for _, r := range []*recorder{recOpen, recWrong} {
		if c := r.count(channel); c != 0 {
			t.Fatalf("an outsider got %d publications", c)
		}
	}
	for _, o := range []*testNode{open, wrong} {
		if o.Ready() || len(o.Status().Members) != 1 {
			t.Fatalf("%s joined: members %+v", o.cfg.Name, o.Status().Members)
		}
	}
	for _, p := range []*peer{pOpen, pWrong} {
		if p.linkState() == LinkUp || p.lastHB.Load() != 0 || p.rxWire.Load() != 0 {
			t.Fatalf("%s read from the keyed node: link %s, %d bytes", p.m.cfg.Name, p.linkState(), p.rxWire.Load())
		}
	}
	for _, m := range n1.Status().Members {
		if m.Name == "open" || m.Name == "wrong" {
			t.Fatalf("n1 lists %s", m.Name)
		}
	}
	// The legitimate link rejected nothing (no false replay or auth failures).
	if ps := peerStatus(n2.Mesh, "n1"); ps.Rejected != 0 || ps.Gaps != 0 {
		t.Fatalf("keyed link: rejected %d, gaps %d", ps.Rejected, ps.Gaps)
	}
	if v := gatherValue(t, reg, "sockmesh_mesh_rejected_envelopes_total"); v != 0 {
		t.Fatalf("n2 exported %v rejections", v)
	}
	if v := gatherValue(t, reg, "sockmesh_mesh_rejected_connections_total"); v != 0 {
		t.Fatalf("n2 rejected %v connections", v)
	}
}

func counterValue(t *testing.T, cv *prometheus.CounterVec, labels ...string) float64 {
	t.Helper()
	c, err := cv.GetMetricWithLabelValues(labels...)
	if err != nil {
		t.Fatal(err)
	}
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

func gatherValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestClosedMeshRejectsInjection: a raw zmq4 PUB standing in for a peer sends well-formed
// envelopes that are unsealed, sealed under another cluster key, sealed by another member,
// sealed for another topic, tampered or replayed: each is rejected and counted under its reason,
// none is delivered or taken as a heartbeat; a correctly sealed one is delivered exactly once.
// Guards: AEAD open before decoding, the topic as associated data, the per-sender key, the
// replay counter, the rejected metric.
func TestClosedMeshRejectsInjection(t *testing.T) {
	rec := newRecorder()
	m, err := New(Config{Name: "me", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		Logger: testLogger(), ClusterKey: testKeyA, Deliver: rec.deliver})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	registerTransport()
	// A member gone bad: it holds the cluster key (it passes the link authentication) and
	// sends envelopes that must not open.
	fake := zmq4.NewPub(withConnOpts(context.Background(), &connOpts{authKey: m.authKey}))
	defer closeSocket(fake)
	if err := fake.Listen("smtcp://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	const from, ch = "peer-1", "ch"
	m.AddInterest(ch)
	p := injectPeer(t, m, from, "peer", fake.Addr().String())

	mailbox, ctl := []byte(m.mailbox), []byte(controlTopic)
	batch := func(data string) []byte {
		return appendBatchEnvelope(nil, from, m.self, 7, 1, []publication{{ch, []byte(data), nil}}, 0, false)
	}
	hb, _ := proto.Marshal(&meshpb.Envelope{Origin: from, Body: &meshpb.Envelope_Heartbeat{Heartbeat: &meshpb.Heartbeat{}}})
	mustAEAD := func(key []byte, sender string) cipher.AEAD {
		a, err := envelopeAEAD(key, sender)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	good, wrongKey, otherSender := mustAEAD(testKeyA, from), mustAEAD(testKeyB, from), mustAEAD(testKeyA, "peer-2")
	counter := uint64(100)
	seal := func(a cipher.AEAD, aadTopic, plain []byte) []byte {
		counter++
		return sealEnvelope(nil, a, counter, aadTopic, plain)
	}
	tampered := func() []byte {
		f := seal(good, mailbox, batch("tampered"))
		f[len(f)/2] ^= 0x40
		return f
	}
	bad := []struct {
		reason string
		topic  []byte
		frame  func() []byte
	}{
		{rejectUnsealed, mailbox, func() []byte { return batch("unsealed") }},
		{rejectUnsealed, ctl, func() []byte { return hb }},
		{rejectAuth, mailbox, func() []byte { return seal(wrongKey, mailbox, batch("wrong key")) }},
		{rejectAuth, ctl, func() []byte { return seal(wrongKey, ctl, hb) }},
		{rejectAuth, mailbox, func() []byte { return seal(otherSender, mailbox, batch("other sender")) }},
		{rejectAuth, mailbox, func() []byte { return seal(good, ctl, batch("other topic")) }},
		{rejectAuth, ctl, func() []byte { return seal(good, mailbox, hb) }},
		{rejectAuth, mailbox, tampered},
	}
	send := func(topic, frame []byte) { _ = fake.SendMulti(zmq4.NewMsgFrom(topic, frame)) }
	want := map[string]bool{rejectUnsealed: true, rejectAuth: true}
	waitFor(t, 10*time.Second, "every bad envelope rejected", func() bool {
		for _, b := range bad {
			send(b.topic, b.frame())
		}
		return counterValue(t, m.met.rejected, "peer", rejectUnsealed) >= 10 &&
			counterValue(t, m.met.rejected, "peer", rejectAuth) >= 30
	})
	if rec.count(ch) != 0 || p.lastHB.Load() != 0 || p.linkState() == LinkUp {
		t.Fatalf("an injected envelope was used: delivered %d, heartbeat %d, link %s", rec.count(ch), p.lastHB.Load(), p.linkState())
	}
	if p.received.Load() != 0 {
		t.Fatalf("%d injected publications counted as received", p.received.Load())
	}
	for _, r := range []string{rejectReplay, rejectDecode, rejectOrigin, rejectSealed} {
		if !want[r] && counterValue(t, m.met.rejected, "peer", r) != 0 {
			t.Errorf("unexpected rejections with reason %s", r)
		}
	}

	// The same path accepts a correctly sealed envelope (so the rejections above are the
	// guards' doing), and a replay of it is rejected by the counter, not only by the batch
	// sequence.
	okFrame := seal(good, mailbox, batch("sealed ok"))
	waitFor(t, 5*time.Second, "sealed publication delivered and its replay rejected", func() bool {
		send(mailbox, bytes.Clone(okFrame))
		return rec.count(ch) >= 1 && counterValue(t, m.met.rejected, "peer", rejectReplay) >= 1
	})
	if got := rec.get(ch); len(got) != 1 || got[0] != "sealed ok" {
		t.Fatalf("delivered %q, want exactly [sealed ok]", got)
	}
	// A fresh, correctly sealed heartbeat is accepted: the link comes up.
	waitFor(t, 5*time.Second, "sealed heartbeat accepted", func() bool {
		send(ctl, seal(good, ctl, hb))
		return p.lastHB.Load() != 0
	})
}

// FuzzOpenEnvelope: whatever arrives on a link (any topic, any frame), the receive path of a
// keyed and of an open mesh never panics; and a frame that opens under the key is exactly what
// sealing its plaintext for that topic produces (nothing else authenticates).
//
//	go test -run '^$' -fuzz FuzzOpenEnvelope ./mesh/
func FuzzOpenEnvelope(f *testing.F) {
	newM := func(key []byte) (*Mesh, *peer) {
		m, err := New(Config{Name: "me", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
			Logger: testLogger(), ClusterKey: key})
		if err != nil {
			f.Fatal(err)
		}
		m.AddInterest("ch")
		p := m.newPeer(memberInfo{serfName: "peer-1", logical: "peer", inc: "1"})
		m.table.AddPeer(p) // not in m.peers: no supervisor runs, so Close must not wait for one
		return m, p
	}
	keyed, pk := newM(testKeyA)
	open, po := newM(nil)
	sender, _ := envelopeAEAD(testKeyA, "peer-1")
	mailbox := []byte(keyed.mailbox)
	envs := [][]byte{appendBatchEnvelope(nil, "peer-1", keyed.self, 3, 1, []publication{{"ch", []byte("x"), nil}, {"other", nil, nil}}, 0, false)}
	for _, e := range []*meshpb.Envelope{
		{Origin: "peer-1", Body: &meshpb.Envelope_Heartbeat{Heartbeat: &meshpb.Heartbeat{InterestVersion: 2, InterestCount: 1}}},
		{Origin: "peer-1", Body: &meshpb.Envelope_Delta{Delta: &meshpb.InterestDelta{Version: 1, Added: []string{"ch"}}}},
		{Origin: "peer-1", Target: keyed.self, Body: &meshpb.Envelope_Snapshot{Snapshot: &meshpb.InterestSnapshot{Version: 1, Channels: []string{"ch"}}}},
		{Origin: "peer-1", Target: keyed.self, Body: &meshpb.Envelope_Snapshot{Snapshot: &meshpb.InterestSnapshot{Version: 2, Channels: []string{"a"}, Part: 0, Parts: 2}}},
		{Origin: "peer-1", Target: keyed.self, Body: &meshpb.Envelope_Snapshot{Snapshot: &meshpb.InterestSnapshot{Version: 2, Channels: []string{"b"}, Part: 1, Parts: 2}}},
		{Origin: "peer-1", Body: &meshpb.Envelope_Delta{Delta: &meshpb.InterestDelta{Version: 2, Added: []string{"x", "y"}, Removed: []string{"ch"}}}},
		{Origin: "peer-1", Target: keyed.self, Body: &meshpb.Envelope_SnapshotRequest{SnapshotRequest: &meshpb.SnapshotRequest{}}},
	} {
		b, _ := proto.Marshal(e)
		envs = append(envs, b)
	}
	for i, e := range envs {
		for _, topic := range [][]byte{mailbox, []byte(controlTopic)} {
			f.Add(topic, e)
			f.Add(topic, sealEnvelope(nil, sender, uint64(i+1), topic, e))
		}
	}
	f.Add([]byte{}, []byte{})
	f.Add(mailbox, []byte{sealVersion})
	f.Fuzz(func(t *testing.T, topic, frame []byte) {
		orig := bytes.Clone(frame)
		if plain, counter, reason := openEnvelope(sender, topic, bytes.Clone(frame)); reason == "" {
			if again := sealEnvelope(nil, sender, counter, topic, plain); !bytes.Equal(again, orig) {
				t.Fatalf("a frame that is not a sealing opened: %x", orig)
			}
		}
		for _, p := range []*peer{pk, po} {
			p.rx.counter = 0 // so that valid seeds reach the decoder every time
			_ = p.handle(zmq4.Msg{Frames: [][]byte{bytes.Clone(topic), bytes.Clone(frame)}})
		}
	})
	f.Cleanup(func() { keyed.Close(); open.Close() })
}
