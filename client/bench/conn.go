package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sockmesh/sockmesh/wsframe"
)

// conn is a lean SocketCluster connection for load generation. It does what
// a load generator needs and nothing more: no reconnect (a reconnect would
// hide loss), no handlers, no JSON decoding of deliveries. gorilla/websocket
// dials; after that, frames from the server are parsed off the connection by
// readLoop (wsframe.Parse), and frames to the server are built by
// hand (masked with a zero key, which the RFC allows syntactically and every
// server accepts) so that a publisher writes a whole tick of publications
// with one system call.
//
// Frames the reader sees: ” pings (answered), responses to setup calls
// (handshake, subscribe: decoded with encoding/json, rare), acks of
// publications (found by scanning for "rid":), deliveries (found by scanning
// for the payload marker), anything else (ignored).
type conn struct {
	r   *runner
	idx int // connection index in the run
	ws  *websocket.Conn
	nc  net.Conn

	wmu  sync.Mutex
	werr error

	rsize int // initial read buffer

	cmu   sync.Mutex
	calls map[int64]chan error
	cid   int64 // setup call ids, 1..setupCids-1

	// Subscriber state, reader goroutine only.
	sub     bool
	lastSeq []uint32 // per publisher, for the single channel subscribed

	// Publisher state.
	pub *pubAcks

	done chan struct{}
	rerr error // why the reader ended
}

// setupCids: call ids below are setup calls; publication cids start here.
const setupCids = 1 << 20

var errClosedConn = errors.New("connection closed")

// pubAcks tracks acknowledged publications of one connection.
type pubAcks struct {
	sent    [ackWindow]atomic.Int64 // send time by cid & (ackWindow-1)
	nextCid int64                   // pacer goroutine only
	acked   atomic.Int64
	failed  atomic.Int64
	issued  atomic.Int64
}

const ackWindow = 1 << 14

func (p *pubAcks) inFlight() int64 { return p.issued.Load() - p.acked.Load() - p.failed.Load() }

// noBufferPool makes gorilla take a write buffer only when it writes a frame
// itself, which this package never does after the upgrade.
type noBufferPool struct{}

func (noBufferPool) Get() any  { return nil }
func (noBufferPool) Put(x any) {}

// dialer returns a websocket dialer; with srcIP set, connections are bound to
// that local address (IP_BIND_ADDRESS_NO_PORT lets the kernel pick the port at
// connect time, per destination, so one source address serves ~28k
// connections per server port).
func newDialer(srcIP net.IP, readBuf int, timeout time.Duration) *websocket.Dialer {
	// No TCP keepalive: it costs setsockopt calls per connection and a load run is short.
	nd := &net.Dialer{Timeout: timeout, KeepAlive: -1}
	if srcIP != nil {
		nd.LocalAddr = &net.TCPAddr{IP: srcIP}
		nd.Control = func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) { serr = bindAddressNoPort(fd) })
			if err != nil {
				return err
			}
			return serr
		}
	}
	return &websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: timeout,
		ReadBufferSize:   readBuf,
		WriteBufferSize:  256,
		WriteBufferPool:  noBufferPool{},
	}
}

