package wsfront

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sockmesh/sockmesh/access"
	"github.com/sockmesh/sockmesh/netpoll"
	"github.com/sockmesh/sockmesh/pace"
	"github.com/sockmesh/sockmesh/wsframe"
)

// Server is one WebSocket front. Register handlers and middleware before serving.
type Server struct {
	cfg    Config
	broker Broker
	// fanoutBroker is broker when it can deliver within a reader's Fanout (nil otherwise).
	fanoutBroker FanoutBroker
	auth         *access.Auth
	up           websocket.Upgrader

	handshakeMW []HandshakeMiddleware
	subscribeMW []SubscribeMiddleware
	publishMW   []PublishMiddleware
	invokes     map[string]InvokeHandler
	// invokeDefault serves invokes without their own handler (nil: UnhandledEventError).
	invokeDefault InvokeHandler
	transmits     map[string]TransmitHandler
	onClose       []func(*Socket)

	mu       sync.Mutex
	sockets  map[*Socket]struct{}
	draining bool
	empty    chan struct{} // closed when the last socket is gone during a drain
	admit    *admission
	hsGate   *pace.Gate // node-wide handshake pacing; nil: unpaced
	// stopSweep ends the sweeper (closed by Shutdown or Close).
	stopSweep chan struct{}
	// lastTick is the unix-nano time of the sweeper's last tick. A gap longer than the ping
	// timeout means this process did not run (SIGSTOP, a VM pause): every client connected
	// before it has stopped hearing pings for longer than it tolerates and has given up on us,
	// so nothing it sent before it left may be acted on (see stale).
	lastTick atomic.Int64
	// poller parks idle connections (nil where it is not available).
	poller *netpoll.Poller
	// pingWire is the ping frame of the protocol version.
	pingWire []byte
	// load decides whether the write window applies (see writeDelay).
	load *loadMeter
	// workers run readers, writers and upgrades on goroutines with grown stacks.
	workers  *workers
	stopOnce sync.Once
	wg       sync.WaitGroup
	idSeq    atomic.Uint64
	idPrefix string
}

// New returns a front that hands channel work to broker. auth may be nil, in which case
// every presented token is refused as invalid and SetAuthToken fails.
func New(cfg Config, broker Broker, auth *access.Auth) *Server {
	cfg.setDefaults()
	var pfx [6]byte
	_, _ = rand.Read(pfx[:])
	s := &Server{
		cfg:       cfg,
		broker:    broker,
		auth:      auth,
		invokes:   map[string]InvokeHandler{},
		transmits: map[string]TransmitHandler{},
		sockets:   map[*Socket]struct{}{},
		idPrefix:  base64.RawURLEncoding.EncodeToString(pfx[:]),
		empty:     make(chan struct{}),
		admit:     newAdmission(cfg.Limits),
		stopSweep: make(chan struct{}),
		pingWire:  pingV2,
		load:      newLoadMeter(cfg.WriteDelayLoad),
	}
	if cfg.ProtocolVersion == 1 {
		s.pingWire = pingV1
	}
	if r := cfg.Limits.HandshakeRate; r > 0 {
		s.hsGate = pace.NewGate(r)
	}
	if cfg.WriteDelay > 0 {
		// Without a write window, what coalesces a busy connection's publications is its
		// writer lagging behind the readers; a reader writing each burst at once would undo
		// that (in-process fan-out to 1,000 subscribers: 3.4M -> 1.4M deliveries/s).
		s.fanoutBroker, _ = broker.(FanoutBroker)
	}
	s.workers = newWorkers(keptWorkers)
	if p, err := netpoll.NewPoller(); err == nil {
		s.poller = p
	} else {
		cfg.Logger.Warn("idle connections keep a goroutine each", "why", err)
	}
	s.lastTick.Store(time.Now().UnixNano())
	s.wg.Add(1)
	go s.sweeper()
	s.up = websocket.Upgrader{
		// 0: gorilla reads through the buffered reader hijackWriter hands it.
		ReadBufferSize:  0,
		WriteBufferSize: 1024,
		// Origins are checked before the upgrader runs (to answer with the reason).
		CheckOrigin: func(*http.Request) bool { return true },
		// Write buffers are held only while writing, not for a connection's lifetime.
		WriteBufferPool: &sync.Pool{},
		// The client offers permessage-deflate; the real server declines it, and so do we.
		EnableCompression: false,
	}
	return s
}

