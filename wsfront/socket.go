package wsfront

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sockmesh/sockmesh/access"
	"github.com/sockmesh/sockmesh/netpoll"
	"github.com/sockmesh/sockmesh/scproto"
	"github.com/sockmesh/sockmesh/wsframe"
	"golang.org/x/time/rate"
)

// Socket is one client connection. Its reader goroutine decodes and handles inbound frames
// strictly in order; its writer goroutine owns every write to the WebSocket.
type Socket struct {
	srv  *Server
	ws   *websocket.Conn
	req  *http.Request
	id   string
	ip   string
	born time.Time
	// broken: a handler panicked on this connection; nothing more it sends is handled while it
	// closes (1011).
	broken atomic.Bool
	// expired: the process stalled past the ping timeout while this connection was open
	// (Server.expireAll); nothing more it sent is handled.
	expired atomic.Bool
	// pubRate limits this connection's publications (nil: unlimited); reader goroutine only.
	pubRate *rate.Limiter
	// eventRate limits its application events (invokes, transmits); reader goroutine only.
	eventRate *rate.Limiter
	// log is the connection's logger (conn=<id> remote=<addr>), made on first use.
	log atomic.Pointer[slog.Logger]

	// lastSeen is the unix-nano time of the last inbound frame; the sweeper closes the
	// socket with 4001 when it is older than PingTimeout.
	lastSeen   atomic.Int64
	handshaken atomic.Bool

	mu          sync.Mutex // guards everything below
	queue       [][]byte
	queued      int
	closing     bool // no more frames are accepted
	closeCode   int
	closeReason string
	claims      access.Claims
	token       string
	expiry      time.Time
	subs        map[string]struct{}
	calls       map[int64]chan reply
	cidSeq      int64
	// sampleObs, when set, observes the time from sampleAt until the writer has written the
	// queue generation holding a sampled frame (publish-to-write latency, see DeliverSampled).
	sampleObs prometheus.Observer
	sampleAt  time.Time

	// writing: a writer goroutine runs (it owns every write to ws meanwhile);
	// closePending: the close frame is still to be written after the queue.
	writing      bool
	closePending bool
	// idleWait: the writer goroutine waits for frames with nothing queued; lent: meanwhile
	// another goroutine writes in its place (see writeBorrowed), and the writer, if woken,
	// waits again until it is given the connection back.
	idleWait bool
	lent     bool
	// carry is the unwritten end of a frame that another goroutine's write attempt started
	// (it never waits on this socket: see writeBorrowed); the writer writes it before
	// anything else, and nobody else writes while it is set.
	carry []byte
	// lastWrite is when publications were last written: later ones wait until WriteDelay
	// has passed since then (zero: no window to wait out).
	lastWrite time.Time
	// inBatch: a reader's Batch holds this socket and will write what is queued (see
	// DeliverIn).
	inBatch bool
	// deferredReplies: frames reply left for the reader to write (reader goroutine only, no
	// lock).
	deferredReplies int
	// batch: the sockets this reader's publications left frames for (reader goroutine only).
	batch Batch

	// urgent: a queued frame must not wait for the write delay; delaying: the writer is
	// waiting out the delay (only urgent frames wake it).
	urgent   bool
	delaying bool
	// retire asks an idle writer to exit; idleSince is when it last found the queue empty.
	retire    bool
	idleSince time.Time

	// nc is the connection under ws; data frames are written to it directly (writeRaw).
	nc net.Conn
	// writeStart is the unix-nano start of the write in progress (0: none); the sweeper
	// cuts a connection whose write has been stuck for WriteTimeout.
	writeStart atomic.Int64

	// ctx is cancelled when the connection ends (handlers' context).
	ctx    context.Context
	cancel context.CancelFunc
	// br is gorilla's read buffer (ours, see hijackWriter): with nothing buffered in it and
	// nothing in the kernel, the reader parks (parked, guarded by mu).
	br     *bufio.Reader
	pc     *netpoll.PrefetchConn // what br reads from (nil: br reads the connection directly)
	poll   netpoll.Conn
	parked bool

	wake chan struct{} // cap 1: wakes a waiting writer
	dead chan struct{} // closed when the reader has finished and cleaned up
	// lastPing is when the sweeper last queued a ping; pingPhased: the schedule has been
	// given its random phase (sweeper goroutine only).
	lastPing   time.Time
	pingPhased bool
}

