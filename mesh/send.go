package mesh

import (
	"fmt"
	"time"

	"github.com/go-zeromq/zmq4"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/sockmesh/sockmesh/proto/meshpb"
)

// Sending: Publish puts a publication on the bounded queue of every peer that wants its channel
// and marks those peers ready; one flusher goroutine turns each ready peer's queue into batches
// on that peer's mailbox topic. Control messages (deltas, snapshots, heartbeats) are sent
// directly, under the mesh lock, so their order on the wire matches the interest versions.
//
// Topics: frame 0 is the topic only and ends with "\x00"; payload is always frame 1.
//   - mailbox of a receiver: "\x02" + receiver's serf name + "\x00" (publications, snapshot
//     requests and snapshots addressed to it);
//   - control topic of the sender: "\x01ctl\x00" (heartbeats, deltas). Every SUB socket dials one
//     peer only, so one constant control topic per PUB suffices.
//
// Each peer's SUB subscribes to exactly these two topics, so zmq4's per-message prefix scan stays
// at two entries per peer whatever the number of channels; exact routing lives in the table.

const controlTopic = "\x01ctl\x00"

func mailboxTopic(serfName string) string { return "\x02" + serfName + "\x00" }

type publication struct {
	channel string
	data    []byte
	pos     []byte // an encoded meshpb.Position, opaque here; empty on most channels
}

// enqueue adds a publication to p's queue; it never blocks. A queue over its bound means the
// peer fell too far behind (its transport queue is full too, so the flusher holds it back): it
// is cut as a slow peer, and what it was waiting for is numbered into its retransmission window,
// so that it gets it again when it redials and asks.
func (p *peer) enqueue(pb publication) {
	p.qmu.Lock()
	// Closed: the peer was removed after Publish looked up its route; number it for the peer's
	// return, after what its queue held (closeQueue).
	if p.qclosed {
		p.qmu.Unlock()
		p.retain(pb)
		return
	}
	cut := false
	if len(p.q) >= p.m.cfg.PeerQueue || p.qbytes+len(pb.data) > p.m.cfg.PeerQueueBytes {
		p.tx.number(p.q, time.Now().UnixNano(), false)
		clear(p.q)
		p.q = p.q[:0]
		p.qbytes = 0
		cut = true
	}
	p.q = append(p.q, pb)
	p.qbytes += len(pb.data)
	signal := !p.qready
	p.qready = true
	p.qmu.Unlock()
	if cut {
		p.m.cutSlow(p)
	}
	if signal {
		p.m.markReady(p)
	}
}

// retain numbers a publication for p without sending it (p is away: declared failed, or
// removed): it waits in p's retransmission window until p, back, asks for it.
func (p *peer) retain(pb publication) {
	p.tx.number([]publication{pb}, time.Now().UnixNano(), false)
}

// closeQueue stops p's queue and numbers what it held into the retransmission window, before any
// publication for p is numbered through the failed routes (removePeer holds m.mu), so that the
// order per publisher holds across the removal.
func (p *peer) closeQueue() {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	if p.qclosed {
		return
	}
	p.qclosed = true
	p.tx.number(p.q, time.Now().UnixNano(), false)
	clear(p.q)
	p.q = nil
	p.qbytes = 0
}

// drop counts n publications for p that will never be sent.
func (p *peer) drop(n int) {
	p.dropped.Add(uint64(n))
	p.droppedC.Add(float64(n))
}