// Config returns the effective configuration (defaults applied).
func (s *Server) Config() Config { return s.cfg }

// Auth returns the token signer/verifier (nil when none is configured).
func (s *Server) Auth() *access.Auth { return s.auth }

// UseHandshake adds handshake middleware.
func (s *Server) UseHandshake(m HandshakeMiddleware) { s.handshakeMW = append(s.handshakeMW, m) }

// UseSubscribe adds subscribe middleware.
func (s *Server) UseSubscribe(m SubscribeMiddleware) { s.subscribeMW = append(s.subscribeMW, m) }

// UsePublish adds publish middleware; it may change the data.
func (s *Server) UsePublish(m PublishMiddleware) { s.publishMW = append(s.publishMW, m) }

// HandleInvoke registers the handler of a client invoke event.
func (s *Server) HandleInvoke(event string, h InvokeHandler) { s.invokes[event] = h }

// HandleInvokeDefault registers the handler of invoke events no other handler serves.
func (s *Server) HandleInvokeDefault(h InvokeHandler) { s.invokeDefault = h }

// HandleTransmit registers the handler of a client transmit event.
func (s *Server) HandleTransmit(event string, h TransmitHandler) { s.transmits[event] = h }

// OnClose registers a function called once for every socket that closes.
func (s *Server) OnClose(f func(*Socket)) { s.onClose = append(s.onClose, f) }

// paceHandshake waits for the node-wide handshake rate (Limits.HandshakeRate, scaled by the
// node's governor: HandshakeGate); false when the wait would pass Limits.HandshakeWait
// (answered 503) or the client left.
func (s *Server) paceHandshake(w http.ResponseWriter, r *http.Request) bool {
	if cw, ok := w.(*connWriter); ok && cw.inTurn || s.hsGate == nil || s.hsGate.TryTake(1) {
		return true
	}
	s.cfg.Metrics.PacedHandshakes.Inc()
	err := s.hsGate.Wait(r.Context(), 1, s.cfg.Limits.HandshakeWait)
	if err == nil {
		return true
	}
	if errors.Is(err, pace.ErrTooLong) {
		s.cfg.Metrics.Refused.WithLabelValues("node_rate").Inc()
		// When the queue ahead should have room, at the rate in force (at most a minute: the
		// rate may rise meanwhile); the Go client honours it, socketcluster-client backs off.
		w.Header().Set("Retry-After", strconv.Itoa(int(min(s.hsGate.Ahead(), time.Minute)/time.Second)+1))
		http.Error(w, "sockmesh: node connection rate limit: retry later", http.StatusServiceUnavailable)
	}
	return false
}

// acceptTurn waits, before the accept loop takes the next connection, for that connection's
// turn of the node's handshake rate. A storm of reconnecting clients then waits in the
// kernel's accept queue (and, once that is full, in their own SYN retries), costing this
// process nothing, rather than being accepted, read, parsed and held or refused here: with
// 10,000 clients of a dead node arriving within a second that took all of one core (88 %
// for this process, none idle), and the other clients' p99 in the next two seconds was 242
// and 109 ms; accepting in turn, 68 % with 19 % idle, and 196 and 10 ms (docs/benchmarks.md,
// "Recovery storm"). A connection that does not become a socket gives its turn back (serveConn), so
// strangers' bytes and refused requests do not use up the rate that clients wait for.
func (s *Server) acceptTurn() {
	if s.hsGate.TryTake(1) {
		return
	}
	s.cfg.Metrics.PacedHandshakes.Inc()
	_ = s.hsGate.Wait(context.Background(), 1, 0)
}

