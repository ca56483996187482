package wsfront

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sockmesh/sockmesh/access"
	"github.com/sockmesh/sockmesh/scproto"
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
		flushDue := s.deferredReplies > 0 || len(s.batch.socks) > 0
		if !whole && (flushDue || s.mayPark()) && s.poll.Raw() {
			inKernel = s.prefetch()
		}
		if flushDue && (!whole && !inKernel || s.deferredReplies >= maxDeferredReplies || len(s.batch.socks) >= maxBatchSockets) {
			s.flushBatch()
			s.flushReplies()
		}
		if !whole && !inKernel && s.mayPark() && s.br.Buffered() == 0 && s.park() {
			return
		}
		mt, frame, err := s.readMessage()
		if err != nil {
			s.flushBatch() // other sockets' frames
			if errors.Is(err, websocket.ErrReadLimit) {
				m.Oversized.Inc()
				s.Logger().Info("frame over the size limit: closed", "limit", s.srv.cfg.MaxPayload)
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
		if s.broken.Load() {
			continue
		}
		p := scproto.Decode(frame)
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

// handleFirst enforces the handshake rules: the first frame must be a #handshake invoke.
func (s *Socket) handleFirst(ctx context.Context, p *scproto.Packet) bool {
	m := s.srv.cfg.Metrics
	if p.Kind != scproto.KindEvent || p.Event != "#handshake" {
		m.HandshakeFailures.WithLabelValues("before_handshake").Inc()
		s.Close(scproto.CloseBeforeHandshake, "")
		return true // keep reading until the close completes
	}
	if !p.IsInvoke() {
		m.HandshakeFailures.WithLabelValues("malformed").Inc()
		s.Close(scproto.CloseHandshakeRejected, "")
		return true
	}
	s.handshake(ctx, p)
	return true
}

type handshakeData struct {
	AuthToken json.RawMessage
}

var handshakeFields = []string{"authToken"}

func (s *Socket) handshake(ctx context.Context, p *scproto.Packet) {
	m := s.srv.cfg.Metrics
	// Scanned, not unmarshalled: encoding/json's reflection grew the stack of every new
	// connection's reader (runtime.copystack was ~8 % of a connection storm).
	var hd handshakeData
	if len(p.Data) > 0 && !scproto.ScanFields(p.Data, handshakeFields, &hd.AuthToken) {
		hd = handshakeData{}
	}
	var authErr *scproto.Error
	var claims access.Claims
	tokenPresented := len(hd.AuthToken) > 0 && string(hd.AuthToken) != "null"
	if tokenPresented {
		if s.srv.auth == nil {
			authErr = scproto.NewError("AuthTokenInvalidError", "invalid signature", "isBadToken", true)
		} else {
			var exp time.Time
			claims, exp, authErr = s.srv.auth.Verify(hd.AuthToken)
			if authErr == nil {
				var tok string
				_ = json.Unmarshal(hd.AuthToken, &tok)
				s.setAuth(claims, tok, exp)
			}
		}
	}
	if len(s.srv.handshakeMW) > 0 {
		req := &HandshakeRequest{Socket: s, HTTP: s.req, Claims: claims}
		for _, mw := range s.srv.handshakeMW {
			if err := mw(ctx, req); err != nil {
				m.HandshakeFailures.WithLabelValues("rejected").Inc()
				s.Logger().Info("handshake rejected by middleware", "err", err)
				code := scproto.CloseHandshakeRejected
				var e *scproto.Error
				if errors.As(err, &e) {
					if sc, ok := toInt(e.Fields["statusCode"]); ok {
						code = sc
					}
				} else if !errors.Is(err, scproto.ErrSilentBlock) {
					err = scproto.NewError("HandshakeRejectedError", err.Error(), "statusCode", code)
				}
				s.reply(scproto.EncodeResponse(p.CID, nil, scproto.WireError(err, "handshake")))
				s.Close(code, "")
				return
			}
		}
	}
	if authErr != nil {
		m.AuthFailures.WithLabelValues(authErr.Name).Inc()
	}
	s.handshaken.Store(true)
	m.Handshakes.Inc()
	s.reply(s.statusResponse(p.CID, authErr))
	if authErr != nil && authErr.IsBadToken() {
		s.reply(scproto.EncodeEvent("#removeAuthToken", nil, 0))
	}
}

func (s *Socket) statusResponse(cid json.RawMessage, authErr *scproto.Error) []byte {
	if authErr == nil && scproto.PlainJSONString(s.id) {
		// The answer of every new connection: built by hand, in the field order below.
		b := make([]byte, 0, 80+len(s.id))
		b = append(b, `{"id":"`...)
		b = append(b, s.id...)
		b = append(b, `","pingTimeout":`...)
		b = scproto.AppendInt(b, s.srv.cfg.PingTimeout.Milliseconds())
		b = append(b, `,"isAuthenticated":`...)
		b = strconv.AppendBool(b, s.IsAuthenticated())
		b = append(b, '}')
		return scproto.EncodeResponse(cid, b, nil)
	}
	status := struct {
		ID              string         `json:"id"`
		PingTimeout     int64          `json:"pingTimeout"`
		AuthError       *scproto.Error `json:"authError,omitempty"`
		IsAuthenticated bool           `json:"isAuthenticated"`
	}{s.id, s.srv.cfg.PingTimeout.Milliseconds(), authErr, s.IsAuthenticated()}
	b, _ := json.Marshal(status)
	return scproto.EncodeResponse(cid, b, nil)
}

func toInt(v any) (int, bool) {
	switch n := v.(type) {
	case int:
		return n, true
	case int64:
		return int(n), true
	case float64:
		return int(n), true
	}
	return 0, false
}

// handle dispatches one packet after the handshake.
func (s *Socket) handle(ctx context.Context, p *scproto.Packet) {
	m := s.srv.cfg.Metrics
	switch p.Kind {
	case scproto.KindPong:
		s.checkExpiry()
		return
	case scproto.KindResponse:
		s.mu.Lock()
		ch := s.calls[p.RID]
		s.mu.Unlock()
		if ch != nil {
			select {
			case ch <- reply{data: p.Data, err: p.Error}:
			default:
			}
		}
		return
	case scproto.KindEvent:
	default:
		m.RawFrames.Inc()
		return
	}
	switch p.Event {
	case "#handshake":
		s.reply(s.statusResponse(p.CID, nil))
		return
	case "#authenticate":
		s.authenticate(p)
		return
	case "#removeAuthToken":
		s.setAuth(nil, "", time.Time{})
		return
	}
	s.checkExpiry()
	switch p.Event {
	case "#subscribe":
		s.subscribe(ctx, p)
	case "#unsubscribe":
		s.unsubscribe(p)
	case "#publish":
		s.publish(ctx, p)
	default:
		s.event(ctx, p)
	}
}

// respond answers p from the reader goroutine (see reply); nothing for a transmit.
func (s *Socket) respond(p *scproto.Packet, data any, err error, action string) {
	if fr := responseFrame(p, data, err, action); fr != nil {
		s.reply(fr)
	}
}

func responseFrame(p *scproto.Packet, data any, err error, action string) []byte {
	if !p.IsInvoke() {
		return nil
	}
	if err != nil {
		return scproto.EncodeResponse(p.CID, nil, scproto.WireError(err, action))
	}
	raw, mErr := marshalData(data)
	if mErr != nil {
		return scproto.EncodeResponse(p.CID, nil, scproto.WireError(scproto.NewError("InvalidActionError", "response data could not be encoded: "+mErr.Error()), action))
	}
	return scproto.EncodeResponse(p.CID, raw, nil)
}

func (s *Socket) authenticate(p *scproto.Packet) {
	if !p.IsInvoke() {
		s.srv.cfg.Metrics.HandshakeFailures.WithLabelValues("malformed_authenticate").Inc()
		s.Close(scproto.CloseHandshakeRejected, "")
		return
	}
	if s.srv.auth == nil {
		s.respond(p, nil, scproto.NewError("AuthTokenInvalidError", "invalid signature", "isBadToken", true), "authenticate")
		s.Deauthenticate()
		return
	}
	claims, exp, authErr := s.srv.auth.Verify(p.Data)
	if authErr != nil {
		s.srv.cfg.Metrics.AuthFailures.WithLabelValues(authErr.Name).Inc()
		if authErr.IsBadToken() {
			s.respond(p, nil, authErr, "authenticate")
			s.Deauthenticate()
			return
		}
		s.setAuth(nil, "", time.Time{})
		s.respond(p, map[string]any{"isAuthenticated": false, "authError": authErr}, nil, "authenticate")
		return
	}
	var tok string
	_ = json.Unmarshal(p.Data, &tok)
	s.setAuth(claims, tok, exp)
	s.respond(p, map[string]any{"isAuthenticated": true, "authError": nil}, nil, "authenticate")
}

type subscribeData struct {
	Channel     json.RawMessage `json:"channel"`
	WaitForAuth bool            `json:"waitForAuth"`
	Data        json.RawMessage `json:"data"`
}

func (s *Socket) subscribe(ctx context.Context, p *scproto.Packet) {
	m := s.srv.cfg.Metrics
	var sd subscribeData
	if len(p.Data) == 0 || json.Unmarshal(p.Data, &sd) != nil || len(sd.Channel) == 0 || sd.Channel[0] != '"' {
		m.SubscribeFailures.WithLabelValues("malformed").Inc()
		s.respond(p, nil, scproto.NewError("InvalidActionError", "Subscribe channel name was malformatted"), "subscribe")
		return
	}
	ch, why := scproto.CheckChannel(sd.Channel, s.srv.cfg.MaxChannelLength)
	if why != "" {
		m.SubscribeFailures.WithLabelValues("invalid_channel").Inc()
		s.respond(p, nil, scproto.NewError("InvalidActionError", why), "subscribe")
		return
	}
	s.mu.Lock()
	_, already := s.subs[ch]
	n := len(s.subs)
	s.mu.Unlock()
	if already {
		s.respond(p, nil, nil, "subscribe")
		return
	}
	if n >= s.srv.cfg.MaxSubscriptions {
		m.SubscribeFailures.WithLabelValues("limit").Inc()
		s.respond(p, nil, scproto.NewError("BrokerError", "Failed to subscribe socket to the "+ch+" channel - InvalidActionError: Socket "+s.id+" tried to exceed the channel subscription limit of "+strconv.Itoa(s.srv.cfg.MaxSubscriptions)), "subscribe")
		return
	}
	if len(s.srv.subscribeMW) > 0 {
		s.flushBatch() // middleware may take its time: what is collected goes out first
		req := &SubscribeRequest{Socket: s, Channel: ch, WaitForAuth: sd.WaitForAuth, Data: scproto.NullToNil(sd.Data)}
		for _, mw := range s.srv.subscribeMW {
			if err := mw(ctx, req); err != nil {
				m.SubscribeFailures.WithLabelValues("denied").Inc()
				s.respond(p, nil, err, "subscribe")
				return
			}
		}
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	s.srv.broker.Subscribe(s, ch)
	m.Subscribes.Inc()
	s.respond(p, nil, nil, "subscribe")
}

func (s *Socket) unsubscribe(p *scproto.Packet) {
	var ch string
	if json.Unmarshal(p.Data, &ch) != nil {
		s.respond(p, nil, scproto.NewError("InvalidActionError", "Unsubscribe channel name was malformatted"), "unsubscribe")
		return
	}
	s.mu.Lock()
	_, ok := s.subs[ch]
	delete(s.subs, ch)
	s.mu.Unlock()
	if !ok {
		s.respond(p, nil, scproto.NewError("BrokerError", "Failed to unsubscribe socket from the "+ch+" channel - InvalidActionError: Socket "+s.id+" tried to unsubscribe from a channel which it is not subscribed to"), "unsubscribe")
		return
	}
	s.srv.broker.Unsubscribe(s, ch)
	s.respond(p, nil, nil, "unsubscribe")
}

func (s *Socket) publish(ctx context.Context, p *scproto.Packet) {
	m := s.srv.cfg.Metrics
	var pd scproto.PublishData
	if len(p.Data) == 0 || !pd.Scan(p.Data) || len(pd.Channel) == 0 || pd.Channel[0] != '"' {
		m.PublishFailures.WithLabelValues("malformed").Inc()
		s.respond(p, nil, scproto.NewError("InvalidActionError", "Publish channel name was malformatted"), "publish")
		return
	}
	ch, why := scproto.CheckChannel(pd.Channel, s.srv.cfg.MaxChannelLength)
	if why != "" {
		m.PublishFailures.WithLabelValues("invalid_channel").Inc()
		s.respond(p, nil, scproto.NewError("InvalidActionError", why), "publish")
		return
	}
	if s.pubRate != nil && !s.pubRate.Allow() {
		m.PublishFailures.WithLabelValues("rate_limit").Inc()
		s.respond(p, nil, scproto.NewError("RateLimitError", "Publish rate limit of "+strconv.Itoa(int(s.srv.cfg.Limits.PublishRate))+"/s exceeded"), "publish")
		return
	}
	data := pd.Data
	if len(s.srv.publishMW) > 0 {
		s.flushBatch() // middleware may take its time: what is collected goes out first
		req := &PublishRequest{Socket: s, Channel: ch, Data: data}
		for _, mw := range s.srv.publishMW {
			if err := mw(ctx, req); err != nil {
				m.PublishFailures.WithLabelValues("denied").Inc()
				s.respond(p, nil, err, "publish")
				return
			}
		}
		data = req.Data
	}
	if bb := s.srv.batchBroker; bb != nil {
		bb.PublishIn(&s.batch, ch, data)
	} else {
		s.srv.broker.Publish(ch, data)
	}
	m.Publishes.Inc()
	s.respond(p, nil, nil, "publish")
}

// Invocation is one client invoke being handled.
type Invocation struct {
	Socket *Socket
	Event  string
	Data   json.RawMessage
	after  []func()
	async  bool
	// handled is closed when the handler has returned (Async only): the answer and the
	// AfterReply functions wait for it, so AfterReply may be called after Async.
	handled chan struct{}
	p       *scproto.Packet
}

// AfterReply runs f once the reply has been queued, e.g. to close the socket or kick it
// from a channel after telling the client "ok".
func (inv *Invocation) AfterReply(f func()) { inv.after = append(inv.after, f) }

// Async answers the invoke with f's result, computed on a new goroutine; the handler's own
// return value is then ignored. Use it for anything that waits on the client (Socket.Invoke)
// or on slow I/O, so the connection keeps reading meanwhile.
func (inv *Invocation) Async(f func() (any, error)) {
	if inv.async {
		return // once per invocation
	}
	inv.async = true
	inv.handled = make(chan struct{})
	p := *inv.p
	s := inv.Socket
	go func() {
		defer func() {
			if r := recover(); r != nil {
				s.recoverPanic(r) // the reader notices the closed connection
			}
		}()
		data, err := f()
		<-inv.handled
		if fr := responseFrame(&p, data, err, "invoke"); fr != nil {
			s.enqueue(fr) // not the reader: written by the writer
		}
		for _, g := range inv.after {
			g()
		}
	}()
}

func (s *Socket) event(ctx context.Context, p *scproto.Packet) {
	m := s.srv.cfg.Metrics
	if s.eventRate != nil && !s.eventRate.Allow() {
		m.Events.WithLabelValues("rate_limited").Inc()
		if p.IsInvoke() {
			s.respond(p, nil, scproto.NewError("RateLimitError", "Event rate limit of "+strconv.Itoa(int(s.srv.cfg.Limits.EventRate))+"/s exceeded"), "invoke")
		}
		return
	}
	s.flushBatch() // handlers may take their time: what is collected goes out first
	if !p.IsInvoke() {
		if h := s.srv.transmits[p.Event]; h != nil {
			h(ctx, s, p.Data)
			m.Events.WithLabelValues("transmit").Inc()
		} else {
			m.Events.WithLabelValues("unhandled_transmit").Inc()
		}
		return
	}
	h := s.srv.invokes[p.Event]
	if h == nil {
		h = s.srv.invokeDefault
	}
	if h == nil {
		m.Events.WithLabelValues("unhandled_invoke").Inc()
		s.respond(p, nil, scproto.NewError("UnhandledEventError", "No handler is registered for the "+p.Event+" event"), "invoke")
		return
	}
	m.Events.WithLabelValues("invoke").Inc()
	inv := &Invocation{Socket: s, Event: p.Event, Data: p.Data, p: p}
	defer func() {
		if inv.async {
			close(inv.handled) // also when h panicked after Async: its goroutine must not wait for ever
		}
	}()
	data, err := h(ctx, inv)
	if inv.async {
		return
	}
	s.respond(p, data, err, "invoke")
	for _, f := range inv.after {
		f()
	}
}