type reply struct {
	data json.RawMessage
	err  json.RawMessage
}

func newSocket(srv *Server, ws *websocket.Conn, r *http.Request) *Socket {
	s := &Socket{
		srv:  srv,
		ws:   ws,
		nc:   ws.NetConn(),
		req:  r,
		id:   srv.newID(),
		born: time.Now(),
		subs: map[string]struct{}{},
		wake: make(chan struct{}, 1),
		dead: make(chan struct{}),
	}
	pc, _ := s.nc.(*netpoll.PrefetchConn)
	if pc != nil {
		s.nc = pc.Conn // writes go straight to the connection (writev needs the real one)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.poll = netpoll.NewConn(s.nc)
	if pc != nil && s.poll.Raw() {
		pc.ReadRaw(&s.poll)
	}
	s.lastSeen.Store(s.born.UnixNano())
	s.lastPing = s.born
	if r := srv.cfg.Limits.PublishRate; r > 0 {
		s.pubRate = rate.NewLimiter(rate.Limit(r), max(1, int(r)))
	}
	if r := srv.cfg.Limits.EventRate; r > 0 {
		s.eventRate = rate.NewLimiter(rate.Limit(r), max(1, int(r)))
	}
	ws.SetReadLimit(srv.cfg.MaxPayload)
	ws.SetPingHandler(s.pong)
	return s
}

// pong answers a client's WebSocket ping. Unlike gorilla's default handler it clears the
// write deadline afterwards: data frames are written without one (see writeRaw).
func (s *Socket) pong(data string) error {
	err := s.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	_ = s.nc.SetWriteDeadline(time.Time{})
	if err == websocket.ErrCloseSent {
		return nil
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return err
}

// ID is the socket id sent in the handshake.
func (s *Socket) ID() string { return s.id }

// Request is the HTTP upgrade request (headers, query, remote address).
func (s *Socket) Request() *http.Request { return s.req }

// RemoteAddr is the client's network address.
func (s *Socket) RemoteAddr() net.Addr { return s.ws.RemoteAddr() }

// Done is closed once the socket is closed and cleaned up.
func (s *Socket) Done() <-chan struct{} { return s.dead }

// Claims returns the authenticated token's claims, or nil.
func (s *Socket) Claims() access.Claims {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claims
}

// IsAuthenticated reports whether the socket holds a valid, unexpired token.
func (s *Socket) IsAuthenticated() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claims != nil
}

// Subscriptions returns the socket's channels.
func (s *Socket) Subscriptions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.subs))
	for c := range s.subs {
		out = append(out, c)
	}
	return out
}

// Logger returns the connection's logger: the server's logger with conn=<socket id> and
// remote=<address>, so every line about the connection can be found by its id.
func (s *Socket) Logger() *slog.Logger {
	if l := s.log.Load(); l != nil {
		return l
	}
	l := s.srv.cfg.Logger.With("conn", s.id, "remote", s.req.RemoteAddr)
	if !s.log.CompareAndSwap(nil, l) {
		return s.log.Load()
	}
	return l
}

// Deliver queues a shared, already encoded frame. The broker calls it for every subscriber
// of a publication; frame must not be modified afterwards. A full queue disconnects the
// client (slow consumer) and returns false.
func (s *Socket) Deliver(frame []byte) bool { return s.enqueueSampled(frame, false, nil, time.Time{}) }

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

