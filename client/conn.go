package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// conn is one WebSocket connection and its protocol state. Reads happen on
// one goroutine at a time (the supervisor during the handshake, then the
// reader); writes are serialised by wmu.
type conn struct {
	c   *Client
	ws  *websocket.Conn
	url string

	wmu  sync.Mutex // serialises data frame writes
	werr error      // first write error; guarded by wmu

	pmu       sync.Mutex // guards the fields below
	pending   map[int64]*pendingCall
	dead      bool // no new calls; set when the connection ends
	code      int  // close code, once dead
	reason    string
	localCode int // close code we sent ourselves (4000 ping timeout, 1000 Close)

	pingTimeout time.Duration // 0: no ping check; read by the reader only
	rbuf        []byte        // reused read buffer; reader only
	done        chan struct{} // closed when the reader has exited
}

// pendingCall is an invoke waiting for its response. Either ch receives the
// result (public calls) or fn runs on the reading goroutine (internal calls).
type pendingCall struct {
	event string
	ch    chan result
	fn    func(data json.RawMessage, err error)
}

type result struct {
	data json.RawMessage
	err  error
}

func newConn(c *Client, ws *websocket.Conn, url string) *conn {
	return &conn{c: c, ws: ws, url: url, pending: make(map[int64]*pendingCall), done: make(chan struct{})}
}

// send is write for a packet of event: a failure is reported as a
// BadConnectionError (code 1006, the reason naming the write error).
func (cn *conn) send(event string, b []byte) error {
	if err := cn.write(b); err != nil {
		return badConnection(event, 1006, err.Error())
	}
	return nil
}

// write sends one text frame. A failed write closes the socket so that the
// reader ends and the client reconnects.
func (cn *conn) write(b []byte) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	if cn.werr != nil {
		return cn.werr
	}
	_ = cn.ws.SetWriteDeadline(time.Now().Add(cn.c.opts.WriteTimeout))
	if err := cn.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		cn.werr = err
		cn.ws.Close()
		return err
	}
	return nil
}

// writeClose sends a close frame (best effort, bounded by a short deadline).
func (cn *conn) writeClose(code int, reason string) {
	cn.pmu.Lock()
	if cn.localCode == 0 {
		cn.localCode = code
	}
	cn.pmu.Unlock()
	_ = cn.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
}

func (cn *conn) addCall(cid int64, pc *pendingCall) bool {
	cn.pmu.Lock()
	defer cn.pmu.Unlock()
	if cn.dead {
		return false
	}
	cn.pending[cid] = pc
	return true
}

func (cn *conn) removeCall(cid int64) {
	cn.pmu.Lock()
	delete(cn.pending, cid)
	cn.pmu.Unlock()
}

func (cn *conn) takeCall(cid int64) *pendingCall {
	cn.pmu.Lock()
	defer cn.pmu.Unlock()
	pc := cn.pending[cid]
	if pc != nil {
		delete(cn.pending, cid)
	}
	return pc
}

func (cn *conn) closeInfo() (int, string) {
	cn.pmu.Lock()
	defer cn.pmu.Unlock()
	return cn.code, cn.reason
}

// finish marks the connection dead with its close code and fails every
// pending call with a BadConnectionError. Internal callbacks run here, on the
// goroutine that was reading.
func (cn *conn) finish(readErr error) {
	code, reason := 1006, ""
	var ce *websocket.CloseError
	switch {
	case errors.As(readErr, &ce):
		code, reason = ce.Code, ce.Text
		if code == websocket.CloseNoStatusReceived {
			code = 1005
		}
	case isTimeout(readErr):
		code = 4000
	case errors.Is(readErr, websocket.ErrReadLimit):
		code = 1009
	}
	cn.pmu.Lock()
	if cn.localCode != 0 && (code == 1006 || code == cn.localCode) {
		code = cn.localCode
	}
	if reason == "" {
		reason = closeText(code)
	}
	cn.dead, cn.code, cn.reason = true, code, reason
	pending := cn.pending
	cn.pending = nil
	cn.pmu.Unlock()
	cn.ws.Close()
	for _, pc := range pending {
		cn.deliver(pc, nil, badConnection(pc.event, code, reason))
	}
}