// dialConn opens the WebSocket, starts the reader and completes the
// SocketCluster handshake.
// prep, when set, configures the connection before its reader starts.
func dialConn(ctx context.Context, r *runner, idx int, d *websocket.Dialer, url string, prep func(c *conn)) (*conn, error) {
	ws, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	c := &conn{r: r, idx: idx, ws: ws, nc: ws.UnderlyingConn(), rsize: d.ReadBufferSize, calls: make(map[int64]chan error), done: make(chan struct{})}
	if prep != nil {
		prep(c)
	}
	go c.readLoop()
	if err := c.call(ctx, r.wire.handshake); err != nil {
		c.close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	return c, nil
}

// subscribe sends #subscribe for every channel and waits for all the acks.
func (c *conn) subscribe(ctx context.Context, channels ...string) error {
	chs := make([]chan error, 0, len(channels))
	for _, ch := range channels {
		w, err := c.start(func(b []byte, cid int64) []byte { return c.r.wire.subscribe(b, ch, cid) })
		if err != nil {
			return err
		}
		chs = append(chs, w)
	}
	for i, w := range chs {
		select {
		case err := <-w:
			if err != nil {
				return fmt.Errorf("subscribe %s: %w", channels[i], err)
			}
		case <-ctx.Done():
			return fmt.Errorf("subscribe %s: %w", channels[i], ctx.Err())
		case <-c.done:
			return fmt.Errorf("subscribe %s: %w", channels[i], c.readErr())
		}
	}
	return nil
}

func (c *conn) readErr() error {
	<-c.done
	if c.rerr != nil {
		return c.rerr
	}
	return errClosedConn
}

// start sends a setup call and returns where its answer will arrive.
func (c *conn) start(build func(b []byte, cid int64) []byte) (chan error, error) {
	w := make(chan error, 1)
	c.cmu.Lock()
	if c.calls == nil {
		c.cmu.Unlock()
		return nil, errClosedConn
	}
	c.cid++
	cid := c.cid
	c.calls[cid] = w
	c.cmu.Unlock()
	var tmp [256]byte
	if err := c.writeText(build(tmp[:0], cid)); err != nil {
		return nil, err
	}
	return w, nil
}

func (c *conn) call(ctx context.Context, build func(b []byte, cid int64) []byte) error {
	w, err := c.start(build)
	if err != nil {
		return err
	}
	select {
	case err := <-w:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.readErr()
	}
}

// appendFrame appends a masked (zero key) final text frame holding p.
func appendFrame(dst, p []byte) []byte { return wsframe.AppendClientFrame(dst, wsframe.Text, p) }

// writeRaw writes already framed bytes.
func (c *conn) writeRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		c.werr = err
		c.nc.Close()
		return err
	}
	return nil
}

// writeText writes one text frame (setup calls; not the hot path).
func (c *conn) writeText(p []byte) error {
	return c.writeRaw(appendFrame(make([]byte, 0, len(p)+wsframe.MaxHeader), p))
}

func (c *conn) writeControl(op wsframe.Opcode, p []byte) error {
	var tmp [wsframe.MaxHeader + wsframe.MaxControlPayload]byte
	return c.writeRaw(wsframe.AppendClientFrame(tmp[:0], op, p))
}

// close sends a 1000 close frame and closes the socket; the reader ends.
func (c *conn) close() {
	_ = c.writeControl(wsframe.Close, wsframe.ClosePayload(1000, ""))
	c.nc.Close()
	<-c.done
}

var (
	pongV2 = appendFrame(nil, nil)
	pongV1 = appendFrame(nil, []byte("#2"))
	errKey = []byte(`"error"`)
)

// maxMessage bounds one message from the server (a frame, or fragments put together).
const maxMessage = 64 << 20

// readLoop reads the server's frames off the connection itself (wsframe.Parse over one
// buffer, many frames per read system call) rather than through gorilla/websocket's
// per-frame reader: with one packet per frame, a subscriber of a 2M deliveries/s fan-out
// reads 2M frames/s and gorilla's per-frame cost made the tool, not the server, the limit.
// The dial went through gorilla, which has read the 101 response and nothing after it: a
// SocketCluster server sends nothing before the client's #handshake, written after this
// loop starts.
func (c *conn) readLoop() {
	defer func() {
		c.cmu.Lock()
		calls := c.calls
		c.calls = nil
		c.cmu.Unlock()
		for _, w := range calls {
			w <- errClosedConn
		}
		close(c.done)
	}()
	buf := make([]byte, 0, max(c.rsize, 512))
	var msg []byte // a fragmented message being put together
	fragmented := false
	for {
		used := 0
		for {
			f, n, err := wsframe.Parse(buf[used:], maxMessage)
			if err != nil {
				c.rerr = err
				return
			}
			if n == 0 {
				break
			}
			used += n
			switch f.Op {
			case wsframe.Text, wsframe.Binary:
				if fragmented {
					c.rerr = errors.New("bench: a data frame inside a fragmented message")
					return
				}
				if f.Fin {
					c.handle(f.Payload)
					continue
				}
				msg, fragmented = append(msg[:0], f.Payload...), true
			case wsframe.Continuation:
				if !fragmented || len(msg)+len(f.Payload) > maxMessage {
					c.rerr = errors.New("bench: bad continuation frame")
					return
				}
				msg = append(msg, f.Payload...)
				if f.Fin {
					fragmented = false
					c.handle(msg)
				}
			case wsframe.Ping:
				_ = c.writeControl(wsframe.Pong, f.Payload)
			case wsframe.Close:
				code := websocket.CloseNoStatusReceived
				if len(f.Payload) >= 2 {
					code = int(binary.BigEndian.Uint16(f.Payload))
				}
				_ = c.writeControl(wsframe.Close, f.Payload[:min(2, len(f.Payload))])
				c.rerr = &websocket.CloseError{Code: code, Text: string(f.Payload[min(2, len(f.Payload)):])}
				return
			}
		}
		// Keep the unparsed start of a frame, then read more behind it.
		rest := copy(buf, buf[used:])
		buf = buf[:rest]
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, len(buf))...)[:rest]
		} else if rest == 0 && cap(buf) > 1<<20 {
			buf = make([]byte, 0, max(c.rsize, 512)) // do not keep one huge frame's buffer
		}
		n, err := c.nc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			c.rerr = err
			return
		}
	}
}