// take removes up to one batch from p's queue and numbers it into p's send link (sequence and
// retransmission window): first is the sequence of its first publication. Numbering under qmu,
// with the queue, keeps the order of the queue. more reports whether publications remain (the
// peer then stays ready).
func (p *peer) take(buf []publication, now int64) (batch []publication, first uint64, more bool) {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	// A batch ends at BatchMax publications, at BatchBytes of payload, or before it would
	// outgrow the frame limit (a single publication always fits: Publish checked it).
	n, size, cost := 0, 0, 0
	budget := p.m.frameBudget()
	for n < len(p.q) && n < p.m.cfg.BatchMax {
		c := pubCost(p.q[n])
		if n > 0 && cost+c > budget {
			break
		}
		cost += c
		size += len(p.q[n].data)
		n++
		if size >= p.m.cfg.BatchBytes {
			break
		}
	}
	batch = append(buf[:0], p.q[:n]...)
	first = p.tx.number(batch, now, true)
	rest := copy(p.q, p.q[n:])
	clear(p.q[rest:]) // drop references to sent payloads
	p.q = p.q[:rest]
	p.qbytes -= size
	if rest == 0 {
		p.qready = false
		if cap(p.q) > 4*p.m.cfg.BatchMax {
			p.q = nil // give back memory after a burst
		}
	}
	return batch, first, rest > 0
}

func (m *Mesh) markReady(p *peer) {
	m.readyMu.Lock()
	m.readyQ = append(m.readyQ, p)
	m.readyMu.Unlock()
	select {
	case m.readyCh <- struct{}{}:
	default:
	}
}

// flusher is the one goroutine that turns peer queues into batches on the PUB socket.
func (m *Mesh) flusher() {
	defer m.wg.Done()
	var (
		work  []*peer
		batch []publication
		enc   []byte
	)
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.readyCh:
		}
		for {
			m.readyMu.Lock()
			work, m.readyQ = m.readyQ, work[:0]
			m.readyMu.Unlock()
			if len(work) == 0 {
				break
			}
			for i, p := range work {
				if m.conns.holdBack(p.serfName) {
					// Its send queue is full: its publications wait in its own queue until
					// the transport drains it (peerDrained). It may have drained between
					// the check and the mark.
					p.parked.Store(true)
					if !m.conns.holdBack(p.serfName) && p.parked.CompareAndSwap(true, false) {
						m.readyMu.Lock()
						m.readyQ = append(m.readyQ, p)
						m.readyMu.Unlock()
					}
					work[i] = nil
					continue
				}
				var (
					first uint64
					more  bool
				)
				now := time.Now().UnixNano()
				batch, first, more = p.take(batch, now)
				if len(batch) > 0 {
					var ok bool
					enc, _, ok = m.sendBatch(enc, p, first, batch, now, false)
					if ok {
						p.sent.Add(uint64(len(batch)))
						p.sentC.Add(float64(len(batch)))
					}
					p.tx.handed(first + uint64(len(batch)) - 1)
					clear(batch)
				}
				if more {
					m.readyMu.Lock()
					m.readyQ = append(m.readyQ, p)
					m.readyMu.Unlock()
				}
				work[i] = nil
			}
		}
	}
}

// sendBatch encodes pubs (numbered from first on p's link) into enc, which it returns for reuse,
// and hands the batch to the PUB socket; n is its size on the wire.
func (m *Mesh) sendBatch(enc []byte, p *peer, first uint64, pubs []publication, now int64, retransmit bool) (_ []byte, n int, ok bool) {
	enc = appendBatchEnvelope(enc[:0], m.self, p.serfName, p.tx.epoch, first, pubs, now, retransmit)
	// Told before zmq4 can copy it: its arrival at the peer's send queue is what takes it off
	// again.
	n = len(enc)
	if m.sealer != nil {
		n += sealOverhead
	}
	m.conns.handed(p.serfName, n)
	// enc is reused: sendEnvelope hands the PUB its own (sealed or copied) frame.
	return enc, n, m.sendEnvelope(p.mailboxB, enc, false)
}

