//go:build linux

package bench

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sockmesh/sockmesh/wsframe"
	"golang.org/x/sys/unix"
)

// The raw connector opens the connect scenario's connections without a
// goroutine, a net.Conn or a gorilla connection each: one goroutine drives
// nonblocking sockets through an epoll set of its own, each connection a
// small state machine (connecting → upgrading → handshaking → open). A
// connection then costs the tool about ten system calls and little else, so
// the server, not the tool, limits the rate measured. The hold scenario adds
// a state (subscribing: each connection subscribes to one channel after its
// handshake) and keeps the loop running once every connection is open
// (serve): it answers pings and counts the deliveries of a fan-out.

const (
	rawIdle uint8 = iota // not started
	rawConnecting
	rawUpgrading
	rawHandshaking
	rawSubscribing // hold: waiting for the #subscribe answer
	rawOpen
	rawClosed // failed, or closed by the server
)

const (
	rawBufSize     = 512     // in-flight read buffer: the 101 response, then frames
	rawScratchSize = 4096    // reads of open connections
	rawMaxRest     = 1 << 20 // largest partial frame an open connection keeps
)

var (
	rawHandshake = appendFrame(nil, []byte(`{"event":"#handshake","data":{"authToken":null},"cid":1}`))
	rawClose     = wsframe.AppendClientFrame(nil, wsframe.Close, wsframe.ClosePayload(1000, ""))
	crlf         = []byte("\r\n")
	crlfcrlf     = []byte("\r\n\r\n")
	status101    = []byte("HTTP/1.1 101")
	acceptName   = []byte("Sec-WebSocket-Accept")
	rid1         = []byte(`"rid":1`)
	rid2         = []byte(`"rid":2`) // the answer to a hold connection's #subscribe (cid 2)
)

const (
	reqTail    = "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	rawEvMask  = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
	rawHangups = unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
)

// rawTarget is one server URL, resolved once.
type rawTarget struct {
	url      string
	family   int
	sa       unix.Sockaddr
	loopback bool
	head     []byte // the upgrade request up to the key
}

// rawConn is one connection; the state it needs only in flight is in its slot.
type rawConn struct {
	fd    int32
	state uint8
	slot  int32
	got   uint32 // hold: deliveries of the fan-out publication
	rest  []byte // open: the start of a frame not fully received (rare)
}

// rawSlot holds a connection in flight. A released slot's buffers stay as
// they are until the next start, so a handler may still read them.
type rawSlot struct {
	conn   int32  // -1 when free
	t0     int64  // r.now() at socket()
	n      int    // bytes in buf
	out    []byte // not yet written (part of wb)
	accept [28]byte
	wb     []byte // the upgrade request, then frames to send
	buf    [rawBufSize]byte
}

type rawLoop struct {
	r        *runner
	hist     *shardedHist
	targets  []rawTarget
	timeout  int64
	epfd     int
	file     *os.File
	rc       syscall.RawConn
	conns    []rawConn
	slots    []rawSlot
	free     []int32
	events   []unix.EpollEvent
	wait     func(fd uintptr) bool // made once: a closure per wait would be garbage
	ready    int                   // events wait found
	werr     error
	src      [255]*unix.SockaddrInet4 // source addresses by last octet, made once
	scratch  []byte
	rng      *rand.ChaCha8
	inflight int
	open     int
	failed   int
	down     atomic.Int64 // closed by the server (or broken) after their handshake
	nextScan int64        // r.now() when the earliest in-flight connection times out

	// hold: subFrame, when set, is the #subscribe frame (cid 2) connection i
	// sends after its handshake answer; it counts as open once subscribed.
	// Open connections then count the deliveries of fan (when set).
	subFrame func(i int) []byte
	fan      *rawFanout
	pings    int64 // pings answered on open connections
	// stallAfter (0: never): run stops starting connections once none has
	// completed for this long while some failed; notStarted counts the rest.
	stallAfter int64
	lastOK     int64 // r.now() of the latest connection completed
	notStarted int
	firstDrop  error // why the first open connection ended
}

