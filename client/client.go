// Package client is a Go client for the SocketCluster protocol (the one the
// npm socketcluster-client v20 speaks, and that sockmesh serves): handshake
// with an optional auth token, ping/pong, subscribe with a handler,
// unsubscribe, publish with or without ack, invoke, transmit, and reconnection
// with jittered backoff across a list of node URLs, re-subscribing every
// channel after each reconnect.
//
// One Client owns one WebSocket connection at a time, a reader goroutine for
// it and a supervisor goroutine that reconnects. Handlers (subscription
// handlers, OnEvent, OnInvoke, RawPublish, OnKickOut, OnSubscribeFail) run on
// the reader goroutine in frame order: they must not block, and must not call
// the methods that wait for a server answer (Subscribe, Invoke, PublishAck,
// Authenticate, WaitConnected) — those would wait for the reader they are
// blocking. Publish, PublishRaw, Transmit and Unsubscribe are fine from a
// handler. OnConnect and OnDisconnect run on the supervisor goroutine and
// delay reconnection while they run; they may call anything but Close.
//
// Differences from socketcluster-client: Publish and Transmit fail with
// ErrNotConnected instead of queueing while disconnected (Invoke, PublishAck
// and Subscribe wait for a connection within their timeout); the client
// reconnects after every close it did not initiate itself, including 1000
// and codes >= 4500 from the server (only a handshake rejected that way
// before the first connection is final); each reconnect goes to the next URL
// of the list.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Options configures a Client. Only URLs is required.
type Options struct {
	// URLs of the nodes, e.g. ws://127.0.0.1:8000/socketcluster/. The first
	// is tried first; every reconnect (and every failed attempt) moves to the
	// next one, round robin.
	URLs []string
	// AuthToken is the initial token sent in #handshake. Zero value: none
	// (authToken null). Replaced by #setAuthToken, dropped by #removeAuthToken.
	AuthToken string
	// MinBackoff and MaxBackoff bound the reconnect delay, which doubles per
	// consecutive failed attempt and is jittered to [d/2, d]. Zero values mean
	// 100ms and 5s. After a close with 4000, 4001 or 1005 the first attempt
	// is immediate, as in socketcluster-client.
	MinBackoff, MaxBackoff time.Duration
	// AckTimeout bounds Invoke, PublishAck, Subscribe and Authenticate, from
	// the call to the answer (time spent waiting for a connection included).
	// Zero value: 10s.
	AckTimeout time.Duration
	// ConnectTimeout bounds the WebSocket dial plus the #handshake answer.
	// Zero value: 20s (socketcluster-client's connectTimeout).
	ConnectTimeout time.Duration
	// WriteTimeout is the deadline of each frame write; a write that misses it
	// drops the connection. Zero value: 10s.
	WriteTimeout time.Duration
	// ReadLimit is the largest frame accepted from the server; a bigger one
	// drops the connection (1009). Zero value: no limit.
	ReadLimit int64

	// OnConnect is called after each successful handshake, after the
	// re-subscriptions were sent. Called on the supervisor goroutine.
	OnConnect func(HandshakeStatus)
	// OnDisconnect is called when an established connection closes, with the
	// close code (1006 for a dropped TCP connection, 4000 for a ping timeout)
	// and reason. Not called for failed connection attempts.
	OnDisconnect func(code int, reason string)
	// OnSubscribeFail is called when the server rejects a re-subscription
	// made after a reconnect (the channel is dropped locally). Rejections of
	// a Subscribe call are returned by that call instead.
	OnSubscribeFail func(channel string, err error)
	// OnKickOut is called when the server kicks the client out of a channel
	// (#kickOut); the channel has already been dropped locally.
	OnKickOut func(channel, message string)
	// RawPublish, when set, sees every #publish delivery before the channel
	// handlers, on the reader goroutine. channel and data alias the read
	// buffer and are valid only during the call (no allocation is made for
	// them). Returning true consumes the delivery: no handler is called.
	RawPublish func(channel, data []byte) bool

	// Recover resubscribes each channel with the position of the last publication received
	// on it, so that a sockmesh node serving the channel as a recovery channel
	// (--recover-channels, docs/recovery.md) replays what was missed while the client was
	// away, before anything newer. Other channels and servers are unaffected.
	Recover bool
	// OnRecovery, with Recover, is told the server's answer to each recovering
	// resubscription (its sockmesh:recovery event, which follows the replay): whether
	// everything missed was replayed, how much, and if not, why.
	OnRecovery func(channel string, recovered bool, missed int, reason string)
	// RecoverHorizon, with Recover: a position forgets an origin (a publishing node's
	// incarnation) it has heard nothing from for this long, counted in the publications'
	// own times, when another origin appears. Every restart of a publishing node is a new
	// origin, so without it a long-lived client's position grows by one per restart and,
	// past 64 KiB, cannot be recovered from a peer. A forgotten origin is judged as one the
	// client never heard from (docs/recovery.md). Zero: an hour; negative: never.
	RecoverHorizon time.Duration

	// Logger receives connection events. Zero value: discard.
	Logger *slog.Logger
	// Dialer is used for every connection. Zero value: a copy of
	// websocket.DefaultDialer.
	Dialer *websocket.Dialer
	// Header is sent with every WebSocket upgrade request (optional).
	Header http.Header
}

