package wsfront

import (
	"math/rand/v2"
	"net"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sockmesh/sockmesh/scproto"
	"github.com/sockmesh/sockmesh/wsframe"
)

// pingFrame marks a ping in the queue: written alone as an empty text frame, never packed
// into an array.
var pingFrame = []byte{}

// writerLinger is how long an idle writer goroutine waits for more frames before it exits.
// Busy connections keep their writer; idle ones cost no goroutine beyond their reader. The
// sweeper retires idle writers, so the exit happens at its next tick after writerLinger.
const writerLinger = 250 * time.Millisecond

// kickWriter starts the writer goroutine if none runs, or wakes the waiting one.
// s.mu held.
func (s *Socket) kickWriter() {
	if !s.writing {
		s.writing = true
		s.retire = false
		s.srv.wg.Add(1)
		s.srv.workers.run(s.writeRun)
		return
	}
	s.retire = false
	if s.delaying && !s.urgent {
		return // the writer is waiting out the window on purpose
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// writeRun owns all writes while it runs: queued frames (packed into one array frame when
// several are waiting), pings, and the final close frame. It exits when the sweeper finds
// it idle for writerLinger, so an idle connection has no writer goroutine.
//
// It keeps no timer of its own on the hot path: write timeouts and the idle exit are the
// sweeper's job (timers per write cost more than the writes' bookkeeping on a busy node).
func (s *Socket) writeRun() {
	defer s.srv.wg.Done()
	var spare [][]byte
	var delayT *time.Timer
	// wrote is when the last write ended; it becomes s.lastWrite at the next turn of the
	// loop, which takes s.mu anyway (a lock after every write only for it would cost more).
	var wrote time.Time
	delay := s.srv.cfg.WriteDelay
	for {
		s.mu.Lock()
		if !wrote.IsZero() {
			s.lastWrite, wrote = wrote, time.Time{}
		}
		if s.lent {
			// Another goroutine writes in this one's place; it wakes this one when done.
			s.mu.Unlock()
			<-s.wake
			continue
		}
		s.idleWait = false
		if c := s.carry; c != nil {
			// The rest of a frame another goroutine could not finish without waiting.
			s.carry = nil
			s.mu.Unlock()
			if err := s.writeRaw(c); err != nil {
				s.writeFailed()
				return
			}
			continue
		}
		if len(s.queue) == 0 {
			if s.closePending {
				s.closePending = false
				code, reason := s.closeCode, s.closeReason
				s.writing = false
				s.mu.Unlock()
				_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
				// Give the client a moment to answer the close, then cut.
				time.AfterFunc(time.Second, s.abort)
				return
			}
			if (s.closing && s.closeCode == 0) || s.retire { // aborted, or idle long enough
				s.writing = false
				s.mu.Unlock()
				return
			}
			// Nothing to write: wait for a frame without a timer. The rest of the write
			// window, if any, is waited out once something is queued (a connection that
			// gets a publication now and then is written at once and costs no timer).
			s.idleSince = time.Now()
			s.idleWait = true
			s.mu.Unlock()
			<-s.wake
			continue
		}
		if window := s.srv.writeDelay(); window > 0 && !s.lastWrite.IsZero() {
			// A busy connection on a busy node: let more publications join this write (see
			// Config.WriteDelay); anything urgent ends the wait.
			if d := window - time.Since(s.lastWrite); d > 0 {
				wait := !s.urgent && !s.closing
				s.delaying = wait
				if wait {
					// A wake left from before is stale: what it announced is queued.
					select {
					case <-s.wake:
					default:
					}
				}
				s.mu.Unlock()
				if wait {
					if delayT == nil {
						delayT = time.NewTimer(d)
					} else {
						delayT.Reset(d)
					}
					select {
					case <-delayT.C:
					case <-s.wake:
						delayT.Stop()
					}
				}
				s.mu.Lock()
				s.delaying = false
				if len(s.queue) == 0 { // taken by an abort meanwhile
					s.mu.Unlock()
					continue
				}
			}
		}
		// Hand the queue's array to this writer and give the queue the spare one (never the
		// same array: the reader side appends to s.queue while frames is being written).
		frames, obs, since := s.takeQueue(spare[:0])
		s.mu.Unlock()
		// The packing buffer is borrowed for the write only: a writer that exits when idle
		// would otherwise take a buffer grown to the size of its last run with it, and a
		// storm of replays (every recovering client's writer starting, packing up to
		// WriteBytes and exiting) allocated 128 KiB per client: 62 % of a recovering
		// survivor's allocations and a GC cycle every second.
		bp := packBufs.Get().(*[]byte)
		_, _, err := s.writeFrames(frames, bp, false)
		putPack(bp)
		if err != nil {
			s.writeFailed()
			return
		}
		if delay > 0 {
			wrote = time.Now()
		}
		if obs != nil {
			obs.Observe(time.Since(since).Seconds())
		}
		clear(frames)
		spare = frames
	}
}

// retireIdleWriter asks a writer that has waited for writerLinger with nothing to write to
// exit (sweeper goroutine).
func (s *Socket) retireIdleWriter(now time.Time) {
	s.mu.Lock()
	if s.writing && !s.retire && len(s.queue) == 0 && !s.closePending && !s.idleSince.IsZero() && now.Sub(s.idleSince) >= writerLinger {
		s.retire = true
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
}

// sweep is called periodically for every socket by the server's sweeper: it enforces the
// handshake timeout and the pong timeout, and queues a ping every PingInterval.
func (s *Socket) sweep(now time.Time) {
	cfg := &s.srv.cfg
	if st := s.writeStart.Load(); st != 0 && now.UnixNano()-st > int64(cfg.WriteTimeout) {
		// Writes carry no deadline of their own (see writeRun); a write stuck this long
		// means the client stopped reading with the kernel buffers full.
		s.Logger().Info("write timeout: client not reading", "after", cfg.WriteTimeout)
		cfg.Metrics.WriteTimeouts.Inc()
		s.abort()
		return
	}
	s.retireIdleWriter(now)
	if !s.handshaken.Load() {
		if now.Sub(s.born) >= cfg.HandshakeTimeout {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if !closing {
				cfg.Metrics.HandshakeFailures.WithLabelValues("timeout").Inc()
				s.Logger().Debug("handshake timeout", "after", cfg.HandshakeTimeout)
				s.Close(scproto.CloseHandshakeTimeout, "")
			}
			return
		}
	}
	if now.UnixNano()-s.lastSeen.Load() > int64(cfg.PingTimeout) {
		s.mu.Lock()
		closing := s.closing
		s.mu.Unlock()
		if !closing {
			cfg.Metrics.PongTimeouts.Inc()
			s.Logger().Info("pong timeout: client silent", "after", cfg.PingTimeout)
			s.Close(scproto.ClosePongTimeout, "")
		}
		return
	}
	if !s.pingPhased && s.handshaken.Load() {
		// Once the handshake is done (a pong before it would be a protocol error), move the
		// ping schedule to a random phase, never later than it was: connections opened
		// together (a reconnect storm, a load test) would otherwise be pinged, and answer,
		// all in the same sweeper tick every interval from then on.
		s.pingPhased = true
		if p := now.Add(-rand.N(cfg.PingInterval)); p.Before(s.lastPing) {
			s.lastPing = p
		}
	}
	// Pings start at WebSocket open, as socketcluster-server's do.
	if now.Sub(s.lastPing) >= cfg.PingInterval {
		s.lastPing = now
		s.enqueueSampled(pingFrame, false, nil, time.Time{}) // no hurry: it may wait for the window
	}
}

// writeFrames writes frames, a run of them at a time in one write system call: each in its
// own WebSocket frame (the default, as socketcluster-server writes), or, with ArrayFrames,
// packed into one JSON array frame. With try, it never waits for the socket: it stops when the
// socket takes no more, and returns the index of the first frame it did not start (next) and
// the unwritten end of the run it was writing (carry, a copy); without try, it writes
// everything (next == len(frames), carry nil).
func (s *Socket) writeFrames(frames [][]byte, pack *[]byte, try bool) (next int, carry []byte, err error) {
	cfg := &s.srv.cfg
	m := cfg.Metrics
	for i := 0; i < len(frames); {
		if len(frames[i]) == 0 { // a ping: never inside an array
			if try {
				if carry, err = s.tryWrite(s.srv.pingWire); err != nil || carry != nil {
					return i + 1, carry, err
				}
			} else if err := s.writeRaw(s.srv.pingWire); err != nil {
				return i, nil, err
			}
			m.Writes.Inc()
			m.FramesOut.Inc()
			i++
			continue
		}
		// The run: as many consecutive frames as fit into WriteBytes.
		j := i + 1
		size := len(frames[i]) + wsframe.MaxServerHeader
		if cfg.WriteBytes > 0 {
			for j < len(frames) && len(frames[j]) > 0 && size+len(frames[j])+wsframe.MaxServerHeader <= cfg.WriteBytes {
				size += len(frames[j]) + wsframe.MaxServerHeader
				j++
			}
		}
		wsFrames := j - i
		if j == i+1 && len(frames[i]) > directWriteMin {
			// Large: header and the shared bytes in one writev, no copy.
			var hdr [wsframe.MaxServerHeader]byte
			h := wsframe.AppendHeader(hdr[:0], wsframe.Text, len(frames[i]), nil)
			if try {
				carry, err = s.tryWrite(h, frames[i])
			} else {
				bufs := net.Buffers{h, frames[i]}
				err = s.writeBufs(&bufs)
			}
		} else {
			var b []byte
			if cfg.ArrayFrames && j > i+1 {
				b = (*pack)[:0]
				if cap(b) < size {
					b = make([]byte, 0, size)
				}
				b = appendArrayFrame(b, frames[i:j])
				wsFrames = 1
			} else {
				b = (*pack)[:0]
				if cap(b) < size {
					// Once, at the run's size (an upper bound), not by doubling.
					b = make([]byte, 0, size)
				}
				for _, f := range frames[i:j] {
					b = wsframe.AppendHeader(b, wsframe.Text, len(f), nil)
					b = append(b, f...)
				}
			}
			*pack = b
			if try {
				carry, err = s.tryWrite(b)
			} else {
				err = s.writeRaw(b)
			}
		}
		if err != nil {
			return i, nil, err
		}
		m.Writes.Inc()
		m.FramesOut.Add(float64(wsFrames))
		m.PacketsOut.Add(float64(j - i))
		i = j
		if carry != nil {
			return i, carry, nil
		}
	}
	return len(frames), nil, nil
}

// appendArrayFrame appends one text frame holding the packets as a JSON array.
func appendArrayFrame(b []byte, packets [][]byte) []byte {
	n := 1 + len(packets) // brackets and commas
	for _, p := range packets {
		n += len(p)
	}
	b = wsframe.AppendHeader(b, wsframe.Text, n, nil)
	b = append(b, '[')
	for k, p := range packets {
		if k > 0 {
			b = append(b, ',')
		}
		b = append(b, p...)
	}
	return append(b, ']')
}

// tryWrite writes parts one after another as far as the socket takes them now; carry is a
// copy of what it did not take (nil when everything went).
func (s *Socket) tryWrite(parts ...[]byte) (carry []byte, err error) {
	for k, p := range parts {
		n, _, err := s.poll.TryWrite(p)
		if err != nil {
			return nil, err
		}
		if n < len(p) {
			rest := len(p) - n
			for _, q := range parts[k+1:] {
				rest += len(q)
			}
			carry = make([]byte, 0, rest)
			carry = append(carry, p[n:]...)
			for _, q := range parts[k+1:] {
				carry = append(carry, q...)
			}
			return carry, nil
		}
	}
	return nil, nil
}

// Outbound data frames are written to the connection directly rather than through
// gorilla/websocket's writer: a server frame is a few header bytes before the payload, and
// doing it here saves a copy and the two write-deadline updates gorilla makes per frame.
// Control frames (close, pong) still go through gorilla; Go's net.Conn serialises whole
// Write calls, so the two never interleave within a frame. The headers come from wsframe.

// directWriteMin: single frames larger than this are written with writev instead of being
// copied behind a header.
const directWriteMin = 16 << 10

// The server's ping on the wire: an empty text frame in protocol v2, "#1" in v1 (the client's
// pong is an empty frame or "#2").
var (
	pingV2 = wsframe.AppendHeader(nil, wsframe.Text, 0, nil)
	pingV1 = append(wsframe.AppendHeader(nil, wsframe.Text, 2, nil), "#1"...)
)

func (s *Socket) writeRaw(b []byte) error {
	s.writeStart.Store(time.Now().UnixNano())
	ok, err := s.poll.Write(b)
	if !ok {
		_, err = s.nc.Write(b)
	}
	s.writeStart.Store(0)
	return err
}

func (s *Socket) writeBufs(b *net.Buffers) error {
	s.writeStart.Store(time.Now().UnixNano())
	_, err := b.WriteTo(s.nc)
	s.writeStart.Store(0)
	return err
}
