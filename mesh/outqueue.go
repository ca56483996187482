package mesh

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// outQueue is the send queue and writer of one accepted mesh connection, that is of one peer
// subscribed to our PUB socket. zmq4's PUB hands every message to every peer from a single
// goroutine with blocking writes, so one peer that reads slowly would pace all the others
// (measured: a probe's p99 went from 31 ms to 2.8 s while one peer was duty-cycle frozen).
// Here zmq4's write only copies into this queue. When a whole message is queued and no write is
// under way, one non-blocking writev is tried at once from zmq4's goroutine (the common case
// on a healthy link: no handoff, one system call per message, as zmq4 did itself); whatever
// the socket does not take is left to the peer's own writer goroutine, which gathers whatever
// accumulates meanwhile into one blocking writev. A peer that falls more than limit
// bytes behind is cut: its connection is closed, it is counted as a slow peer, its loss shows
// in the receiver's gap counters, and its supervisor redials and resubscribes when it can.
//
// The queue is a list of chunks, written with one writev: appending never copies what is
// already queued (a growing slice did, and cost 80 % of the throughput of 1 KiB
// publications). Small writes (ZMTP headers, topics) are copied into fixed-size chunks of our
// own; a frame of at least zeroCopyMin bytes is queued as it is, without a copy. That breaks
// io.Writer's rule that p is not retained, knowingly: the only writer is zmq4's PUB, whose
// frames are the envelopes the mesh allocated for that one message and never touches again
// (the same frame may sit in several peers' queues, read-only). Memory per peer is bounded by
// limit (queued plus in flight), plus up to keepChunks spare chunks.
type outQueue struct {
	c     *smConn
	limit int

	mu       sync.Mutex
	chunks   []chunk  // queued, not yet taken by the writer
	queued   int      // bytes in chunks
	free     [][]byte // spare chunks (len 0)
	inFlight int      // bytes the writer took and has not finished writing
	writing  bool     // a write is under way (inline or by run); one at a time
	err      error    // sticky: the queue is closed
	rc       syscall.RawConn
	inline   []chunk // scratch of the inline write (zmq4's writer goroutine only)
	ibufs    [][]byte
	wake     chan struct{}
	done     chan struct{}
	stop     sync.Once
	// paused: the backlog reached high, so the mesh holds this peer's batches back; the writer
	// calls onDrain once it is down to low again.
	high, low int
	paused    bool
	onDrain   func()
	// pendCur and pendPrev count bytes of this peer's mailbox messages that the flusher handed
	// to zmq4 and zmq4's writer has not copied here yet (zmq4 queues them first): without them
	// the flusher would see a short queue while megabytes are on their way into it. A handed
	// message zmq4 never writes here (dropped at its high-water mark, or handed before this
	// connection's subscription took effect) must not hold the peer back for ever, so the
	// count forgets what has not arrived within one to two pendingTTL.
	pendCur, pendPrev int
	rotateAt          time.Time
	track             mailboxTracker
}

// pendingTTL is how long handed bytes are expected to take through zmq4's queue, at most.
const pendingTTL = 500 * time.Millisecond

const (
	chunkSize   = 64 << 10
	keepChunks  = 4
	zeroCopyMin = 4 << 10
	writeMax    = 1 << 20
)

// chunk is queued bytes: a buffer of ours (owned, reused) or a caller's frame (never written to).
type chunk struct {
	b     []byte
	owned bool
}

var (
	errSlowPeer   = errors.New("mesh: peer too slow, send queue full")
	errQueueClose = errors.New("mesh: connection closed")
)

func newOutQueue(c *smConn, limit int, mailbox string, onDrain func()) *outQueue {
	q := &outQueue{c: c, limit: limit, high: limit / 2, low: limit / 4, onDrain: onDrain,
		track: mailboxTracker{mailbox: mailbox},
		wake:  make(chan struct{}, 1), done: make(chan struct{})}
	q.rc, _ = c.tc.SyscallConn()
	go q.run()
	return q
}

// holdBack reports whether the backlog (queued or being written) has reached half the limit;
// if so the queue is marked paused, and the caller (the flusher) holds this peer's batches back
// until onDrain. Batches wait in the mesh's own bounded per-peer queue meanwhile, so a burst
// to a healthy peer is paced rather than cut.
func (q *outQueue) holdBack() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.rotate(time.Now())
	if q.err != nil || q.queued+q.inFlight+q.pendCur+q.pendPrev < q.high {
		return false
	}
	q.paused = true
	return true
}