// HandshakeStatus is the server's answer to #handshake.
type HandshakeStatus struct {
	ID              string        // socket id, new for every connection
	PingTimeout     time.Duration // longest tolerated gap between server pings
	IsAuthenticated bool
	AuthError       *Error // set when a presented token was rejected
	URL             string // the node URL this connection went to
}

// Client is a SocketCluster client. Its methods are safe for concurrent use.
type Client struct {
	opts   Options
	log    *slog.Logger
	dialer *websocket.Dialer

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // supervisor + readers

	cid atomic.Int64         // call id counter, never reset (as the JS client)
	cur atomic.Pointer[conn] // the connection after its handshake, or nil

	mu         sync.RWMutex
	closed     bool
	connected  chan struct{} // closed while cur != nil; replaced on disconnect
	status     HandshakeStatus
	token      string
	subs       map[string]*subscription
	subSeq     uint64
	events     map[string]func(json.RawMessage)
	invokes    map[string]func(json.RawMessage) (any, error)
	firstUp    chan struct{} // closed after the first successful handshake
	dialFailed chan struct{} // closed when the first handshake is rejected for good
	lastErr    error         // last connection error, for Dial's report
	fatalErr   error         // permanent rejection before the first connect
}

// subscription state; fields guarded by Client.mu.
type subscription struct {
	channel string
	handler func(channel string, data json.RawMessage)
	seq     uint64 // insertion order, for re-subscription order
	acked   bool   // the server acknowledged it on the current connection
	sentOn  *conn  // connection the #subscribe was sent on
	waiters []chan error
	// pos is the position of the last publication received (Options.Recover), sent with
	// the next #subscribe; nil before the first one that carried a position.
	pos *position
}

// position is a sockmesh recovery position: per origin the last sequence received, and the
// origin's time (unix ms) of the last publication. heard (not sent) is, per origin, the time
// of its last publication, by which origins are forgotten (Options.RecoverHorizon).
type position struct {
	Seqs  map[string]uint64 `json:"seqs"`
	Time  int64             `json:"time"`
	heard map[string]int64
}

// defaultRecoverHorizon is Options.RecoverHorizon's zero value: far longer than a node keeps
// publications by default (--recover-age, 5 min) and than any delivery delay between origins.
const defaultRecoverHorizon = time.Hour

func (s *subscription) notify(err error) {
	for _, w := range s.waiters {
		w <- err // buffered 1, each waiter notified once
	}
	s.waiters = nil
}

