package mesh

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"google.golang.org/protobuf/proto"

	"github.com/sockmesh/sockmesh/proto/meshpb"
)

func TestBatchEncodingMatchesProto(t *testing.T) {
	pubs := []publication{{"chat", []byte(`{"a":1}`), nil}, {"chatroom", []byte{}, nil}, {"ü", bytes.Repeat([]byte("x"), 300), nil}, {"prices", []byte(`1`), []byte("\x0a\x02o1\x10\x07")}}
	for _, retransmit := range []bool{false, true} {
		checkBatchEncoding(t, pubs, retransmit)
	}
}

func checkBatchEncoding(t *testing.T, pubs []publication, retransmit bool) {
	t.Helper()
	enc := appendBatchEnvelope(nil, "n1-abc", "n2-def", 7, 42, pubs, 1795630000123456789, retransmit)
	var env meshpb.Envelope
	if err := proto.Unmarshal(enc, &env); err != nil {
		t.Fatal(err)
	}
	b := env.GetBatch()
	if env.Origin != "n1-abc" || env.Target != "n2-def" || b.GetFirstSeq() != 42 || b.GetEpoch() != 7 || b.GetSentUnixNano() != 1795630000123456789 || len(b.GetPublications()) != len(pubs) || b.GetRetransmit() != retransmit {
		t.Fatalf("decoded %v", &env)
	}
	for i, p := range b.GetPublications() {
		if p.Channel != pubs[i].channel || !bytes.Equal(p.Data, pubs[i].data) || !bytes.Equal(p.Position, pubs[i].pos) {
			t.Fatalf("publication %d = %v", i, p)
		}
	}
	want, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&env)
	if !bytes.Equal(enc, want) {
		t.Fatalf("hand encoding differs from protobuf's:\n%x\n%x", enc, want)
	}
}

func TestLogWriterParsesLevels(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	std := newStdLogger(l, "serf", slog.LevelInfo)
	std.Print("[DEBUG] memberlist: noise")
	std.Print("[WARN] memberlist: Refuting a suspect message")
	std.Print("[ERR] serf: boom")
	std.Print("[INFO] serf: EventMemberJoin: n1")
	out := buf.String()
	for _, want := range []string{
		`level=WARN msg="Refuting a suspect message" component=memberlist`,
		`level=ERROR msg=boom component=serf`,
		`level=INFO msg="EventMemberJoin: n1" component=serf`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "noise") {
		t.Errorf("DEBUG line not filtered:\n%s", out)
	}
}

// TestLinkRecycledOnHeartbeatSilence: a publisher that accepts the connection but never sends a
// heartbeat (frozen, half-open) is redialled after HeartbeatTimeout, by the supervisor alone; a
// heartbeat then brings the link up.
func TestLinkRecycledOnHeartbeatSilence(t *testing.T) {
	m, err := New(Config{Name: "me", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		Logger: testLogger(), Heartbeat: 50 * time.Millisecond, HeartbeatTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	registerTransport()
	fake := zmq4.NewPub(context.Background())
	defer closeSocket(fake)
	if err := fake.Listen("tcp://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	p := m.newPeer(memberInfo{serfName: "fake-1", logical: "fake", inc: "1", member: Member{Mesh: fake.Addr().String()}})
	m.mu.Lock()
	m.peers[p.serfName] = p
	m.table.AddPeer(p)
	m.mu.Unlock()
	go p.supervise()
	defer p.shutdown()

	waitFor(t, 5*time.Second, "two recycles on silence", func() bool { return p.reconnects.Load() >= 2 })
	if p.linkState() == LinkUp {
		t.Fatal("link up without heartbeats")
	}
	hb, _ := proto.Marshal(&meshpb.Envelope{Origin: "fake-1", Body: &meshpb.Envelope_Heartbeat{Heartbeat: &meshpb.Heartbeat{}}})
	waitFor(t, 5*time.Second, "link up on heartbeat", func() bool {
		_ = fake.SendMulti(zmq4.NewMsgFrom([]byte(controlTopic), hb))
		return p.linkState() == LinkUp
	})
}

// TestPeerQueueBounded: the per-peer queue never holds more than its bounds. A queue that
// overflows belongs to a peer too slow to keep up: what it held is numbered as sent (so the
// receiver asks for it when it is back, and gets it from the retransmission window) and the queue starts again
// with the new publication; take() hands out batches within BatchMax/BatchBytes.
func TestPeerQueueBounded(t *testing.T) {
	m, err := New(Config{Name: "me", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		PeerQueue: 10, PeerQueueBytes: 1000, BatchMax: 4, BatchBytes: 250})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p := m.newPeer(memberInfo{serfName: "x-1", logical: "x", inc: "1"})
	for range 15 {
		p.enqueue(publication{"c", make([]byte, 10), nil})
	}
	if len(p.q) != 5 || p.tx.state().seq != 10 || p.dropped.Load() != 0 || p.tx.win.n != 10 {
		t.Fatalf("queue %d, numbered %d, dropped %d, retained %d; want 5, 10, 0, 10", len(p.q), p.tx.state().seq, p.dropped.Load(), p.tx.win.n)
	}
	batch, first, more := p.take(nil, 0)
	if len(batch) != 4 || !more || first != 11 {
		t.Fatalf("batch %d from %d, more %v", len(batch), first, more)
	}
	for more {
		batch, _, more = p.take(batch, 0)
	}
	if len(p.q) != 0 || p.qbytes != 0 || p.qready {
		t.Fatalf("queue not empty after draining: %d %d %v", len(p.q), p.qbytes, p.qready)
	}
	p.enqueue(publication{"c", make([]byte, 600), nil})
	p.enqueue(publication{"c", make([]byte, 600), nil}) // over the byte bound
	if len(p.q) != 1 || p.tx.state().seq != 16 || p.qbytes != 600 {
		t.Fatalf("byte bound not applied: queue %d, numbered %d, bytes %d", len(p.q), p.tx.state().seq, p.qbytes)
	}
	batch, _, _ = p.take(nil, 0)
	if len(batch) != 1 {
		t.Fatalf("an oversized publication goes alone: batch of %d", len(batch))
	}
}

// TestWrongIncarnationAtEndpoint: a different process answering at the peer's endpoint (the
// peer restarted on the same port) is never taken for the peer: the link is recycled and nothing
// it sends is used.
func TestWrongIncarnationAtEndpoint(t *testing.T) {
	m, err := New(Config{Name: "me", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		Logger: testLogger(), Heartbeat: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	registerTransport()
	fake := zmq4.NewPub(context.Background())
	defer closeSocket(fake)
	if err := fake.Listen("tcp://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	p := m.newPeer(memberInfo{serfName: "peer-1", logical: "peer", inc: "1", member: Member{Mesh: fake.Addr().String()}})
	m.mu.Lock()
	m.peers[p.serfName] = p
	m.table.AddPeer(p)
	m.mu.Unlock()
	go p.supervise()
	defer p.shutdown()
	hb, _ := proto.Marshal(&meshpb.Envelope{Origin: "peer-2", Body: &meshpb.Envelope_Heartbeat{Heartbeat: &meshpb.Heartbeat{}}})
	waitFor(t, 5*time.Second, "link recycled twice", func() bool {
		for range 20 {
			_ = fake.SendMulti(zmq4.NewMsgFrom([]byte(controlTopic), hb))
		}
		return p.reconnects.Load() >= 2
	})
	if p.linkState() == LinkUp || p.lastHB.Load() != 0 {
		t.Fatal("messages of another incarnation were used")
	}
}