// replyBufs: the frames flushReplies packs, between uses (a reader has no batch of its own).
var replyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// queueFrame queues frame. When no writer is busy, a deferred frame (reply) is left for the
// socket's own reader to write, and with a batch b the frame is left for b's reader.
func (s *Socket) queueFrame(frame []byte, urgent, deferred bool, b *Batch, obs prometheus.Observer, since time.Time) bool {
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
	case s.inBatch: // a reader will write it (or wake the writer) soon
	case b != nil && len(b.socks) < maxBatchSockets && s.writerIdle():
		s.inBatch = true
		b.socks = append(b.socks, s)
	case deferred && s.writerIdle():
		s.deferredReplies++
	default:
		s.kickWriter()
	}
	s.mu.Unlock()
	return true
}

// Transmit sends an event the client does not answer.
func (s *Socket) Transmit(event string, data any) error {
	raw, err := marshalData(data)
	if err != nil {
		return err
	}
	if !s.enqueue(scproto.EncodeEvent(event, raw, 0)) {
		return errClosed
	}
	return nil
}

var errClosed = scproto.NewError("BadConnectionError", "socket is closed")

// Invoke sends an event the client answers and waits for the answer. A client error
// answer is returned as an *scproto.Error. It must not be called from the socket's own reader
// (an invoke handler): use Invocation.Async there.
func (s *Socket) Invoke(ctx context.Context, event string, data any) (json.RawMessage, error) {
	raw, err := marshalData(data)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.srv.cfg.ServerInvokeTimeout)
		defer cancel()
	}
	ch := make(chan reply, 1)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, errClosed
	}
	s.cidSeq++
	cid := s.cidSeq
	if s.calls == nil {
		s.calls = map[int64]chan reply{}
	}
	s.calls[cid] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.calls, cid)
		s.mu.Unlock()
	}()
	if !s.enqueue(scproto.EncodeEvent(event, raw, cid)) {
		return nil, errClosed
	}
	select {
	case r := <-ch:
		if r.err != nil {
			e := &scproto.Error{Name: "Error"}
			var m map[string]any
			if json.Unmarshal(r.err, &m) == nil {
				if v, ok := m["name"].(string); ok {
					e.Name = v
				}
				if v, ok := m["message"].(string); ok {
					e.Message = v
				}
				delete(m, "name")
				delete(m, "message")
				if len(m) > 0 {
					e.Fields = m
				}
			} else {
				e.Message = string(r.err)
			}
			return nil, e
		}
		return r.data, nil
	case <-s.dead:
		return nil, errClosed
	case <-ctx.Done():
		return nil, scproto.NewError("TimeoutError", "Event response for "+event+" event timed out")
	}
}

// KickOut removes the socket from channel and tells the client with #kickOut.
func (s *Socket) KickOut(channel, message string) {
	s.mu.Lock()
	_, ok := s.subs[channel]
	delete(s.subs, channel)
	s.mu.Unlock()
	if ok {
		s.srv.broker.Unsubscribe(s, channel)
	}
	d := map[string]string{"channel": channel}
	if message != "" {
		d["message"] = message
	}
	_ = s.Transmit("#kickOut", d)
}

// SetAuthToken signs claims (adding iat and exp; expiresIn 0 = the default expiry),
// authenticates the socket and sends the token to the client with #setAuthToken.
func (s *Socket) SetAuthToken(claims access.Claims, expiresIn time.Duration) error {
	if s.srv.auth == nil {
		return scproto.NewError("AuthError", "no auth key is configured")
	}
	tok, norm, err := s.srv.auth.Sign(claims, expiresIn)
	if err != nil {
		return scproto.NewError("AuthError", "failed to sign auth token: "+err.Error())
	}
	var exp time.Time
	if v, ok := norm["exp"].(float64); ok {
		exp = time.Unix(int64(v), 0)
	}
	s.mu.Lock()
	s.claims, s.token, s.expiry = norm, tok, exp
	s.mu.Unlock()
	s.srv.cfg.Metrics.TokensIssued.Inc()
	return s.Transmit("#setAuthToken", map[string]string{"token": tok})
}

// Deauthenticate drops the socket's token and tells the client to delete it.
func (s *Socket) Deauthenticate() {
	s.mu.Lock()
	s.claims, s.token, s.expiry = nil, "", time.Time{}
	s.mu.Unlock()
	_ = s.Transmit("#removeAuthToken", nil)
}