// Dial creates a client and returns after its first successful handshake.
// If ctx ends first, the client is closed and the error names the last
// connection failure. After Dial returns, the client reconnects in the
// background after every disconnect until Close.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	if len(opts.URLs) == 0 {
		return nil, errors.New("client: no URLs")
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 10 * time.Second
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 20 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	c := &Client{
		opts:       opts,
		log:        opts.Logger,
		dialer:     opts.Dialer,
		connected:  make(chan struct{}),
		token:      opts.AuthToken,
		subs:       make(map[string]*subscription),
		events:     make(map[string]func(json.RawMessage)),
		invokes:    make(map[string]func(json.RawMessage) (any, error)),
		firstUp:    make(chan struct{}),
		dialFailed: make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.dialer == nil {
		d := *websocket.DefaultDialer
		c.dialer = &d
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.supervise()

	select {
	case <-c.firstUp:
		return c, nil
	case <-c.dialFailed:
	case <-ctx.Done():
		if c.everConnected() {
			return c, nil
		}
	}
	c.mu.RLock()
	last, fatal := c.lastErr, c.fatalErr
	c.mu.RUnlock()
	c.Close()
	if fatal != nil {
		return nil, fatal
	}
	if last != nil {
		return nil, errors.Join(ctx.Err(), last)
	}
	return nil, ctx.Err()
}

// Close disconnects with code 1000, stops reconnecting, fails pending calls
// and returns when every goroutine of the client has exited. Idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	return nil
}

// AuthToken returns the stored auth token ("" when none).
func (c *Client) AuthToken() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.token
}

// ID returns the socket id of the current connection ("" when disconnected).
func (c *Client) ID() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.cur.Load() == nil {
		return ""
	}
	return c.status.ID
}

// Status returns the handshake status of the current (or last) connection.
func (c *Client) Status() HandshakeStatus {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.status
}

// Connected reports whether a connection is established (handshake done).
func (c *Client) Connected() bool { return c.cur.Load() != nil }

// WaitConnected waits until a connection is established, ctx ends or the
// client is closed.
func (c *Client) WaitConnected(ctx context.Context) error {
	_, err := c.waitConn(ctx)
	return err
}