// rawFanout counts the deliveries of one publication to every connection of
// the hold scenario. The loop goroutine records; the scenario reads the
// atomics (and everything else once the loop has stopped).
type rawFanout struct {
	step    uint32        // the payload step that marks the publication
	hist    Histogram     // arrival - send time of each delivery
	want    atomic.Int64  // deliveries that complete the fan-out (0: not armed)
	firstAt atomic.Int64  // r.now() of the first delivery
	lastAt  atomic.Int64  // r.now() of the latest delivery
	got     int64         // loop only
	done    chan struct{} // closed when got reaches want
	closed  bool          // loop only
	extra   int64         // loop only: deliveries to connections that already had one
}

// rawTargets resolves the URLs; an error means the raw connector cannot be
// used (wss://, for one).
func rawTargets(urls []string) ([]rawTarget, error) {
	ts := make([]rawTarget, len(urls))
	for i, u := range urls {
		pu, err := url.Parse(u)
		if err != nil {
			return nil, err
		}
		if pu.Scheme != "ws" {
			return nil, fmt.Errorf("%s: only ws:// URLs", u)
		}
		port := 80
		if p := pu.Port(); p != "" {
			if port, err = net.LookupPort("tcp", p); err != nil {
				return nil, err
			}
		}
		ips, err := net.DefaultResolver.LookupIP(context.Background(), "ip", pu.Hostname())
		if err != nil || len(ips) == 0 {
			return nil, fmt.Errorf("%s: cannot resolve %s: %v", u, pu.Hostname(), err)
		}
		ip := ips[0]
		for _, x := range ips {
			if x.To4() != nil { // as the source addresses 127.0.0.x are
				ip = x
				break
			}
		}
		t := rawTarget{url: u, loopback: isLoopbackURL(u)}
		if ip4 := ip.To4(); ip4 != nil {
			sa := &unix.SockaddrInet4{Port: port}
			copy(sa.Addr[:], ip4)
			t.family, t.sa = unix.AF_INET, sa
		} else {
			sa := &unix.SockaddrInet6{Port: port}
			copy(sa.Addr[:], ip.To16())
			t.family, t.sa = unix.AF_INET6, sa
		}
		t.head = fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ", pu.RequestURI(), pu.Host)
		ts[i] = t
	}
	return ts, nil
}

// rawConnect opens the connect scenario's connections with the raw
// connector, recording connect latencies in hist. ok is false when the raw
// connector does not apply (Connector "gorilla", or a URL it cannot serve);
// the caller then uses openConns. It returns once every connection has
// been attempted, the others still open.
func (r *runner) rawConnect(ctx context.Context, hist *shardedHist) (oc openedConns, ok bool, err error) {
	if r.cfg.Connector == "gorilla" {
		return oc, false, nil
	}
	targets, err := rawTargets(r.cfg.URLs)
	if err != nil {
		r.logf("raw connector not used (%v): gorilla instead", err)
		return oc, false, nil
	}
	l, err := newRawLoop(r, targets, hist)
	if err != nil {
		return oc, true, err
	}
	if err := l.run(ctx); err != nil {
		l.closeAll()
		return oc, true, err
	}
	return openedConns{open: l.open, failed: l.failed, down: func() int { return int(l.down.Load()) }, close: l.closeAll}, true, nil
}

func newRawLoop(r *runner, targets []rawTarget, hist *shardedHist) (*rawLoop, error) {
	n := r.cfg.Connections
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	// Waits go through Go's netpoller (see wsfront/poller_linux.go): a
	// blocking epoll_wait would hold the only P when the tool is pinned to
	// one core.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, err
	}
	f := os.NewFile(uintptr(epfd), "bench-connect-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	timeout := r.cfg.connectTimeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	l := &rawLoop{r: r, hist: hist, targets: targets, timeout: int64(timeout), epfd: epfd, file: f, rc: rc,
		conns: make([]rawConn, n), slots: make([]rawSlot, min(r.cfg.Concurrency, n)),
		events: make([]unix.EpollEvent, 256), scratch: make([]byte, rawScratchSize), rng: rand.NewChaCha8(seed)}
	l.wait = func(fd uintptr) bool {
		l.ready, l.werr = unix.EpollWait(int(fd), l.events, 0)
		if l.werr == unix.EINTR {
			l.ready, l.werr = 0, nil
		}
		return l.werr != nil || l.ready > 0 // nothing ready: wait in Go's netpoller
	}
	for i := range l.conns {
		l.conns[i].fd = -1
	}
	for i := len(l.slots) - 1; i >= 0; i-- {
		l.slots[i].conn = -1
		l.free = append(l.free, int32(i))
	}
	return l, nil
}