func (cn *conn) deliver(pc *pendingCall, data json.RawMessage, err error) {
	if pc.fn != nil {
		pc.fn(data, err)
		return
	}
	pc.ch <- result{data, err}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readFrame reads the next message into the reused buffer. The returned
// slice is valid until the next call.
func (cn *conn) readFrame() ([]byte, error) {
	_, r, err := cn.ws.NextReader()
	if err != nil {
		return nil, err
	}
	if cap(cn.rbuf) > 1<<20 {
		cn.rbuf = nil // do not hold on to one huge frame's buffer
	}
	b := cn.rbuf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	cn.rbuf = b
	return b, nil
}

// readLoop is the reader goroutine of an established connection.
func (cn *conn) readLoop() {
	defer close(cn.done)
	for {
		frame, err := cn.readFrame()
		if err != nil {
			if isTimeout(err) && cn.pingTimeout > 0 {
				cn.c.log.Warn("server ping timed out", "url", cn.url, "pingTimeout", cn.pingTimeout)
				cn.writeClose(4000, "")
			}
			cn.finish(err)
			return
		}
		cn.handleFrame(frame)
	}
}

// handleFrame dispatches one frame: ping, packet or batch.
func (cn *conn) handleFrame(frame []byte) {
	if len(frame) == 0 {
		// '' ping (protocol v2): answer '' and restart the ping timer.
		if cn.pingTimeout > 0 {
			_ = cn.ws.SetReadDeadline(time.Now().Add(cn.pingTimeout))
		}
		_ = cn.write(frame[:0])
		return
	}
	if ch, data, ok := parsePublishFast(frame); ok {
		cn.c.dispatchPublish(ch, data, false)
		return
	}
	switch firstByte(frame) {
	case '{':
		var p packet
		if err := json.Unmarshal(frame, &p); err != nil {
			cn.c.log.Debug("raw message from server", "frame", string(frame))
			return
		}
		cn.handlePacket(&p)
	case '[':
		var batch []json.RawMessage
		if err := json.Unmarshal(frame, &batch); err != nil {
			cn.c.log.Debug("raw message from server", "frame", string(frame))
			return
		}
		for _, item := range batch {
			if ch, data, ok := parsePublishFast(item); ok {
				cn.c.dispatchPublish(ch, data, true) // item is a copy already
				continue
			}
			var p packet
			if json.Unmarshal(item, &p) == nil {
				cn.handlePacket(&p)
			}
		}
	default:
		cn.c.log.Debug("raw message from server", "frame", string(frame))
	}
}

// handlePacket dispatches one decoded packet (event or response).
func (cn *conn) handlePacket(p *packet) {
	if len(p.Event) > 0 && p.Event[0] == '"' {
		var event string
		if json.Unmarshal(p.Event, &event) != nil {
			return
		}
		var cid []byte
		if isJSONNumber(p.Cid) {
			cid = p.Cid
		}
		cn.c.handleEvent(cn, event, p.Data, cid)
		return
	}
	if !isJSONNumber(p.Rid) {
		cn.c.log.Debug("raw packet from server (no event, no numeric rid)")
		return
	}
	rid, err := strconv.ParseInt(string(p.Rid), 10, 64)
	if err != nil {
		return // not one of our call ids
	}
	pc := cn.takeCall(rid)
	if pc == nil {
		return // unknown or timed-out call
	}
	if !isNull(p.Error) {
		e := new(Error)
		_ = json.Unmarshal(p.Error, e)
		cn.deliver(pc, nil, e)
		return
	}
	var data json.RawMessage
	if !isNull(p.Data) {
		data = p.Data
	}
	cn.deliver(pc, data, nil)
}

// reply answers a server invoke.
func (cn *conn) reply(cid []byte, data any, rerr error) {
	bp := getBuf()
	defer putBuf(bp)
	b, err := appendResponse((*bp)[:0], cid, data, rerr)
	*bp = b
	if err != nil {
		b, _ = appendResponse((*bp)[:0], cid, nil, &Error{Name: "Error", Message: err.Error()})
		*bp = b
	}
	_ = cn.write(b)
}

// handleEvent handles a server transmit (cid nil) or invoke.
func (c *Client) handleEvent(cn *conn, event string, data json.RawMessage, cid []byte) {
	switch event {
	case "#publish":
		var pub struct {
			Channel *string           `json:"channel"`
			Data    json.RawMessage   `json:"data"`
			Pos     []json.RawMessage `json:"pos"` // sockmesh recovery channels
		}
		if json.Unmarshal(data, &pub) != nil || pub.Channel == nil {
			return
		}
		if pub.Pos != nil && c.opts.Recover {
			c.notePosition(*pub.Channel, pub.Pos)
		}
		d := pub.Data
		if len(d) == 0 {
			d = json.RawMessage("null")
		}
		c.dispatchPublish([]byte(*pub.Channel), d, true)
		return
	case "#setAuthToken":
		var st struct {
			Token *string `json:"token"`
		}
		if isNull(data) || json.Unmarshal(data, &st) != nil || st.Token == nil {
			if cid != nil {
				cn.reply(cid, nil, &Error{Name: "InvalidMessageError", Message: "No token data provided by #setAuthToken event"})
			}
			return
		}
		c.mu.Lock()
		c.token = *st.Token
		c.status.IsAuthenticated = true
		c.mu.Unlock()
		if cid != nil {
			cn.reply(cid, nil, nil)
		}
	case "#removeAuthToken":
		c.mu.Lock()
		c.token = ""
		c.status.IsAuthenticated = false
		c.mu.Unlock()
		if cid != nil {
			cn.reply(cid, nil, nil)
		}
	case "#kickOut":
		var k struct {
			Channel string `json:"channel"`
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &k) != nil {
			return
		}
		c.mu.Lock()
		sub := c.subs[k.Channel]
		if sub != nil {
			delete(c.subs, k.Channel)
			sub.notify(ErrUnsubscribed)
		}
		c.mu.Unlock()
		if sub != nil && c.opts.OnKickOut != nil {
			c.opts.OnKickOut(k.Channel, k.Message)
		}
	case recoveryEvent:
		if c.opts.Recover {
			c.recoveryResult(data)
		}
	}
	c.mu.RLock()
	h := c.events[event]
	ih := c.invokes[event]
	c.mu.RUnlock()
	if h != nil {
		h(data)
	}
	if cid != nil && ih != nil {
		res, err := ih(data)
		cn.reply(cid, res, err)
	}
}

// dispatchPublish routes one delivery: RawPublish first, then the channel's
// handler. owned says whether data may be retained (otherwise it aliases the
// read buffer and is copied for the handler).
func (c *Client) dispatchPublish(channel, data []byte, owned bool) {
	if rp := c.opts.RawPublish; rp != nil && rp(channel, data) {
		return
	}
	c.mu.RLock()
	sub := c.subs[string(channel)]
	var h func(string, json.RawMessage)
	var name string
	if sub != nil {
		h, name = sub.handler, sub.channel
	}
	c.mu.RUnlock()
	if h == nil {
		return // not (or no longer) subscribed
	}
	if !owned {
		data = bytes.Clone(data)
	}
	h(name, json.RawMessage(data))
}
