package wsfront

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/sockmesh/sockmesh/scproto"
	"github.com/sockmesh/sockmesh/wsframe"
)

// readLoop decodes and handles inbound frames one after another, so that the protocol's
// ordering rules hold (the handshake completes before the next frame is looked at). When
// nothing is left to read it parks the socket and returns: an idle connection holds no
// goroutine (see netpoll.Poller); the poller starts readLoop again when data arrives.
func (s *Socket) readLoop() {
	defer func() {
		if r := recover(); r != nil {
			if s.recoverPanic(r) {
				s.readLoop() // read on (handling nothing) until the close completes
			} else {
				s.cleanup()
			}
		}
	}()
	ctx := s.ctx
	m := s.srv.cfg.Metrics
	for {
		// Will the next read wait for the network? Then first write what the frames read so
		// far gave rise to: the subscribers' publications, then the answers (and park when
		// nothing at all is left to read). While more is there, they collect, so a busy
		// caller gets one write per burst, not one per call, and each subscriber it
		// publishes to one write per burst.
		whole := s.frameBuffered()
		inKernel := false
		flushDue := s.deferredReplies > 0 || len(s.fanout.socks) > 0
		if !whole && (flushDue || s.mayPark()) && s.poll.Raw() {
			inKernel = s.prefetch()
		}
		if flushDue && (!whole && !inKernel || s.deferredReplies >= maxDeferredReplies || len(s.fanout.socks) >= maxFanoutSockets) {
			s.flushFanout()
			s.flushReplies()
		}
		if !whole && !inKernel && s.mayPark() && s.br.Buffered() == 0 && s.park() {
			return
		}
		mt, frame, err := s.readMessage()
		if err != nil {
			s.flushFanout() // other sockets' frames
			if errors.Is(err, websocket.ErrReadLimit) {
				// gorilla has sent the 1009 close frame.
				m.Oversized.Inc()
				m.ProtocolCloses.WithLabelValues(closeLabel(scproto.CloseMessageTooBig)).Inc()
				s.Logger().Info("frame over the size limit: closed", "limit", s.srv.cfg.MaxPayload)
				s.lingerClose()
			}
			var bad *wsframe.CloseError
			if errors.As(err, &bad) {
				s.protocolClose(bad.Code, bad.Reason)
			}
			s.cleanup()
			return
		}
		now := time.Now().UnixNano()
		if s.stale(now) {
			// The frame waited in the kernel while this process was stopped for longer than
			// the client's ping timeout: its client has given up on this connection.
			s.abort()
			s.cleanup()
			return
		}
		s.lastSeen.Store(now)
		m.FramesIn.Inc()
		if mt != websocket.TextMessage && mt != websocket.BinaryMessage {
			continue
		}
		if mt == websocket.TextMessage && !utf8.Valid(frame) {
			// RFC 6455 §8.1: checked on the whole message, so a code point split across
			// fragments is judged whole.
			s.flushFanout()
			s.protocolClose(scproto.CloseInvalidPayload, "invalid UTF-8 in a text message")
			s.cleanup()
			return
		}
		if s.broken.Load() {
			continue
		}
		p := scproto.DecodeLimit(frame, s.srv.cfg.MaxBatch)
		if s.srv.cfg.ProtocolVersion == 1 && string(frame) == "#2" {
			p = scproto.Packet{Kind: scproto.KindPong}
		}
		if p.Kind == scproto.KindTooMany {
			s.flushFanout()
			s.flushReplies()
			s.protocolClose(scproto.CloseMessageTooBig, "batch of more than "+strconv.Itoa(s.srv.cfg.MaxBatch)+" packets")
			s.cleanup()
			return
		}
		if !s.handshaken.Load() {
			if !s.handleFirst(ctx, &p) {
				s.cleanup()
				return
			}
			continue
		}
		if p.Kind == scproto.KindBatch {
			for i := range p.Batch {
				s.handle(ctx, &p.Batch[i])
			}
			continue
		}
		s.handle(ctx, &p)
	}
}

// recoverPanic handles a panic in code run for this connection (an application handler,
// middleware or hook): it is counted and logged with its stack, and the connection alone is
// closed with 1011 (the client reconnects; everyone else is unaffected). It reports whether
// the reader should read on until the close completes (false after a second panic).
func (s *Socket) recoverPanic(r any) bool {
	if s.broken.Swap(true) {
		return false
	}
	s.srv.cfg.Metrics.HandlerPanics.Inc()
	s.Logger().Error("panic in a handler: connection closed with 1011", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	s.mu.Lock()
	s.closing = true
	s.closeCode = scproto.CloseInternalError
	s.mu.Unlock()
	s.srv.wg.Add(1)
	go func() {
		defer s.srv.wg.Done()
		_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(scproto.CloseInternalError, "internal error"), time.Now().Add(500*time.Millisecond))
		time.Sleep(100 * time.Millisecond)
		s.abort()
	}()
	return true
}

