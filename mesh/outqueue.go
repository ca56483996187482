package mesh

import (
	"errors"
	"net"
	"sync"
)

// outQueue is the send queue and writer of one accepted mesh connection, that is of one peer
// subscribed to our PUB socket. zmq4's PUB hands every message to every peer from a single
// goroutine with blocking writes, so one peer that reads slowly would pace all the others
// (measured: a probe's p99 went from 31 ms to 2.8 s while one peer was duty-cycle frozen).
// Here zmq4's write only copies into this queue; the peer's own goroutine does the system call,
// gathering whatever accumulated meanwhile into one write. A peer that falls more than limit
// bytes behind is cut: its connection is closed, it is counted as a slow peer, its loss shows
// in the receiver's gap counters, and its supervisor redials and resubscribes when it can.
//
// Memory per peer is bounded by limit (queued plus in flight), plus the capacity of one spare
// buffer, which is dropped after a burst.
type outQueue struct {
	c     *smConn
	limit int

	mu       sync.Mutex
	buf      []byte // queued, not yet taken by the writer
	inFlight int    // bytes the writer took and has not finished writing
	err      error  // sticky: the queue is closed
	wake     chan struct{}
	done     chan struct{}
	stop     sync.Once
}

// keepSpare is the largest buffer the writer keeps for the next turn.
const keepSpare = 256 << 10

var (
	errSlowPeer   = errors.New("mesh: peer too slow, send queue full")
	errQueueClose = errors.New("mesh: connection closed")
)

func newOutQueue(c *smConn, limit int) *outQueue {
	q := &outQueue{c: c, limit: limit, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go q.run()
	return q
}

// write queues p. It never blocks on the network.
func (q *outQueue) write(p []byte) (int, error) {
	q.mu.Lock()
	if q.err != nil {
		err := q.err
		q.mu.Unlock()
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: err}
	}
	if len(q.buf)+q.inFlight+len(p) > q.limit {
		q.err = errSlowPeer
		q.mu.Unlock()
		q.c.slow()
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: errSlowPeer}
	}
	q.buf = append(q.buf, p...)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// close stops the writer; what is still queued is dropped with the connection.
func (q *outQueue) close() {
	q.mu.Lock()
	if q.err == nil {
		q.err = errQueueClose
	}
	q.buf = nil
	q.mu.Unlock()
	q.stop.Do(func() { close(q.done) })
}

func (q *outQueue) run() {
	var spare []byte
	for {
		select {
		case <-q.done:
			return
		case <-q.wake:
		}
		for {
			q.mu.Lock()
			if q.err != nil || len(q.buf) == 0 {
				q.mu.Unlock()
				break
			}
			out := q.buf
			q.buf = spare[:0]
			q.inFlight = len(out)
			q.mu.Unlock()

			_, err := q.c.tc.Write(out)

			q.mu.Lock()
			q.inFlight = 0
			q.mu.Unlock()
			if err != nil {
				q.c.Close()
				return
			}
			if cap(out) <= keepSpare {
				spare = out
			} else {
				spare = nil
			}
		}
	}
}