// appendBatchEnvelope encodes Envelope{origin, target, batch{first_seq, publications}} by hand:
// the hot path, without a message tree per publication. Wire-compatible with meshpb.Envelope
// (checked by TestBatchEncodingMatchesProto). epoch is never 0, so it is always present.
func appendBatchEnvelope(b []byte, origin, target string, epoch, firstSeq uint64, pubs []publication, sentUnixNano int64, retransmit bool) []byte {
	batchLen := protowire.SizeTag(1) + protowire.SizeVarint(firstSeq) +
		protowire.SizeTag(3) + protowire.SizeVarint(epoch) +
		protowire.SizeTag(4) + protowire.SizeFixed64()
	if retransmit {
		batchLen += protowire.SizeTag(5) + protowire.SizeVarint(1)
	}
	for _, pb := range pubs {
		batchLen += protowire.SizeTag(2) + protowire.SizeBytes(pubLen(pb))
	}
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, origin)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, target)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(batchLen))
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, firstSeq)
	for _, pb := range pubs {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(pubLen(pb)))
		// (fields of the publication follow)
		if len(pb.channel) > 0 { // proto3 leaves zero values out
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendString(b, pb.channel)
		}
		if len(pb.data) > 0 {
			b = protowire.AppendTag(b, 2, protowire.BytesType)
			b = protowire.AppendBytes(b, pb.data)
		}
		if len(pb.pos) > 0 {
			b = protowire.AppendTag(b, 3, protowire.BytesType)
			b = protowire.AppendBytes(b, pb.pos)
		}
	}
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, epoch)
	b = protowire.AppendTag(b, 4, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(sentUnixNano))
	if retransmit {
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}

func pubLen(pb publication) int {
	n := 0
	if len(pb.channel) > 0 {
		n += protowire.SizeTag(1) + protowire.SizeBytes(len(pb.channel))
	}
	if len(pb.data) > 0 {
		n += protowire.SizeTag(2) + protowire.SizeBytes(len(pb.data))
	}
	if len(pb.pos) > 0 {
		n += protowire.SizeTag(3) + protowire.SizeBytes(len(pb.pos))
	}
	return n
}

// sendControl sends a control envelope on topic. Callers hold m.mu, which orders control
// messages with the interest versions they carry.
func (m *Mesh) sendControl(topic []byte, env *meshpb.Envelope) {
	env.Origin = m.self
	b, err := proto.Marshal(env)
	if err != nil {
		m.log.Error("mesh: encode control message", "err", err)
		return
	}
	m.sendEnvelope(topic, b, true)
}

// pubSend hands a message to the PUB socket. It is the only caller of SendMulti and guards the
// library: never a message without frames (zmq4's writer goroutine indexes Frames[0] and would
// panic the whole process, where no recover() can reach), never anything but [topic, payload]
// with a mesh topic that ends with "\x00" (prefix matching), and recover() in case the library
// panics in the caller's goroutine anyway.
func (m *Mesh) pubSend(frames ...[]byte) (ok bool) {
	if err := checkFrames(frames); err != nil {
		m.log.Error("mesh: refusing to send", "err", err)
		return false
	}
	pub := m.pub
	if pub == nil {
		return false
	}
	defer func() {
		if r := recover(); r != nil {
			m.log.Error("mesh: zmq4 SendMulti panicked", "panic", r)
			ok = false
		}
	}()
	if err := pub.SendMulti(zmq4.NewMsgFrom(frames...)); err != nil {
		m.log.Debug("mesh: send", "err", err)
		return false
	}
	return true
}

func checkFrames(frames [][]byte) error {
	if len(frames) != 2 {
		return fmt.Errorf("mesh: a mesh message has 2 frames, not %d", len(frames))
	}
	topic, payload := frames[0], frames[1]
	switch {
	case len(topic) < 2:
		return fmt.Errorf("mesh: topic frame %q too short", topic)
	case topic[len(topic)-1] != 0:
		return fmt.Errorf("mesh: topic frame %q does not end with NUL", topic)
	case topic[0] >= 0x20:
		return fmt.Errorf("mesh: topic frame %q is not a mesh topic", topic)
	case payload == nil:
		return fmt.Errorf("mesh: nil payload frame")
	}
	return nil
}