func (l *rawLoop) run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = l.file.SetReadDeadline(time.Now()) })
	defer stop()
	n := len(l.conns)
	next := 0
	l.lastOK = l.r.now()
	for {
		if l.stallAfter > 0 && next < n && l.failed > 0 && l.r.now()-l.lastOK > l.stallAfter {
			l.notStarted = n - next // the server stopped taking connections: give up on the rest
			next = n
		}
		for len(l.free) > 0 && next < n && ctx.Err() == nil {
			l.start(next)
			next++
		}
		if err := ctx.Err(); err != nil {
			for si := range l.slots {
				if c := l.slots[si].conn; c >= 0 {
					l.fail(int(c), err)
				}
			}
			return nil
		}
		if l.inflight == 0 && next >= n {
			return nil
		}
		if l.r.now() >= l.nextScan {
			l.scan()
		}
		timedOut, err := l.poll()
		if err != nil {
			return err
		}
		if timedOut {
			l.scan()
		}
	}
}

// poll waits for events (until the file's read deadline) and handles them; timedOut: the
// deadline passed first.
func (l *rawLoop) poll() (timedOut bool, err error) {
	err = l.rc.Read(l.wait)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return true, nil
	case err != nil:
		return false, err
	case l.werr != nil:
		return false, fmt.Errorf("epoll_wait: %w", l.werr)
	}
	for _, ev := range l.events[:l.ready] {
		l.event(int(ev.Fd), ev.Events)
	}
	return false, nil
}

// scan fails the in-flight connections that timed out and sets the wake-up
// for the next one.
func (l *rawLoop) scan() {
	now := l.r.now()
	next := int64(math.MaxInt64)
	for si := range l.slots {
		s := &l.slots[si]
		if s.conn < 0 {
			continue
		}
		if d := s.t0 + l.timeout; d <= now {
			l.fail(int(s.conn), fmt.Errorf("no handshake answer within %v (%s)", time.Duration(l.timeout), stateName(l.conns[s.conn].state)))
		} else {
			next = min(next, d)
		}
	}
	if next == math.MaxInt64 {
		next = now + l.timeout // nothing in flight: anything started later times out after this
	}
	l.nextScan = next
	_ = l.file.SetReadDeadline(l.r.base.Add(time.Duration(next)))
}

func stateName(s uint8) string {
	switch s {
	case rawConnecting:
		return "connecting"
	case rawUpgrading:
		return "waiting for the upgrade response"
	case rawHandshaking:
		return "waiting for the #handshake answer"
	case rawSubscribing:
		return "waiting for the #subscribe answer"
	}
	return "?"
}

// phase names the call a connection in flight waits for, in its errors.
func phase(s uint8) string {
	if s == rawSubscribing {
		return "subscribe"
	}
	return "handshake"
}

// start opens connection i: socket, (bind,) connect, add to the epoll set.
func (l *rawLoop) start(i int) {
	c := &l.conns[i]
	si := l.free[len(l.free)-1]
	l.free = l.free[:len(l.free)-1]
	s := &l.slots[si]
	s.conn, s.n, s.out = int32(i), 0, nil
	c.slot = si
	l.inflight++
	t := &l.targets[i%len(l.targets)]

	var key [16]byte
	_, _ = l.rng.Read(key[:])
	var ka [24]byte
	base64.StdEncoding.Encode(ka[:], key[:])
	s.accept = wsframe.AcceptKey(ka[:])
	s.wb = append(append(append(s.wb[:0], t.head...), ka[:]...), reqTail...)

	s.t0 = l.r.now()
	c.state = rawConnecting
	fd, err := unix.Socket(t.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		l.fail(i, fmt.Errorf("socket: %w", err))
		return
	}
	c.fd = int32(fd)
	if x := l.r.sourceOctet(i, len(l.conns), t.loopback); x != 0 {
		// The kernel picks the port at connect time, per destination.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil {
			l.fail(i, fmt.Errorf("bind: %w", err))
			return
		}
		if l.src[x] == nil {
			l.src[x] = &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, x}}
		}
		if err := unix.Bind(fd, l.src[x]); err != nil {
			l.fail(i, fmt.Errorf("bind 127.0.0.%d: %w", x, err))
			return
		}
	}
	if err := unix.Connect(fd, t.sa); err != nil && err != unix.EINPROGRESS {
		l.fail(i, fmt.Errorf("connect: %w", err))
		return
	}
	// Edge-triggered, so the descriptor is added once and never modified.
	ev := unix.EpollEvent{Events: rawEvMask, Fd: int32(i)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.fail(i, fmt.Errorf("epoll_ctl: %w", err))
	}
}

