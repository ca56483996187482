package wsfront

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sockmesh/sockmesh/netpoll"
)

// FanoutBroker is a Broker that can deliver a publication within a Fanout: the reader that
// handles a client's publications passes its fanout, and the subscribers' frames are then
// written once the reader has handled everything the client sent in one go, by the reader
// itself, rather than by waking each subscriber's writer goroutine per publication.
type FanoutBroker interface {
	Broker
	// PublishIn is Publish, delivering to local sockets through DeliverIn with b.
	PublishIn(b *Fanout, channel string, data json.RawMessage)
}

// Fanout holds the sockets that publications handled by one reader queued frames to while
// their writers were idle; the reader writes them (flushFanout) when it is about to wait
// for the network, before it parks, or when the fanout is large. Each socket is in at most
// one fanout at a time (Socket.inFanout); a socket in some fanout needs no other wake-up.
type Fanout struct {
	socks []*Socket
	// spread: this fanout holds one publication's sockets of a large channel, without a
	// bound, and is written by a goroutine of its own (NewSpread).
	spread bool
}

// room: another socket may join the fanout. s.mu of that socket held.
func (b *Fanout) room() bool { return b.spread || len(b.socks) < maxFanoutSockets }

// maxFanoutSockets bounds the sockets a reader collects and then writes itself: a burst of
// publications to many channels, or one to a large channel, must not hold the first
// subscribers' frames back until the whole burst is read, nor keep the reader writing for
// long. Past it the subscribers' writers are woken as without a fanout: they take turns with
// the readers, so a large fan-out is written interleaved with the next publications (and
// coalesces with them) instead of one reader writing a thousand connections while the other
// publishers wait.
const maxFanoutSockets = 64

// SpreadMin is the local subscriber count from which a publication is written by a spread
// (NewSpread) rather than by waking each idle subscriber's writer.
const SpreadMin = 256

// spreadYield: a spread lets the other runnable goroutines run after writing this many
// sockets (about 0.4 ms of system calls on this project's machine).
const spreadYield = 128

var spreads = sync.Pool{New: func() any { return &Fanout{spread: true} }}

// NewSpread returns a fanout for one publication to a large channel: pass it to DeliverIn
// for every subscriber, then call Start. Without it, a publication to 10,000 sockets woke
// 10,000 writer goroutines at once; Go's scheduler runs them first in, first out, and a
// publication to a small channel that arrived meanwhile (its reader made runnable by the
// netpoller behind them) waited for the whole fan-out — 100–300 ms at 10,000 subscribers on
// one core, though the fan-out took 60 ms of CPU (docs/benchmarks.md, "Recovery storm"). A spread
// writes its sockets in turn on one goroutine that yields every spreadYield sockets, so
// whatever became runnable meanwhile runs within a fraction of a millisecond of being
// picked up, and the fan-out saves a goroutine wake-up and switch per socket.
func NewSpread() *Fanout { return spreads.Get().(*Fanout) }

// Start writes the spread's sockets on a goroutine of its own and then returns b to the
// pool; b must not be used after. A socket whose writer is busy, or which takes less than
// its queue at once, is its writer's as in a reader's fanout (writeFannedOut).
func (b *Fanout) Start() {
	if len(b.socks) == 0 {
		spreads.Put(b)
		return
	}
	srv := b.socks[0].srv
	srv.wg.Add(1)
	srv.workers.run(func() {
		defer srv.wg.Done()
		b.write()
	})
}

func (b *Fanout) write() {
	now := time.Now()
	for i, s := range b.socks {
		b.socks[i] = nil
		s.writeFannedOut(now)
		if i%spreadYield == spreadYield-1 {
			netpoll.Yield()
			now = time.Now()
		}
	}
	b.socks = b.socks[:0]
	if cap(b.socks) <= 1<<16 { // 512 KiB of pointers: a larger one is not kept
		spreads.Put(b)
	}
}

// DeliverIn queues a shared, already encoded publication frame, as Deliver; with b, when
// the socket's writer is idle, the frame waits for b's reader to write it. obs, when not
// nil, observes the seconds since since once the frame is written (see DeliverSampled).
func (s *Socket) DeliverIn(b *Fanout, frame []byte, since time.Time, obs prometheus.Observer) bool {
	return s.queueFrame(frame, false, false, b, obs, since)
}

