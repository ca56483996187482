package wsfront

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
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
	// inFanout: a reader's Fanout holds this socket and will write what is queued (see
	// DeliverIn).
	inFanout bool
	// deferredReplies: frames reply left for the reader to write (reader goroutine only, no
	// lock).
	deferredReplies int
	// batch: the sockets this reader's publications left frames for (reader goroutine only).
	fanout Fanout

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
	// asyncs counts the Invocation.Async functions running (bounded by MaxAsyncInvokes).
	asyncs atomic.Int32
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
	var pc *netpoll.PrefetchConn
	if gc, ok := s.nc.(*guardConn); ok {
		pc = gc.PrefetchConn
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
	ws.SetCloseHandler(s.echoClose)
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

// Holds reports whether the client holds a subscription to channel and the connection is not
// closing: a broker that subscribes the socket asynchronously (RecoveringBroker) checks it
// after subscribing, and undoes the subscription when it is false.
func (s *Socket) Holds(channel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.subs[channel]
	return ok && !s.closing
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