func (l *rawLoop) event(i int, ev uint32) {
	c := &l.conns[i]
	switch c.state {
	case rawIdle, rawClosed:
		return
	case rawOpen:
		if ev&(unix.EPOLLIN|rawHangups) != 0 {
			l.readOpen(i, ev)
		}
		return
	}
	s := &l.slots[c.slot]
	if c.state == rawConnecting {
		if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			err := errors.New("connection failed")
			if e, gerr := unix.GetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_ERROR); gerr != nil {
				err = gerr
			} else if e != 0 {
				err = unix.Errno(e)
			}
			l.fail(i, fmt.Errorf("connect: %w", err))
			return
		}
		if ev&unix.EPOLLOUT == 0 {
			return
		}
		c.state = rawUpgrading
		s.out = s.wb
	}
	if len(s.out) > 0 && !l.flush(i, s) {
		return
	}
	if ev&(unix.EPOLLIN|rawHangups) != 0 {
		l.readInflight(i, s, ev)
	}
}

// flush writes what s has pending; false when the connection failed.
func (l *rawLoop) flush(i int, s *rawSlot) bool {
	fd := int(l.conns[i].fd)
	for len(s.out) > 0 {
		m, err := unix.Write(fd, s.out)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return true // the rest on EPOLLOUT
		case err != nil:
			l.fail(i, fmt.Errorf("write: %w", err))
			return false
		}
		s.out = s.out[m:]
	}
	return true
}

// send writes a frame: queued behind pending output in flight, written
// directly (or dropped if the socket is full) once open.
func (l *rawLoop) send(i int, frame []byte) {
	c := &l.conns[i]
	if c.state == rawOpen {
		_, _ = unix.Write(int(c.fd), frame)
		return
	}
	s := &l.slots[c.slot]
	if len(s.out) == 0 {
		s.out = s.wb[:0]
	}
	s.out = append(s.out, frame...)
	l.flush(i, s)
}

// readInflight reads until EAGAIN or a short read (with edge-triggered
// epoll, a short read from a stream socket means it is drained; a new
// arrival raises a new edge).
func (l *rawLoop) readInflight(i int, s *rawSlot, ev uint32) {
	c := &l.conns[i]
	for {
		room := len(s.buf) - s.n
		m, err := unix.Read(int(c.fd), s.buf[s.n:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return
		case err != nil:
			l.fail(i, fmt.Errorf("read: %w", err))
			return
		case m == 0:
			l.fail(i, fmt.Errorf("connection closed by the server (%s)", stateName(c.state)))
			return
		}
		s.n += m
		l.consume(i, s)
		switch c.state {
		case rawOpen:
			if m == room || ev&rawHangups != 0 {
				l.readOpen(i, ev)
			}
			return
		case rawClosed:
			return
		}
		if m < room && ev&rawHangups == 0 {
			return
		}
	}
}

// consume handles what s.buf holds: the upgrade response, then frames.
func (l *rawLoop) consume(i int, s *rawSlot) {
	c := &l.conns[i]
	if c.state == rawUpgrading {
		end := bytes.Index(s.buf[:s.n], crlfcrlf)
		if end < 0 {
			if s.n == len(s.buf) {
				l.fail(i, fmt.Errorf("upgrade: response larger than %d bytes", rawBufSize))
			}
			return
		}
		if err := checkUpgrade(s.buf[:end], s.accept[:]); err != nil {
			l.fail(i, fmt.Errorf("upgrade: %w", err))
			return
		}
		s.n = copy(s.buf[:], s.buf[end+4:s.n])
		c.state = rawHandshaking
		l.send(i, rawHandshake)
		if c.state != rawHandshaking {
			return
		}
	}
	used := l.frames(i, s.buf[:s.n])
	switch c.state {
	case rawOpen:
		if used < s.n {
			c.rest = append([]byte(nil), s.buf[used:s.n]...)
		}
	case rawHandshaking, rawSubscribing:
		s.n = copy(s.buf[:], s.buf[used:s.n])
		if s.n == len(s.buf) {
			l.fail(i, fmt.Errorf("%s: frame larger than %d bytes", phase(c.state), rawBufSize))
		}
	}
}

// readOpen reads an open connection: pings to answer, or the server closing it.
func (l *rawLoop) readOpen(i int, ev uint32) {
	c := &l.conns[i]
	for c.state == rawOpen {
		m, err := unix.Read(int(c.fd), l.scratch)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return
		case err != nil:
			l.drop(i, fmt.Errorf("read: %w", err))
			return
		case m == 0:
			l.drop(i, errors.New("connection closed by the server (no close frame)"))
			return
		}
		data := l.scratch[:m]
		if c.rest != nil {
			c.rest = append(c.rest, data...)
			data = c.rest
		}
		used := l.frames(i, data)
		if c.state != rawOpen {
			return
		}
		switch left := data[used:]; {
		case len(left) == 0:
			c.rest = nil
		case len(left) > rawMaxRest:
			l.drop(i, fmt.Errorf("frame larger than %d bytes", rawMaxRest))
			return
		default:
			c.rest = append([]byte(nil), left...)
		}
		if m < len(l.scratch) && ev&rawHangups == 0 {
			return
		}
	}
}