// write queues p. It never blocks on the network.
func (q *outQueue) write(p []byte) (int, error) {
	q.mu.Lock()
	if q.err != nil {
		err := q.err
		q.mu.Unlock()
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: err}
	}
	n, msgEnd := q.track.feed(p)
	if n > 0 {
		d := min(n, q.pendPrev)
		q.pendPrev -= d
		q.pendCur = max(0, q.pendCur-(n-d))
	}
	if q.queued+q.inFlight+len(p) > q.limit {
		q.err = errSlowPeer
		q.mu.Unlock()
		q.c.slow()
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: errSlowPeer}
	}
	q.queued += len(p)
	if len(p) >= zeroCopyMin {
		q.chunks = append(q.chunks, chunk{b: p})
	}
	for rest := p; len(rest) > 0 && len(p) < zeroCopyMin; {
		last := len(q.chunks) - 1
		if last < 0 || !q.chunks[last].owned || len(q.chunks[last].b) == chunkSize {
			var c []byte
			if n := len(q.free); n > 0 {
				c, q.free = q.free[n-1], q.free[:n-1]
			} else {
				c = make([]byte, 0, chunkSize)
			}
			q.chunks = append(q.chunks, chunk{b: c, owned: true})
			last++
		}
		c := q.chunks[last].b
		k := min(len(rest), chunkSize-len(c))
		q.chunks[last].b = append(c, rest[:k]...)
		rest = rest[k:]
	}
	if !msgEnd || q.writing {
		// Mid-message: the rest follows in this same call of zmq4's. A write under way:
		// the writer loops until the queue is empty.
		q.mu.Unlock()
		return len(p), nil
	}
	if q.rc == nil {
		q.mu.Unlock()
		q.kick()
		return len(p), nil
	}
	q.inline = q.take(q.inline[:0])
	q.mu.Unlock()

	q.ibufs = q.ibufs[:0]
	for _, c := range q.inline {
		q.ibufs = append(q.ibufs, c.b)
	}
	var wrote int
	var werr error
	if err := q.rc.Write(func(fd uintptr) bool {
		for {
			wrote, werr = unix.SendmsgBuffers(int(fd), q.ibufs, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			if werr != unix.EINTR {
				return true
			}
		}
	}); err != nil {
		werr = err
	}
	if werr == unix.EAGAIN {
		wrote, werr = 0, nil
	}
	left := q.written(q.inline, wrote, werr)
	clear(q.inline)
	if left {
		q.kick()
	}
	return len(p), nil
}

// kick wakes the writer goroutine.
func (q *outQueue) kick() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take moves at most writeMax bytes of chunks (at least one) from the queue into dst and marks
// a write under way. q.mu held, something queued, no write under way.
//
// At most writeMax per turn: a giant writev would hold everything as in flight until the peer
// had read nearly all of it, and only then resume the flusher, leaving the pipe empty.
func (q *outQueue) take(dst []chunk) []chunk {
	n, size := 0, 0
	for n < len(q.chunks) && (n == 0 || size+len(q.chunks[n].b) <= writeMax) {
		size += len(q.chunks[n].b)
		n++
	}
	dst = append(dst, q.chunks[:n]...)
	rest := copy(q.chunks, q.chunks[n:])
	clear(q.chunks[rest:])
	q.chunks = q.chunks[:rest]
	q.inFlight, q.queued = size, q.queued-size
	q.writing = true
	return dst
}

// written ends a write of taken, of which wrote bytes went out: what did not is put back at the
// front of the queue, spare chunks are kept, the flusher is resumed if the backlog drained, and
// a failed connection is closed. It reports whether anything is left for the writer goroutine.
func (q *outQueue) written(taken []chunk, wrote int, err error) (left bool) {
	q.mu.Lock()
	q.writing = false
	q.inFlight = 0
	var back []chunk
	for i, c := range taken {
		switch {
		case wrote >= len(c.b):
			wrote -= len(c.b)
			if c.owned && len(q.free) < keepChunks && q.err == nil {
				q.free = append(q.free, c.b[:0])
			}
		case back == nil:
			// The first chunk not written whole: the rest of it, and every later one, go
			// back (a part of an owned chunk is not reused: its capacity is cut).
			back = append(back, chunk{b: c.b[wrote:]})
			back = append(back, taken[i+1:]...)
			wrote = 0
		}
	}
	if len(back) > 0 && q.err == nil {
		for _, c := range back {
			q.queued += len(c.b)
		}
		q.chunks = append(back, q.chunks...)
	}
	drained := q.paused && q.queued <= q.low
	if drained {
		q.paused = false
	}
	left = q.queued > 0 && q.err == nil
	q.mu.Unlock()
	if err != nil {
		q.c.Close()
		return false
	}
	if drained && q.onDrain != nil {
		q.onDrain()
	}
	return left
}