// writerIdle: nobody is writing to the connection, or its writer goroutine waits with
// nothing to do (and has not lent the connection to someone already). s.mu held.
func (s *Socket) writerIdle() bool {
	return s.carry == nil && (!s.writing || s.idleWait && !s.lent)
}

// flushFanout writes what the reader's fanout collected; reader goroutine only.
func (s *Socket) flushFanout() {
	b := &s.fanout
	if len(b.socks) == 0 {
		return
	}
	now := time.Now()
	for i, t := range b.socks {
		b.socks[i] = nil
		t.writeFannedOut(now)
	}
	b.socks = b.socks[:0]
}

// writeFannedOut writes the socket's queue for the fanout that held it, or wakes its writer
// when it must not be written here: a writer is busy, or the queued publications must wait
// out the rest of the write window (now is the fanout's time, a little early: it can only err
// on the writer's side).
func (s *Socket) writeFannedOut(now time.Time) {
	s.mu.Lock()
	s.inFanout = false
	if len(s.queue) == 0 || s.closing && s.closeCode == 0 {
		s.mu.Unlock()
		return
	}
	delay := s.srv.writeDelay()
	if !s.writerIdle() || !s.poll.CanTry() || delay > 0 && !s.urgent && !s.lastWrite.IsZero() && now.Sub(s.lastWrite) < delay {
		// (A socket that cannot be tried without waiting, TLS for one, is its writer's.)
		s.kickWriter()
		s.mu.Unlock()
		return
	}
	s.writeBorrowed(s.srv.cfg.WriteDelay > 0, true)
}

// testBorrowedWrite, when set (by tests only), runs before a borrowed write: it lets a test
// queue more frames and wake the writer at the moment it must wait.
var testBorrowedWrite atomic.Pointer[func(*Socket)]

// writeBorrowed writes the socket's queue from the calling goroutine, which is not s's writer: s
// has none (the caller is its writer until done, and starts one if more was queued
// meanwhile), or s's writer waits idle (it is lent the connection and woken afterwards if
// there is work). pubs: the write starts a write window, as the writer's do (see
// Config.WriteDelay). try: the caller is another socket's reader, which must never wait on
// this socket (a subscriber that stopped reading would hold a publisher up until the write
// timeout): it writes only what the socket takes at once and hands the rest (the end of a
// frame, and the frames not started) to the socket's writer. s.mu held and writerIdle;
// returns with s.mu released.
func (s *Socket) writeBorrowed(pubs, try bool) {
	own := !s.writing
	if own {
		s.writing = true
	} else {
		s.lent = true
	}
	frames, obs, since := s.takeQueue(nil)
	s.mu.Unlock()
	if f := testBorrowedWrite.Load(); f != nil {
		(*f)(s)
	}
	bp := packBufs.Get().(*[]byte)
	next, carry, err := s.writeFrames(frames, bp, try)
	putPack(bp)
	handBack := err == nil && (next < len(frames) || carry != nil)
	var done time.Time
	if err == nil && !handBack && (obs != nil || pubs) {
		done = time.Now()
		if obs != nil {
			obs.Observe(done.Sub(since).Seconds())
		}
	}
	s.mu.Lock()
	if err != nil {
		s.queue = nil
	} else if handBack {
		// The socket took no more: the rest is its writer's, in order, before anything queued
		// meanwhile.
		s.carry = carry
		if rest := frames[next:]; len(rest) > 0 {
			q := make([][]byte, 0, len(rest)+len(s.queue))
			q = append(q, rest...)
			s.queue = append(q, s.queue...)
			for _, f := range rest {
				s.queued += len(f)
			}
		}
		if obs != nil && s.sampleObs == nil {
			s.sampleObs, s.sampleAt = obs, since
		}
	} else if cap(s.queue) == 0 {
		// Nothing queued meanwhile: the array goes back to the queue, not to the collector.
		clear(frames)
		s.queue = frames[:0]
	}
	if pubs && !done.IsZero() {
		s.lastWrite = done
	}
	if own {
		if err == nil && (len(s.queue) > 0 || s.closePending || s.carry != nil) {
			// Queued while this goroutine wrote: hand over to a writer.
			s.retire = false
			s.srv.wg.Add(1)
			s.srv.workers.run(s.writeRun)
		} else {
			s.writing = false
		}
	} else {
		s.lent = false
		if err != nil || len(s.queue) > 0 || s.closePending || s.retire || s.closing || s.carry != nil {
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	}
	s.mu.Unlock()
	if err != nil {
		s.abort()
	}
}