// frames handles the complete frames at the start of b and returns how many
// bytes they took.
func (l *rawLoop) frames(i int, b []byte) int {
	c := &l.conns[i]
	used := 0
	for c.state == rawHandshaking || c.state == rawSubscribing || c.state == rawOpen {
		f, size, err := wsframe.Parse(b[used:], rawMaxRest)
		if err != nil {
			l.broken(i, err)
			break
		}
		if size == 0 {
			break
		}
		used += size
		l.frame(i, f)
	}
	return used
}

func (l *rawLoop) frame(i int, f wsframe.Frame) {
	c, p := &l.conns[i], f.Payload
	if !f.Fin || f.Op == wsframe.Continuation {
		l.broken(i, errors.New("fragmented frame"))
		return
	}
	switch f.Op {
	case wsframe.Text:
		switch {
		case len(p) == 0:
			l.pong(i, pongV2)
		case len(p) == 2 && p[0] == '#' && p[1] == '1':
			l.pong(i, pongV1)
		case c.state == rawHandshaking && isAnswer(p, rid1):
			if bytes.Contains(p, errKey) {
				l.fail(i, fmt.Errorf("handshake: server error %s", p))
				return
			}
			if l.subFrame != nil {
				c.state = rawSubscribing
				l.send(i, l.subFrame(i))
				return
			}
			l.connected(i)
		case c.state == rawSubscribing && isAnswer(p, rid2):
			if bytes.Contains(p, errKey) {
				l.fail(i, fmt.Errorf("subscribe: server error %s", p))
				return
			}
			l.connected(i)
		case c.state == rawOpen && l.fan != nil:
			l.deliveries(i, p)
		}
	case wsframe.Ping:
		var tmp [wsframe.MaxHeader + wsframe.MaxControlPayload]byte
		l.send(i, wsframe.AppendClientFrame(tmp[:0], wsframe.Pong, p))
	case wsframe.Close:
		code := -1
		if len(p) >= 2 {
			code = int(binary.BigEndian.Uint16(p))
		}
		if c.state == rawOpen {
			l.send(i, rawClose)
			l.drop(i, fmt.Errorf("closed by the server (close %d %q)", code, p[min(2, len(p)):]))
			return
		}
		l.fail(i, fmt.Errorf("%s: connection closed by the server (close %d %q)", phase(c.state), code, p[min(2, len(p)):]))
	}
}

// isAnswer: p holds the answer whose "rid":N is key (not followed by another digit).
func isAnswer(p, key []byte) bool {
	for {
		k := bytes.Index(p, key)
		if k < 0 {
			return false
		}
		p = p[k+len(key):]
		if len(p) == 0 || p[0] < '0' || p[0] > '9' {
			return true
		}
	}
}

// broken ends a connection that sent something this client cannot read.
func (l *rawLoop) broken(i int, err error) {
	if l.conns[i].state == rawOpen {
		l.drop(i, err)
		return
	}
	l.fail(i, fmt.Errorf("%s: %w", phase(l.conns[i].state), err))
}