// handed records n bytes of a mailbox message for this peer handed to zmq4.
func (q *outQueue) handed(n int) {
	q.mu.Lock()
	q.rotate(time.Now())
	q.pendCur += n
	q.mu.Unlock()
}

// rotate forgets handed bytes older than one to two pendingTTL. q.mu held.
func (q *outQueue) rotate(now time.Time) {
	if now.Before(q.rotateAt) {
		return
	}
	q.pendPrev, q.pendCur = q.pendCur, 0
	if now.Sub(q.rotateAt) > pendingTTL {
		q.pendPrev = 0 // idle for longer than a period: both are stale
	}
	q.rotateAt = now.Add(pendingTTL)
}

// close stops the writer; what is still queued is dropped with the connection.
func (q *outQueue) close() {
	q.mu.Lock()
	if q.err == nil {
		q.err = errQueueClose
	}
	q.chunks, q.free, q.queued = nil, nil, 0
	paused := q.paused
	q.paused = false
	q.mu.Unlock()
	q.stop.Do(func() { close(q.done) })
	if paused && q.onDrain != nil {
		q.onDrain() // whatever the mesh held back for this peer goes on (to its next connection)
	}
}

func (q *outQueue) run() {
	var taken []chunk
	var bufs net.Buffers
	for {
		select {
		case <-q.done:
			return
		case <-q.wake:
		}
		for {
			q.mu.Lock()
			if q.err != nil || q.queued == 0 || q.writing {
				q.mu.Unlock() // (an inline write under way kicks again if it leaves anything)
				break
			}
			taken = q.take(taken[:0])
			q.mu.Unlock()

			bufs = bufs[:0]
			for _, c := range taken {
				bufs = append(bufs, c.b)
			}
			wrote, err := bufs.WriteTo(q.c.tc) // consumes bufs, not taken
			left := q.written(taken, int(wrote), err)
			clear(taken)
			if err != nil {
				return
			}
			if !left {
				break
			}
		}
	}
}

// mailboxTracker follows the ZMTP frames zmq4 writes to one peer (header and body in separate
// writes, as net.Buffers hands them over; any split works) and counts the payload bytes of
// messages on the peer's mailbox topic. zmq4 is trusted here: these are our own bytes.
type mailboxTracker struct {
	mailbox string // "\x02" + the peer's Serf name + "\x00"; "" tracks nothing

	hdr     [9]byte
	nhdr    int
	left    uint64 // body bytes of the current frame still to come
	inBody  bool
	flags   byte
	frame   int    // index of the current frame in its message
	topic   []byte // the first frame, up to len(mailbox)+1 bytes
	matched bool   // the current message is on the mailbox
}

// feed follows p; msgEnd reports that p ended a message (or a command).
func (t *mailboxTracker) feed(p []byte) (mailboxBytes int, msgEnd bool) {
	for len(p) > 0 {
		if !t.inBody {
			t.hdr[t.nhdr] = p[0]
			t.nhdr++
			p = p[1:]
			need := 2
			if t.hdr[0]&zmtpLong != 0 {
				need = 9
			}
			if t.nhdr < need {
				continue
			}
			t.flags = t.hdr[0]
			if need == 2 {
				t.left = uint64(t.hdr[1])
			} else {
				t.left = binary.BigEndian.Uint64(t.hdr[1:9])
			}
			t.nhdr = 0
			t.inBody = true
			if t.frame == 0 {
				t.topic = t.topic[:0]
			}
			if t.left == 0 {
				msgEnd = t.endFrame()
			}
			continue
		}
		k := int(min(uint64(len(p)), t.left))
		switch {
		case t.flags&zmtpCommand != 0:
		case t.frame == 0:
			if room := len(t.mailbox) + 1 - len(t.topic); room > 0 {
				t.topic = append(t.topic, p[:min(k, room)]...)
			}
		case t.frame == 1 && t.matched:
			mailboxBytes += k
		}
		t.left -= uint64(k)
		p = p[k:]
		if t.left == 0 {
			msgEnd = t.endFrame()
		}
	}
	return mailboxBytes, msgEnd
}

// endFrame closes the current frame and reports whether it ended a message.
func (t *mailboxTracker) endFrame() bool {
	t.inBody = false
	msgEnd := false
	if t.flags&zmtpCommand != 0 {
		msgEnd = true
	} else {
		if t.frame == 0 {
			t.matched = t.mailbox != "" && string(t.topic) == t.mailbox
		}
		t.frame++
		if t.flags&zmtpMore == 0 {
			t.frame, t.matched, msgEnd = 0, false, true
		}
	}
	return msgEnd
}
