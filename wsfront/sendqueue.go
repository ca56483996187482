package wsfront

import (
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sockmesh/sockmesh/scproto"
)

// Deliver queues a shared, already encoded frame. The broker calls it for every subscriber
// of a publication; frame must not be modified afterwards. A full queue disconnects the
// client (slow consumer) and returns false.
func (s *Socket) Deliver(frame []byte) bool { return s.enqueueSampled(frame, false, nil, time.Time{}) }

// ExpectFrames makes room in the send queue for n more frames at once, before a run of n
// Deliver calls (a recovery's replay: hundreds of frames, whose queue otherwise grew by
// doubling, once per recovering client).
func (s *Socket) ExpectFrames(n int) {
	s.mu.Lock()
	if !s.closing {
		s.queue = slices.Grow(s.queue, n)
	}
	s.mu.Unlock()
}

// DeliverSampled is Deliver for a sampled publication: once the writer has written the frame
// (with whatever was queued with it), obs observes the seconds since since. A socket keeps
// one sample at a time; a second one before the first is written is not observed.
func (s *Socket) DeliverSampled(frame []byte, since time.Time, obs prometheus.Observer) bool {
	return s.enqueueSampled(frame, false, obs, since)
}

// enqueue queues a frame that is written without waiting out Config.WriteDelay: responses
// and events. Only publications (Deliver) are held back to be coalesced, so a client making
// calls one after another never waits for the window.
func (s *Socket) enqueue(frame []byte) bool {
	return s.enqueueSampled(frame, true, nil, time.Time{})
}

func (s *Socket) enqueueSampled(frame []byte, urgent bool, obs prometheus.Observer, since time.Time) bool {
	return s.queueFrame(frame, urgent, false, nil, obs, since)
}

// reply queues the answer to a packet the reader is handling; reader goroutine only. When
// no writer runs, none is started: the reader writes its answers itself once it has
// handled everything it has read (flushReplies), so a burst of calls is answered with one
// write and a lone call (the handshake of every new connection) costs no goroutine switch.
func (s *Socket) reply(frame []byte) bool {
	return s.queueFrame(frame, true, true, nil, nil, time.Time{})
}

// flushReplies writes what reply left queued, unless a writer has woken meanwhile (it
// writes them then); reader goroutine only.
func (s *Socket) flushReplies() {
	s.deferredReplies = 0
	s.mu.Lock()
	if len(s.queue) == 0 || s.closing && s.closeCode == 0 || !s.writerIdle() {
		s.mu.Unlock()
		return
	}
	s.writeBorrowed(false, false)
}

// takeQueue hands the queued frames to the caller, who writes them, and gives the queue
// next (never the same array: others append to s.queue while the frames are written); with
// the sampled frame's observer, if any. s.mu held.
func (s *Socket) takeQueue(next [][]byte) ([][]byte, prometheus.Observer, time.Time) {
	frames := s.queue
	s.queue, s.queued = next, 0
	s.urgent = false
	obs, since := s.sampleObs, s.sampleAt
	s.sampleObs = nil
	return frames, obs, since
}

// writeFailed ends writing after a failed write: the connection is cut.
func (s *Socket) writeFailed() {
	s.mu.Lock()
	s.writing = false
	s.queue = nil
	s.mu.Unlock()
	s.abort()
}

// packBufs: the buffers frames are packed into for one write system call (writeFrames),
// between writes, shared by writers, readers answering and fan-outs writing borrowed sockets.
var packBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// packKeep is the largest packing buffer returned to packBufs: a run of WriteBytes (64 KiB by
// default) with its frame headers. A larger one (a single frame bigger than that is written
// without packing, so only a WriteBytes above it makes one) is left to the collector.
const packKeep = 80 << 10

// putPack returns a packing buffer to packBufs unless it is too large to keep.
func putPack(bp *[]byte) {
	if cap(*bp) <= packKeep {
		packBufs.Put(bp)
	}
}

// queueFrame queues frame. When no writer is busy, a deferred frame (reply) is left for the
// socket's own reader to write, and with a batch b the frame is left for b's reader.
func (s *Socket) queueFrame(frame []byte, urgent, deferred bool, b *Fanout, obs prometheus.Observer, since time.Time) bool {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return false
	}
	if s.queued+len(frame) > s.srv.cfg.SendQueueBytes {
		s.closing = true
		s.mu.Unlock()
		s.srv.cfg.Metrics.SlowConsumers.Inc()
		s.Logger().Info("slow consumer disconnected", "queue_bytes", s.srv.cfg.SendQueueBytes)
		// Try to tell the client with close 4100 (it reconnects with backoff); a client that
		// reads nothing at all cannot take even that, so the connection is cut after a short
		// wait either way, which also unblocks a writer stuck in Write.
		s.srv.wg.Add(1)
		go func() {
			defer s.srv.wg.Done()
			_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(scproto.CloseSlowConsumer, "slow consumer"), time.Now().Add(500*time.Millisecond))
			time.Sleep(100 * time.Millisecond)
			s.abort()
		}()
		return false
	}
	s.queue = append(s.queue, frame)
	s.queued += len(frame)
	if obs != nil && s.sampleObs == nil {
		s.sampleObs, s.sampleAt = obs, since
	}
	if urgent {
		s.urgent = true
	}
	switch {
	case s.inFanout: // a reader will write it (or wake the writer) soon
	case b != nil && b.room() && s.writerIdle():
		s.inFanout = true
		b.socks = append(b.socks, s)
	case deferred && s.writerIdle():
		s.deferredReplies++
	default:
		s.kickWriter()
	}
	s.mu.Unlock()
	return true
}