func (c *conn) handle(frame []byte) {
	w := c.r.wire
	if w.isPing(frame) {
		_ = c.writeRaw(w.pong(frame))
		if w == socketCluster {
			return // a SocketCluster ping is a frame of its own
		}
	}
	if c.sub {
		c.r.deliveries(c, frame)
	}
	// A subscriber that is not publishing and has no setup call waiting expects no
	// responses: its frames (deliveries) are not searched for a reply id a second time.
	if (c.pub != nil || c.callsWaiting()) && bytes.Contains(frame, w.replyKey) {
		c.handleAcks(frame)
	}
}

// callsWaiting: a setup call has been sent and not answered.
func (c *conn) callsWaiting() bool {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	return len(c.calls) > 0
}

// handleAcks handles responses. Responses without errors (publication acks and
// setup calls alike) take the fast path (scan); anything else decodes the frame.
func (c *conn) handleAcks(frame []byte) {
	replyKey := c.r.wire.replyKey
	if !bytes.Contains(frame, errKey) {
		rest := frame
		now := c.r.now()
		for {
			i := bytes.Index(rest, replyKey)
			if i < 0 {
				break
			}
			rest = rest[i+len(replyKey):]
			var cid int64
			j := 0
			for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
				cid = cid*10 + int64(rest[j]-'0')
				j++
			}
			rest = rest[j:]
			if cid < setupCids {
				c.resolveCall(cid, nil)
				continue
			}
			if c.pub != nil {
				c.ackPublication(cid, now, false)
			}
		}
		return
	}
	type reply struct {
		Rid   json.RawMessage `json:"rid"` // SocketCluster
		ID    json.RawMessage `json:"id"`  // Centrifugo
		Error json.RawMessage `json:"error"`
	}
	var packets []reply
	if len(frame) > 0 && frame[0] == '[' {
		if json.Unmarshal(frame, &packets) != nil {
			return
		}
	} else {
		// One object, or (Centrifugo) several, one per line.
		dec := json.NewDecoder(bytes.NewReader(frame))
		for {
			var p reply
			if dec.Decode(&p) != nil {
				break
			}
			packets = append(packets, p)
		}
	}
	now := c.r.now()
	for _, p := range packets {
		id := p.Rid
		if c.r.wire == centrifugo {
			id = p.ID
		}
		cid, err := strconv.ParseInt(string(id), 10, 64)
		if err != nil {
			continue
		}
		failed := len(p.Error) > 0 && string(p.Error) != "null"
		if cid >= setupCids {
			if c.pub != nil && (failed || bytes.Contains(frame, errKey)) {
				c.ackPublication(cid, now, failed)
			}
			continue
		}
		var cerr error
		if failed {
			cerr = fmt.Errorf("server error %s", p.Error)
		}
		c.resolveCall(cid, cerr)
	}
}

// resolveCall answers the setup call cid (if it is still waiting).
func (c *conn) resolveCall(cid int64, err error) {
	c.cmu.Lock()
	w := c.calls[cid]
	delete(c.calls, cid)
	c.cmu.Unlock()
	if w != nil {
		w <- err
	}
}

func (c *conn) ackPublication(cid, now int64, failed bool) {
	p := c.pub
	sent := p.sent[cid&(ackWindow-1)].Load()
	if failed {
		p.failed.Add(1)
		c.r.ackErrors.Add(1)
		return
	}
	p.acked.Add(1)
	if sent > 0 {
		c.r.ackHist.shard(c.idx).Record(now - sent)
	}
}