// stale reports whether the connection outlived a stall of this process past the ping timeout
// (the sweeper has not run for that long, or found so and expired it).
func (s *Socket) stale(now int64) bool {
	if s.expired.Load() {
		return true
	}
	last := s.srv.lastTick.Load()
	// A connection opened after the stall (before the sweeper's next tick) is not stale.
	return last != 0 && now-max(last, s.born.UnixNano()) > int64(s.srv.cfg.PingTimeout)
}

// mayPark: the connection is plain TCP and gorilla reads through our buffered reader, so
// "nothing buffered and nothing in the kernel" can be known. Before the handshake the reader
// just waits: the client's #handshake follows the upgrade at once, and parking in between
// would add a poller round trip to every new connection.
func (s *Socket) mayPark() bool {
	return s.srv.poller != nil && s.br != nil && s.poll.Raw() && s.handshaken.Load()
}

// frameBuffered: a whole frame is in the read buffer, so the next read will not wait for
// the network. Unsure (no buffer of ours, a fragmented message) counts as no.
func (s *Socket) frameBuffered() bool {
	if s.br == nil {
		return false
	}
	n := s.br.Buffered()
	if n < 2 {
		return false
	}
	b, _ := s.br.Peek(n)
	if b[0]&0x80 == 0 || b[0]&0x0f == websocket.CloseMessage {
		// Not the final fragment; or a close, after which nothing more may be written.
		return false
	}
	size, hdr := int(b[1]&0x7f), 2
	switch size {
	case 126:
		if n < 4 {
			return false
		}
		size, hdr = int(b[2])<<8|int(b[3]), 4
	case 127:
		return false // 64 KiB or more: never whole in this buffer
	}
	if b[1]&0x80 != 0 {
		hdr += 4 // mask key
	}
	return n >= hdr+size
}

// prefetch reads what the kernel has for the socket without waiting, into the prefetch
// reader gorilla's buffer reads through; false when there was nothing (the next read would
// wait). The probe is the read itself: a busy connection pays one system call per burst
// for it, not a MSG_PEEK and then the read.
func (s *Socket) prefetch() bool {
	if s.pc == nil {
		// gorilla reads through a buffer of its own (see hijackWriter): what the kernel holds
		// says nothing about it; answer now rather than guess.
		return false
	}
	if s.pc.Pending() {
		return true
	}
	return s.pc.Fill(&s.poll)
}

// readMessage is gorilla's ReadMessage without its io.ReadAll, which started every message
// in a fresh 512-byte buffer: the message is read into a pooled buffer and copied out at
// its own size (a publication was a third of the bytes a busy node allocated).
func (s *Socket) readMessage() (int, []byte, error) {
	mt, r, err := s.ws.NextReader()
	if err != nil {
		return mt, nil, err
	}
	bp := readBufs.Get().(*[]byte)
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		var n int
		n, err = r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			break
		}
	}
	var frame []byte
	if err == io.EOF {
		err = nil
		frame = append(make([]byte, 0, len(b)), b...)
	}
	if cap(b) <= 64<<10 {
		*bp = b
		readBufs.Put(bp)
	}
	return mt, frame, err
}

var readBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxDeferredReplies bounds the answers a reader holds back while more calls keep arriving.
const maxDeferredReplies = 64

// park hands the socket to the poller; true when the calling reader must return.
func (s *Socket) park() bool {
	s.mu.Lock()
	if s.closing && s.closeCode == 0 { // aborted: let the read fail and clean up
		s.mu.Unlock()
		return false
	}
	s.parked = true
	s.mu.Unlock()
	if s.srv.poller.Arm(&s.poll, s.unpark) {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.parked {
		return true // abort already started a new reader
	}
	s.parked = false
	return false
}

// unpark starts a reader for a parked socket (poller event, or abort).
func (s *Socket) unpark() {
	s.mu.Lock()
	if !s.parked {
		s.mu.Unlock()
		return
	}
	s.parked = false
	s.mu.Unlock()
	s.srv.workers.run(s.readLoop)
}

func (s *Socket) cleanup() {
	s.cancel()
	s.mu.Lock()
	s.closing = true
	subs := s.subs
	s.subs = map[string]struct{}{}
	s.queue = nil
	// A waiting writer has nothing left to do; without this it would wait for the sweeper.
	s.retire = true
	select {
	case s.wake <- struct{}{}:
	default:
	}
	s.mu.Unlock()
	for ch := range subs {
		s.srv.broker.Unsubscribe(s, ch)
	}
	if s.srv.poller != nil {
		s.srv.poller.Forget(&s.poll)
	}
	_ = s.ws.NetConn().Close()
	close(s.dead)
	s.srv.removeSocket(s)
	s.srv.wg.Done()
	if l := s.srv.cfg.Logger; l.Enabled(context.Background(), slog.LevelDebug) {
		s.mu.Lock()
		code := s.closeCode
		s.mu.Unlock()
		s.Logger().Debug("connection closed", "code", code, "subscriptions", len(subs), "duration", time.Since(s.born).Round(time.Millisecond).String())
	}
}