func (s *Socket) setAuth(c access.Claims, tok string, exp time.Time) {
	s.mu.Lock()
	s.claims, s.token, s.expiry = c, tok, exp
	s.mu.Unlock()
}

// checkExpiry deauthenticates a socket whose token expired while it was connected.
func (s *Socket) checkExpiry() {
	s.mu.Lock()
	expired := s.claims != nil && !s.expiry.IsZero() && time.Now().After(s.expiry)
	s.mu.Unlock()
	if expired {
		s.Deauthenticate()
	}
}

// Close flushes what is queued, then closes with code and reason. It does not wait.
func (s *Socket) Close(code int, reason string) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	s.closeCode, s.closeReason = code, reason
	s.closePending = true
	s.urgent = true
	s.kickWriter()
	s.mu.Unlock()
}

// abort cuts the connection without a close frame; the reader then ends and cleans up
// (a parked socket gets a reader for that).
func (s *Socket) abort() {
	_ = s.ws.NetConn().Close()
	s.unpark()
}

func marshalData(data any) (json.RawMessage, error) {
	switch d := data.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		return d, nil
	default:
		return json.Marshal(d)
	}
}

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
	var batch []byte
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
		if delay > 0 && !s.lastWrite.IsZero() {
			// A busy connection: let more publications join this write (see
			// Config.WriteDelay); anything urgent ends the wait.
			if d := delay - time.Since(s.lastWrite); d > 0 {
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
		if _, _, err := s.writeFrames(frames, &batch, false); err != nil {
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

// writeFrames writes frames, packing runs of them into JSON array frames. With try, it never
// waits for the socket: it stops when the socket takes no more, and returns the index of the
// first frame it did not start (next) and the unwritten end of the one it was writing (carry,
// a copy); without try, it writes everything (next == len(frames), carry nil).
func (s *Socket) writeFrames(frames [][]byte, batch *[]byte, try bool) (next int, carry []byte, err error) {
	cfg := &s.srv.cfg
	m := cfg.Metrics
	for i := 0; i < len(frames); {
		if len(frames[i]) == 0 { // a ping: alone, never inside a batch
			if try {
				if carry, err = s.tryWrite(emptyTextFrame); err != nil || carry != nil {
					return i + 1, carry, err
				}
			} else if err := s.writeRaw(emptyTextFrame); err != nil {
				return i, nil, err
			}
			i++
			continue
		}
		// Pack as many consecutive frames as fit into one JSON array frame: one write and
		// one WebSocket frame instead of many.
		j := i + 1
		size := len(frames[i])
		if cfg.BatchBytes > 0 {
			size += 2
			for j < len(frames) && len(frames[j]) > 0 && size+len(frames[j])+1 <= cfg.BatchBytes {
				size += len(frames[j]) + 1
				j++
			}
		}
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
			b := append((*batch)[:0], make([]byte, wsframe.MaxServerHeader)...)
			if j == i+1 {
				b = append(b, frames[i]...)
			} else {
				b = append(b, '[')
				for k := i; k < j; k++ {
					if k > i {
						b = append(b, ',')
					}
					b = append(b, frames[k]...)
				}
				b = append(b, ']')
			}
			*batch = b
			// The header goes right before the payload, in the space reserved for it.
			var hdr [wsframe.MaxServerHeader]byte
			h := wsframe.AppendHeader(hdr[:0], wsframe.Text, len(b)-wsframe.MaxServerHeader, nil)
			start := wsframe.MaxServerHeader - len(h)
			copy(b[start:], h)
			if try {
				carry, err = s.tryWrite(b[start:])
			} else {
				err = s.writeRaw(b[start:])
			}
		}
		if err != nil {
			return i, nil, err
		}
		m.FramesOut.Inc()
		m.PacketsOut.Add(float64(j - i))
		i = j
		if carry != nil {
			return i, carry, nil
		}
	}
	return len(frames), nil, nil
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

var emptyTextFrame = wsframe.AppendHeader(nil, wsframe.Text, 0, nil)

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