// waitConn returns the established connection, waiting for one if needed.
func (c *Client) waitConn(ctx context.Context) (*conn, error) {
	for {
		c.mu.RLock()
		closed, ch := c.closed, c.connected
		cn := c.cur.Load()
		c.mu.RUnlock()
		if closed {
			return nil, ErrClosed
		}
		if cn != nil {
			return cn, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// ackContext bounds ctx by AckTimeout; on expiry the cause is a TimeoutError.
func (c *Client) ackContext(ctx context.Context, event string) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, c.opts.AckTimeout, timeoutError(event))
}

// OnEvent registers h for server transmits (and invokes, whose answer is
// then left to OnInvoke) of event; nil removes it. Reserved events
// (#setAuthToken, #removeAuthToken, #kickOut) are handled internally first
// and then also passed to h. #publish deliveries go to subscription
// handlers, not here.
func (c *Client) OnEvent(event string, h func(data json.RawMessage)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h == nil {
		delete(c.events, event)
	} else {
		c.events[event] = h
	}
}

// OnInvoke registers h to answer server invokes of event: its result is sent
// as data, or its error as the error object (an *Error keeps its name and
// fields). An invoke of an event without a handler gets no answer, as with
// socketcluster-client. nil removes it.
func (c *Client) OnInvoke(event string, h func(data json.RawMessage) (any, error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h == nil {
		delete(c.invokes, event)
	} else {
		c.invokes[event] = h
	}
}

// Transmit sends a fire-and-forget event. nil data is omitted from the packet.
// Returns ErrNotConnected while disconnected.
func (c *Client) Transmit(event string, data any) error {
	cn := c.cur.Load()
	if cn == nil {
		return c.notConnected()
	}
	bp := getBuf()
	defer putBuf(bp)
	b, err := appendEvent((*bp)[:0], event, data, 0)
	*bp = b
	if err != nil {
		return err
	}
	return cn.send(event, b)
}

// Publish sends a publication without ack ({"event":"#publish"} transmit).
// data that is a json.RawMessage is sent as is; anything else is
// JSON-encoded. Publications of one client are written in call order.
// Returns ErrNotConnected while disconnected.
func (c *Client) Publish(channel string, data any) error {
	cn := c.cur.Load()
	if cn == nil {
		return c.notConnected()
	}
	bp := getBuf()
	defer putBuf(bp)
	b, err := appendPublish((*bp)[:0], channel, data, 0)
	*bp = b
	if err != nil {
		return err
	}
	return cn.send("#publish", b)
}

// PublishRaw is Publish for data that is already JSON, without the interface
// conversion (and its allocation) of Publish; data is not validated. For
// high-rate publishers such as the bench.
func (c *Client) PublishRaw(channel string, data json.RawMessage) error {
	cn := c.cur.Load()
	if cn == nil {
		return c.notConnected()
	}
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	bp := getBuf()
	defer putBuf(bp)
	b := append((*bp)[:0], `{"event":"#publish","data":{"channel":`...)
	b = appendString(b, channel)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	b = append(b, "}}"...)
	*bp = b
	return cn.send("#publish", b)
}

func (c *Client) notConnected() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	return ErrNotConnected
}

// PublishAck publishes with an ack (#publish invoke) and returns the
// server's error, if any (an *Error), or a TimeoutError / BadConnectionError.
// It waits for a connection if there is none, within ctx and AckTimeout.
func (c *Client) PublishAck(ctx context.Context, channel string, data any) error {
	_, err := c.call(ctx, "#publish", func(dst []byte, cid int64) ([]byte, error) {
		return appendPublish(dst, channel, data, cid)
	})
	return err
}

// Invoke calls a server procedure and returns its answer's data (nil when
// the answer has none), or its error as an *Error. It waits for a connection
// if there is none, within ctx and AckTimeout.
func (c *Client) Invoke(ctx context.Context, event string, data any) (json.RawMessage, error) {
	return c.call(ctx, event, func(dst []byte, cid int64) ([]byte, error) {
		return appendEvent(dst, event, data, cid)
	})
}

// Authenticate sends #authenticate with token. On success the token is
// stored (and used by later handshakes). A rejected token gives an *Error:
// the server's error response, or its authError when it answered
// isAuthenticated false.
func (c *Client) Authenticate(ctx context.Context, token string) error {
	res, err := c.Invoke(ctx, "#authenticate", token)
	if err != nil {
		return err
	}
	var st struct {
		IsAuthenticated bool   `json:"isAuthenticated"`
		AuthError       *Error `json:"authError"`
	}
	if len(res) > 0 {
		if err := json.Unmarshal(res, &st); err != nil {
			return err
		}
	}
	if !st.IsAuthenticated {
		if st.AuthError != nil {
			return st.AuthError
		}
		return &Error{Name: "AuthError", Message: "Authentication failed"}
	}
	c.mu.Lock()
	c.token = token
	c.mu.Unlock()
	return nil
}

// Deauthenticate drops the stored token and tells the server
// (#removeAuthToken transmit, when connected).
func (c *Client) Deauthenticate() error {
	c.mu.Lock()
	c.token = ""
	c.mu.Unlock()
	if err := c.Transmit("#removeAuthToken", nil); err != nil && !errors.Is(err, ErrNotConnected) {
		return err
	}
	return nil
}

// call sends an invoke built by build and waits for its answer.
func (c *Client) call(ctx context.Context, event string, build func(dst []byte, cid int64) ([]byte, error)) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	ctx, cancel := c.ackContext(ctx, event)
	defer cancel()
	cn, err := c.waitConn(ctx)
	if err != nil {
		return nil, err
	}
	cid := c.cid.Add(1)
	ch := make(chan result, 1)
	if !cn.addCall(cid, &pendingCall{event: event, ch: ch}) {
		code, reason := cn.closeInfo()
		return nil, badConnection(event, code, reason)
	}
	bp := getBuf()
	b, err := build((*bp)[:0], cid)
	*bp = b
	if err == nil {
		err = cn.send(event, b)
	}
	putBuf(bp)
	if err != nil {
		cn.removeCall(cid)
		return nil, err
	}
	select {
	case r := <-ch:
		return r.data, r.err
	case <-ctx.Done():
		cn.removeCall(cid)
		select { // an answer that raced the deadline wins
		case r := <-ch:
			return r.data, r.err
		default:
		}
		return nil, context.Cause(ctx)
	}
}