// HandshakeGate is the gate that paces new connections (nil when unpaced), for the node's
// governor to scale.
func (s *Server) HandshakeGate() *pace.Gate { return s.hsGate }

// ServeHTTP upgrades requests on the configured path; anything else is 400 (wrong path, as
// socketcluster-server answers) or the upgrader's own error.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != s.cfg.Path {
		http.Error(w, "sockmesh: WebSocket path is "+s.cfg.Path, http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		http.Error(w, "sockmesh: node is draining", http.StatusServiceUnavailable)
		return
	}
	origin := r.Header.Get("Origin")
	if s.cfg.CheckOrigin != nil && !s.cfg.CheckOrigin(r) || s.cfg.CheckOrigin == nil && !originAllowed(origin, s.cfg.Limits.AllowedOrigins) {
		s.cfg.Metrics.Refused.WithLabelValues("origin").Inc()
		http.Error(w, "Failed to authorize socket handshake - Invalid origin: "+origin, http.StatusForbidden)
		return
	}
	ip := remoteIP(r)
	if code, msg := s.admit.admit(ip, time.Now()); code != 0 {
		reason := "rate"
		if code == http.StatusServiceUnavailable {
			reason = "node_limit"
		} else if strings.Contains(msg, "too many") {
			reason = "ip_limit"
		}
		s.cfg.Metrics.Refused.WithLabelValues(reason).Inc()
		http.Error(w, msg, code)
		return
	}
	if !s.paceHandshake(w, r) {
		s.admit.release(ip)
		return
	}
	hw := &hijackWriter{ResponseWriter: w}
	ws, err := s.up.Upgrade(hw, r, nil)
	if err != nil {
		s.admit.release(ip)
		s.cfg.Metrics.UpgradeFailures.Inc()
		return // the upgrader already answered
	}
	sock := newSocket(s, ws, keptRequest(r))
	sock.ip = ip
	sock.br, sock.pc = hw.br, hw.pc
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		s.admit.release(ip)
		_ = ws.Close()
		return
	}
	s.sockets[sock] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.cfg.Metrics.Connections.Inc()
	if s.cfg.Logger.Enabled(r.Context(), slog.LevelDebug) {
		sock.Logger().Debug("connection opened", "origin", origin)
	}
	// The request's goroutine (stack already grown) becomes the first reader; it ends when
	// the socket parks or closes.
	sock.readLoop()
}

// hijackWriter gives gorilla a buffered reader of ours at the hijack, so that the socket
// can tell whether gorilla holds unread bytes (Socket.readLoop) and park when it does not.
type hijackWriter struct {
	http.ResponseWriter
	br *bufio.Reader
	pc *netpoll.PrefetchConn
}

func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("sockmesh: connection cannot be hijacked")
	}
	c, brw, err := hj.Hijack()
	if err != nil || brw.Reader.Buffered() > 0 {
		return c, brw, err // gorilla refuses data sent before the handshake completes
	}
	// gorilla reads through the buffer and resets it onto the connection it is given, so
	// it is given the prefetching one.
	h.pc = netpoll.NewPrefetchConn(c)
	gc := &guardConn{PrefetchConn: h.pc}
	gc.g.R = h.pc
	h.br = bufio.NewReaderSize(gc, netpoll.PrefetchSize) // small: an idle connection keeps it; larger frames are read past it
	return gc, bufio.NewReadWriter(h.br, brw.Writer), nil
}

// guardConn is the connection gorilla reads: the prefetching one, read through a
// wsframe.CloseGuard, so that the close frames gorilla would answer wrongly never reach it
// whole (readLoop answers them; see Socket.readLoop).
type guardConn struct {
	*netpoll.PrefetchConn
	g wsframe.CloseGuard
}

func (c *guardConn) Read(p []byte) (int, error) { return c.g.Read(p) }