// pong answers a ping; pings of open connections are counted.
func (l *rawLoop) pong(i int, frame []byte) {
	if l.conns[i].state == rawOpen {
		l.pings++
	}
	l.send(i, frame)
}

// deliveries counts the fan-out publications in frame p of open connection i.
func (l *rawLoop) deliveries(i int, p []byte) {
	f := l.fan
	var now, n int64
	scanPayloads(p, func(pl Payload) {
		if pl.Step != f.step {
			return
		}
		if now == 0 {
			now = l.r.now()
		}
		f.hist.Record(now - pl.SentNanos)
		n++
	})
	if n == 0 {
		return
	}
	c := &l.conns[i]
	if c.got > 0 {
		f.extra += n
	} else if n > 1 {
		f.extra += n - 1
	}
	c.got += uint32(n)
	if f.got == 0 {
		f.firstAt.Store(now)
	}
	f.got += n
	f.lastAt.Store(now)
	if want := f.want.Load(); !f.closed && want > 0 && f.got >= want {
		f.closed = true
		close(f.done)
	}
}

func (l *rawLoop) connected(i int) {
	c := &l.conns[i]
	s := &l.slots[c.slot]
	l.hist.shard(i).Record(l.r.now() - s.t0)
	c.state = rawOpen
	l.open++
	l.lastOK = l.r.now()
	l.release(c)
}

// fail ends connection i before its handshake answer.
func (l *rawLoop) fail(i int, err error) {
	c := &l.conns[i]
	if c.fd >= 0 {
		unix.Close(int(c.fd))
		c.fd = -1
	}
	c.state = rawClosed
	l.failed++
	if l.failed == 1 {
		l.r.firstConnErr.Store(fmt.Errorf("connection %d to %s: %w", i, l.targets[i%len(l.targets)].url, err))
	}
	l.release(c)
}

// drop ends an open connection the server closed or broke.
func (l *rawLoop) drop(i int, why error) {
	c := &l.conns[i]
	unix.Close(int(c.fd))
	c.fd, c.state, c.rest = -1, rawClosed, nil
	if l.down.Add(1) == 1 {
		l.firstDrop = fmt.Errorf("connection %d, %v after the start: %w", i, time.Duration(l.r.now()).Round(time.Millisecond), why)
	}
}

func (l *rawLoop) release(c *rawConn) {
	s := &l.slots[c.slot]
	s.conn = -1
	l.free = append(l.free, c.slot)
	c.slot = -1
	l.inflight--
}

// serve handles the open connections (pings, deliveries, the server closing
// them) until ctx ends. It runs after run, on one goroutine, and nothing else
// may touch l until it returned.
func (l *rawLoop) serve(ctx context.Context) error {
	_ = l.file.SetReadDeadline(time.Time{}) // run's timeout scans are over
	stop := context.AfterFunc(ctx, func() { _ = l.file.SetReadDeadline(time.Now()) })
	defer stop()
	for ctx.Err() == nil {
		if _, err := l.poll(); err != nil {
			return err
		}
	}
	return nil
}

// closeAll sends a 1000 close frame on every open connection and closes it.
func (l *rawLoop) closeAll() {
	for i := range l.conns {
		c := &l.conns[i]
		if c.state == rawOpen {
			_, _ = unix.Write(int(c.fd), rawClose)
		}
		if c.fd >= 0 {
			unix.Close(int(c.fd))
			c.fd, c.state, c.rest = -1, rawClosed, nil
		}
	}
	_ = l.file.Close()
}

// checkUpgrade checks the response head (status line and headers, without
// the blank line) of an upgrade whose expected Sec-WebSocket-Accept is accept.
func checkUpgrade(head, accept []byte) error {
	line, rest, _ := bytes.Cut(head, crlf)
	if !bytes.HasPrefix(line, status101) || len(line) > len(status101) && line[len(status101)] != ' ' {
		return fmt.Errorf("status %q", line)
	}
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, crlf)
		name, val, ok := bytes.Cut(line, []byte{':'})
		if !ok || !bytes.EqualFold(bytes.TrimSpace(name), acceptName) {
			continue
		}
		if val = bytes.TrimSpace(val); !bytes.Equal(val, accept) {
			return fmt.Errorf("bad Sec-WebSocket-Accept %q (want %q)", val, accept)
		}
		return nil
	}
	return errors.New("no Sec-WebSocket-Accept")
}