// Subscribe subscribes to channel and waits for the server's ack, within ctx
// and AckTimeout. h receives every publication of the channel (on the reader
// goroutine; see the package doc). A server rejection is returned as an
// *Error with the server's name and message, and the channel is dropped; on
// a timeout or ctx end the channel is dropped too. Once subscribed, the
// channel is re-subscribed after every reconnect, keeping h, until
// Unsubscribe or a kickOut. Subscribing to a channel already subscribed
// replaces its handler.
func (c *Client) Subscribe(ctx context.Context, channel string, h func(channel string, data json.RawMessage)) error {
	if h == nil {
		return errors.New("client: nil handler")
	}
	ctx, cancel := c.ackContext(ctx, "#subscribe")
	defer cancel()
	w := make(chan error, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	sub := c.subs[channel]
	if sub != nil {
		sub.handler = h
		if sub.acked {
			c.mu.Unlock()
			return nil
		}
		sub.waiters = append(sub.waiters, w)
		c.mu.Unlock()
	} else {
		c.subSeq++
		sub = &subscription{channel: channel, handler: h, seq: c.subSeq, waiters: []chan error{w}}
		c.subs[channel] = sub
		cn := c.cur.Load()
		if cn != nil {
			sub.sentOn = cn
		}
		c.mu.Unlock()
		if cn != nil {
			// Sent outside the lock; if cn dies meanwhile the supervisor
			// re-subscribes on the next connection.
			c.sendSubscribe(cn, sub)
		}
	}
	select {
	case err := <-w:
		return err
	case <-ctx.Done():
	}
	// Give up: drop the channel unless an answer raced the deadline.
	c.mu.Lock()
	select {
	case err := <-w:
		c.mu.Unlock()
		return err
	default:
	}
	err := context.Cause(ctx)
	var sentOn *conn
	if c.subs[channel] == sub {
		delete(c.subs, channel)
		sentOn = sub.sentOn
		sub.notify(err)
	}
	c.mu.Unlock()
	if sentOn != nil && sentOn == c.cur.Load() {
		_ = c.sendUnsubscribe(sentOn, channel)
	}
	return err
}

// Unsubscribe drops channel locally and, when connected, sends #unsubscribe.
// A channel that is not subscribed is not an error.
func (c *Client) Unsubscribe(channel string) error {
	c.mu.Lock()
	sub := c.subs[channel]
	if sub == nil {
		c.mu.Unlock()
		return nil
	}
	delete(c.subs, channel)
	sub.notify(ErrUnsubscribed)
	sentOn := sub.sentOn
	c.mu.Unlock()
	if sentOn != nil && sentOn == c.cur.Load() {
		// A failed write means the connection is dropping, and the server
		// forgets its subscriptions with it: nothing left to undo.
		_ = c.sendUnsubscribe(sentOn, channel)
	}
	return nil
}

// Channels returns the subscribed (or subscribing) channels, in subscription order.
func (c *Client) Channels() []string {
	c.mu.RLock()
	subs := c.sortedSubsLocked()
	c.mu.RUnlock()
	out := make([]string, len(subs))
	for i, s := range subs {
		out[i] = s.channel
	}
	return out
}

// sortedSubsLocked returns the subscriptions in insertion order. c.mu held.
func (c *Client) sortedSubsLocked() []*subscription {
	out := make([]*subscription, 0, len(c.subs))
	for _, s := range c.subs {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

func (c *Client) sendUnsubscribe(cn *conn, channel string) error {
	bp := getBuf()
	defer putBuf(bp)
	b, err := appendEvent((*bp)[:0], "#unsubscribe", channel, 0)
	*bp = b
	if err != nil {
		return err
	}
	return cn.write(b)
}

// sendSubscribe sends #subscribe for sub on cn; the answer is handled on the
// reader goroutine by subscribeResult.
func (c *Client) sendSubscribe(cn *conn, sub *subscription) {
	cid := c.cid.Add(1)
	var recover []byte
	if c.opts.Recover {
		c.mu.Lock()
		if sub.pos != nil {
			recover, _ = json.Marshal(map[string]*position{"recover": sub.pos})
		}
		c.mu.Unlock()
	}
	if !cn.addCall(cid, &pendingCall{event: "#subscribe", fn: func(data json.RawMessage, err error) {
		c.subscribeResult(cn, sub, err)
	}}) {
		return // cn is gone; the next connection re-subscribes
	}
	bp := getBuf()
	*bp = appendSubscribeData((*bp)[:0], sub.channel, recover, cid)
	err := cn.write(*bp)
	putBuf(bp)
	if err != nil {
		cn.removeCall(cid) // the connection drops; re-subscribed later
	}
}

func (c *Client) subscribeResult(cn *conn, sub *subscription, err error) {
	c.mu.Lock()
	if c.subs[sub.channel] != sub || sub.sentOn != cn {
		c.mu.Unlock()
		return // unsubscribed, replaced, or answer of an old connection
	}
	if err == nil {
		sub.acked = true
		sub.notify(nil)
		c.mu.Unlock()
		return
	}
	if IsBadConnection(err) {
		c.mu.Unlock() // stays pending; re-subscribed on the next connection
		return
	}
	delete(c.subs, sub.channel)
	hadWaiters := len(sub.waiters) > 0
	sub.notify(err)
	c.mu.Unlock()
	c.log.Warn("subscription rejected", "channel", sub.channel, "err", err)
	if !hadWaiters && c.opts.OnSubscribeFail != nil {
		c.opts.OnSubscribeFail(sub.channel, err)
	}
}

// recoveryEvent carries a sockmesh node's answer to a recovering subscription, after the
// replay (the acknowledgement may come before it: the replay can wait its turn).
const recoveryEvent = "sockmesh:recovery"

// recoveryResult passes the server's answer to a recovering subscription to OnRecovery.
func (c *Client) recoveryResult(data json.RawMessage) {
	var ans struct {
		Channel   string `json:"channel"`
		Recovered *bool  `json:"recovered"`
		Missed    int    `json:"missed"`
		Reason    string `json:"reason"`
	}
	if json.Unmarshal(data, &ans) != nil || ans.Recovered == nil {
		return
	}
	if c.opts.OnRecovery != nil {
		c.opts.OnRecovery(ans.Channel, *ans.Recovered, ans.Missed, ans.Reason)
	}
}

// notePosition records the position of a publication received on channel (Options.Recover).
func (c *Client) notePosition(channel string, pos []json.RawMessage) {
	var origin string
	var seq uint64
	var at int64
	if len(pos) != 3 || json.Unmarshal(pos[0], &origin) != nil || json.Unmarshal(pos[1], &seq) != nil || json.Unmarshal(pos[2], &at) != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	sub := c.subs[channel]
	if sub == nil {
		return
	}
	if sub.pos == nil {
		sub.pos = &position{Seqs: map[string]uint64{}, heard: map[string]int64{}}
	}
	p := sub.pos
	_, known := p.Seqs[origin]
	if seq > p.Seqs[origin] {
		p.Seqs[origin] = seq
	}
	p.heard[origin] = max(p.heard[origin], at)
	p.Time = max(p.Time, at)
	if !known {
		p.forget(c.opts.RecoverHorizon)
	}
}

// forget drops the origins heard from last more than horizon before the position's time. It
// runs when an origin is added, the only time a position grows, so it costs nothing per
// publication. The origin of the last publication is never dropped: its time is the
// position's, and a node finds the client's place in its history by it.
func (p *position) forget(horizon time.Duration) {
	if horizon == 0 {
		horizon = defaultRecoverHorizon
	}
	if horizon < 0 {
		return
	}
	for o, at := range p.heard {
		if at < p.Time-horizon.Milliseconds() {
			delete(p.heard, o)
			delete(p.Seqs, o)
		}
	}
}