func (s *Server) newID() string {
	var b [8]byte
	n := s.idSeq.Add(1)
	for i := range b {
		b[i] = byte(n >> (8 * i))
	}
	return s.idPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

func (s *Server) removeSocket(sock *Socket) {
	s.admit.release(sock.ip)
	s.mu.Lock()
	delete(s.sockets, sock)
	if s.draining && len(s.sockets) == 0 {
		s.closeEmpty()
	}
	s.mu.Unlock()
	s.cfg.Metrics.Connections.Dec()
	for _, f := range s.onClose {
		f(sock)
	}
}

// Close stops the server's own goroutine after a Shutdown, or for a server that served
// through another listener's lifetime (tests). Open sockets are not touched.
func (s *Server) Close() {
	s.stopOnce.Do(func() {
		close(s.stopSweep)
		if s.poller != nil {
			s.poller.Close()
		}
		s.workers.close()
	})
}

// keptRequest is what a socket keeps of its upgrade request for its whole life: method, URL,
// headers, host and remote address. The original also holds the server connection's context
// and buffers, which an idle connection should not pin; and its header map, sized for the
// handshake's headers, is replaced by one without them (they mean nothing after the upgrade),
// which an idle connection holds for hours.
func keptRequest(r *http.Request) *http.Request {
	return &http.Request{
		Method: r.Method, URL: r.URL, Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor,
		Header: keptHeader(r.Header), Host: r.Host, RemoteAddr: r.RemoteAddr, RequestURI: r.RequestURI, TLS: r.TLS,
	}
}

// handshakeOnly are the upgrade's own headers (canonical form), dropped from the kept request;
// Sec-WebSocket-Protocol stays (an application may ask which was offered).
var handshakeOnly = map[string]bool{
	"Connection": true, "Upgrade": true, "Sec-Websocket-Key": true, "Sec-Websocket-Version": true,
	"Sec-Websocket-Extensions": true,
}

func keptHeader(h http.Header) http.Header {
	n := 0
	for k := range h {
		if !handshakeOnly[k] {
			n++
		}
	}
	out := make(http.Header, n)
	for k, v := range h {
		if !handshakeOnly[k] {
			out[k] = v
		}
	}
	return out
}

// closeEmpty closes s.empty once; s.mu held.
func (s *Server) closeEmpty() {
	select {
	case <-s.empty:
	default:
		close(s.empty)
	}
}

// Sockets returns a snapshot of the open sockets.
func (s *Server) Sockets() []*Socket {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Socket, 0, len(s.sockets))
	for k := range s.sockets {
		out = append(out, k)
	}
	return out
}

// Shutdown refuses new connections, closes every socket with code and reason, and waits for
// their goroutines to end or ctx to expire. spread > 0 spaces the closes evenly over that
// duration so a herd of reconnecting clients does not hit the other nodes at once.
func (s *Server) Shutdown(ctx context.Context, code int, reason string, spread time.Duration) error {
	s.mu.Lock()
	s.draining = true
	socks := make([]*Socket, 0, len(s.sockets))
	for k := range s.sockets {
		socks = append(socks, k)
	}
	if len(socks) == 0 {
		s.closeEmpty()
	}
	s.mu.Unlock()
	var step time.Duration
	if spread > 0 && len(socks) > 1 {
		step = spread / time.Duration(len(socks))
	}
	for i, sk := range socks {
		select {
		case <-sk.Done():
			continue // left by itself: no close, and no share of the spread to wait out
		default:
		}
		sk.Close(code, reason)
		if step > 0 && i < len(socks)-1 {
			t := time.NewTimer(step)
			select {
			case <-t.C:
			case <-ctx.Done():
			case <-s.empty:
			}
			t.Stop()
		}
	}
	// The sweeper goes last: it may still have to time out a socket that ignores its close.
	done := make(chan struct{})
	go func() {
		for {
			s.mu.Lock()
			n := len(s.sockets)
			s.mu.Unlock()
			if n == 0 {
				break
			}
			select {
			case <-s.empty:
			case <-time.After(50 * time.Millisecond):
			}
		}
		s.Close()
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, sk := range s.Sockets() {
			sk.abort()
		}
		<-done
		return errors.Join(ctx.Err(), errors.New("sockets closed forcibly"))
	}
}
