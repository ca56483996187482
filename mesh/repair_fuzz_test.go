package mesh

import (
	"encoding/binary"
	"testing"
	"time"
)

// FuzzRepairReceiver drives a receiver's repair state machine with whatever a misbehaving
// origin could send — batches with any epoch, first sequence and count (retransmitted or live),
// heartbeat tails, repair replies with any ranges — interleaved with ticks, link resumptions
// and removals. Whatever comes: no panic, every delivery of an epoch strictly after the one
// before it (in order, never twice), and the reorder buffer within its bound and accounted
// exactly.
func FuzzRepairReceiver(f *testing.F) {
	f.Add([]byte{0, 1, 0, 1, 3, 0, 1, 0, 6, 2, 3, 9, 1, 2, 0, 8})
	f.Add([]byte{0, 1, 0, 1, 4, 0, 1, 0, 9, 1, 2, 1, 0, 20, 3, 200, 3, 200, 3, 200, 3, 200, 5})
	f.Add([]byte{1, 2, 255, 255, 2, 1, 0, 0, 255, 255, 0, 2, 0, 1, 2})
	f.Fuzz(func(t *testing.T, ops []byte) {
		cfg := rxConfig{wait: 2 * time.Second, idle: 30 * time.Second, retry: 250 * time.Millisecond, maxBytes: 200}
		var (
			r    rxLink
			now  = int64(1e18)
			out  = &fuzzOut{t: t, r: &r}
			next = func() uint64 { // a sequence-like number from the input
				if len(ops) < 2 {
					return 1
				}
				v := uint64(binary.BigEndian.Uint16(ops))
				ops = ops[2:]
				if v > 60000 {
					v = ^uint64(0) - (65535 - v) // near 2^64 too
				}
				return v
			}
			byteOf = func() byte {
				if len(ops) == 0 {
					return 0
				}
				b := ops[0]
				ops = ops[1:]
				return b
			}
		)
		for steps := 0; len(ops) > 0 && steps < 500; steps++ {
			switch byteOf() % 6 {
			case 0:
				epoch := uint64(byteOf()%3) + 1
				first := next()
				n := int(byteOf() % 8)
				retransmit := byteOf()%2 == 1
				pubs := make([]pubIn, n)
				for i := range pubs {
					d := make([]byte, 8+int(first%5)) // varied sizes against the 200-byte bound
					binary.BigEndian.PutUint64(d, first+uint64(i))
					pubs[i] = pubIn{"c", d, nil}
				}
				r.batch(epoch, first, pubs, retransmit, now, cfg, out)
			case 1:
				r.tail(uint64(byteOf()%3)+1, next(), now, cfg, out)
			case 2:
				epoch := uint64(byteOf()%3) + 1
				r.reply(repairReply{epoch: epoch, lostFrom: next(), lostTo: next(), last: next(), current: uint64(byteOf()%3) + 1}, now, cfg, out)
			case 3:
				now += int64(byteOf()) * int64(50*time.Millisecond)
				r.tick(now, cfg, out)
			case 4:
				r.linkUp(now, out)
			case 5:
				r.flush(out)
			}
			if r.epoch != out.stream { // a new stream started without a delivery yet
				out.stream, out.any = r.epoch, false
			}
			if r.heldBytes > cfg.maxBytes || r.heldBytes < 0 {
				t.Fatalf("reorder buffer holds %d bytes, bound %d", r.heldBytes, cfg.maxBytes)
			}
			sum := 0
			for s, h := range r.held {
				sum += len(h.channel) + len(h.data)
				if s < r.expect {
					t.Fatalf("sequence %d waits below the next expected %d", s, r.expect)
				}
			}
			if sum != r.heldBytes {
				t.Fatalf("reorder buffer accounted %d bytes, holds %d", r.heldBytes, sum)
			}
		}
	})
}

type fuzzOut struct {
	t       *testing.T
	r       *rxLink
	stream  uint64 // the epoch of the stream being delivered (a change starts a new stream)
	lastSeq uint64
	any     bool
}

func (o *fuzzOut) deliver(pb pubIn) {
	data := pb.data
	seq := binary.BigEndian.Uint64(data)
	if o.r.epoch != o.stream {
		o.stream, o.any = o.r.epoch, false
	}
	if o.any && seq <= o.lastSeq {
		o.t.Fatalf("epoch %d: delivered %d after %d", o.stream, seq, o.lastSeq)
	}
	o.lastSeq, o.any = seq, true
}
func (o *fuzzOut) ask(uint64, uint64, uint64) {}
func (o *fuzzOut) lost(uint64, string)        {}
func (o *fuzzOut) repaired(uint64)            {}
func (o *fuzzOut) duplicate(uint64)           {}
