package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/transport"
	"github.com/sockmesh/sockmesh/netpoll"
)

// sockmesh's own zmq4 transport, registered once per process as "smtcp". It fixes, outside the
// library, the zmq4 v0.17.0 behaviours that let one stranger, one misbehaving member or one
// slow peer hurt a node (docs/mesh-libraries.md, "zmq4"):
//
//   - Every byte a peer sends passes a ZMTP guard (zmtp.go) before zmq4 sees it: frame lengths
//     are checked before zmq4 allocates them, READY metadata before zmq4 indexes it, and a
//     subscriber may send nothing but a few mesh subscriptions. A violation closes the
//     connection; it is counted and logged once per address.
//   - Accepted connections are prepared in their own goroutine (at most maxPending at once)
//     before zmq4's serial accept loop gets them: closed-mesh authentication (auth.go), our
//     ZMTP greeting, and the peer's greeting and READY read and checked, all under the
//     handshake deadline. zmq4's handshake then completes from memory, so a silent or hostile
//     client never holds up the accept loop, and with a cluster key a stranger never reaches
//     zmq4 at all.
//   - Each accepted connection (one per peer that subscribes to our PUB) has its own bounded
//     send queue and writer goroutine (outqueue.go). zmq4's PUB writes every message to every
//     peer from one goroutine; with these queues its writes never block, so a slow peer delays
//     only itself, and a peer whose queue passes its bound is cut (a slow peer) and redials.
//   - Stall watchdog, accept side: a connection with bytes queued in the kernel whose peer has
//     acknowledged nothing for the stall timeout is closed (SIOCOUTQ + TCP_INFO), which frees a
//     frozen peer's resources without waiting for its queue to fill.
//   - Dial side: closed-mesh authentication, then the same guard and a deadline on the whole
//     handshake: zmq4's Dial to a frozen peer would otherwise hang for ever.
//   - Byte counting on reads, per link, for the received-bytes metrics.
//
// Reads are raw system calls (rawread.go). Settings travel in the context zmq4 passes to Listen
// and Dial (the socket's context), so one registered transport serves every Mesh in the process
// with its own settings.

const transportName = "smtcp"

var registerOnce sync.Once

func registerTransport() {
	registerOnce.Do(func() {
		if err := zmq4.RegisterTransport(transportName, smTransport{}); err != nil {
			panic(err) // only possible if another package registered the same name
		}
	})
}

type transportKey struct{}

// connOpts are the per-socket settings of the transport.
type connOpts struct {
	handshake time.Duration // 0 = no deadline
	stall     time.Duration // accept side only; 0 = no watchdog
	// maxMessage bounds the bytes of one message a peer's PUB sends us (dial side); 0 = 1 GiB.
	maxMessage uint64
	// peerBuffer bounds the bytes queued for one accepted connection; 0 = 32 MiB.
	peerBuffer int
	// maxPending bounds accepted connections still in their handshake; 0 = 64.
	maxPending int
	// authKey, if set, is the closed mesh's link authentication key (both sides).
	authKey []byte
	// rx, if set, counts the bytes read from every connection of this socket.
	rx *atomic.Uint64
	// onDial, if set, is called with every dialled connection before the ZMTP handshake.
	onDial func(*smConn)
	// stalled counts connections closed by the watchdog.
	stalled *atomic.Uint64
	// hsTimeouts counts connections closed by the handshake deadline.
	hsTimeouts *atomic.Uint64
	// onReject, if set, is told of every connection closed for what its peer sent (err wraps
	// one of the guard's or auth's errors). It must not block.
	onReject func(remote net.Addr, err error)
	// onSlow, if set, is told of every accepted connection cut because its send queue passed
	// peerBuffer; identity is the peer's ZMTP identity (its Serf name, for a mesh member). It
	// must not block.
	onSlow func(identity string, remote net.Addr)
	// conns, if set, registers accepted connections by identity (accept side).
	conns *peerConns
	// onDrain, if set, is told when a peer's send queue that was held back has drained (accept
	// side). It must not block.
	onDrain func(identity string)
}

func withConnOpts(ctx context.Context, o *connOpts) context.Context {
	return context.WithValue(ctx, transportKey{}, o)
}

func optsFrom(ctx context.Context) *connOpts {
	if o, ok := ctx.Value(transportKey{}).(*connOpts); ok && o != nil {
		return o
	}
	return &connOpts{}
}

func (o *connOpts) messageLimit() uint64 {
	if o.maxMessage == 0 {
		return 1 << 30
	}
	return o.maxMessage
}

func (o *connOpts) bufferLimit() int {
	if o.peerBuffer <= 0 {
		return 32 << 20
	}
	return o.peerBuffer
}

func (o *connOpts) pendingLimit() int {
	if o.maxPending <= 0 {
		return 64
	}
	return o.maxPending
}

type smTransport struct{}

func (smTransport) Addr(ep string) (string, error) {
	return transport.New("tcp").Addr(ep)
}

func (smTransport) Dial(ctx context.Context, d transport.Dialer, addr string) (net.Conn, error) {
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("mesh transport: dial %s: not a TCP connection", addr)
	}
	o := optsFrom(ctx)
	sc := newSMConn(tc, o, false)
	// The socket's context ends when the socket is closed: also abort a handshake in flight.
	stop := context.AfterFunc(ctx, func() {
		if !sc.hsDone.Load() {
			sc.Close()
		}
	})
	sc.onHandshake = func() { stop() }
	if o.authKey != nil {
		// Under the handshake timer, which closes the connection if the peer stalls.
		if err := authDial(tc, o.authKey); err != nil {
			sc.Close()
			if errors.Is(err, errAuth) {
				sc.reject(err)
			}
			return nil, fmt.Errorf("mesh transport: dial %s: %w", addr, err)
		}
	}
	if o.onDial != nil {
		o.onDial(sc)
	}
	return sc, nil
}

func (smTransport) Listen(ctx context.Context, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	sl := &smListener{
		tl:        l.(*net.TCPListener),
		opts:      optsFrom(ctx),
		conns:     make(map[*smConn]*progress),
		ready:     make(chan *smConn),
		preparing: make(map[*smConn]time.Time),
		done:      make(chan struct{}),
	}
	sl.wg.Add(1)
	go sl.acceptLoop()
	if sl.opts.stall > 0 {
		sl.wg.Add(1)
		go sl.watchdog()
	}
	return sl, nil
}

// smConn is one mesh TCP connection as zmq4 sees it. It does not embed *net.TCPConn: zmq4's
// writes must go through Write (to the send queue on the accept side), not around it through
// net.Buffers' writev.
type smConn struct {
	tc       *net.TCPConn
	opts     *connOpts
	accepted bool
	hsDone   atomic.Bool
	closed   atomic.Bool
	timer    *time.Timer
	// guard checks what the peer sends; touched only by the reading goroutine (the preparing
	// goroutine until the connection is handed to zmq4).
	guard       *zmtpGuard
	onHandshake func()
	// raw reads the descriptor with raw system calls (netpoll.Conn): with several nodes on
	// one core, a runtime-visible read per link wake-up started a round of thread switches.
	raw netpoll.Conn
	// replay holds what the accept side's preparation read from the peer (its greeting and
	// READY, already checked), for zmq4 to read first.
	replay []byte
	// swallow counts bytes of zmq4's own greeting still to drop: the preparation sent ours.
	swallow int
	// out is the accept side's send queue (nil on the dial side: a SUB writes only its
	// subscriptions, directly).
	out *outQueue
}

var _ net.Conn = (*smConn)(nil)

func newSMConn(tc *net.TCPConn, o *connOpts, accepted bool) *smConn {
	_ = tc.SetNoDelay(true)
	c := &smConn{tc: tc, opts: o, accepted: accepted, raw: netpoll.NewConn(tc),
		guard: newZMTPGuard(accepted, o.messageLimit())}
	if accepted {
		return c // the preparation runs under a socket deadline instead
	}
	if o.handshake > 0 {
		c.timer = time.AfterFunc(o.handshake, func() {
			if !c.hsDone.Load() {
				if o.hsTimeouts != nil {
					o.hsTimeouts.Add(1)
				}
				c.Close()
			}
		})
	} else {
		c.hsDone.Store(true)
	}
	return c
}

// Read hands zmq4 what the peer sent, once the guard has passed it.
func (c *smConn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		if len(c.replay) == 0 {
			c.replay = nil
		}
		return n, nil
	}
	var n int
	var err error
	var raw bool
	if n, raw, err = c.raw.Read(p); !raw {
		n, err = c.tc.Read(p)
	}
	if n > 0 {
		if c.opts.rx != nil {
			c.opts.rx.Add(uint64(n))
		}
		if gerr := c.guard.feed(p[:n]); gerr != nil {
			c.reject(gerr)
			return 0, &net.OpError{Op: "read", Net: "tcp", Addr: c.tc.RemoteAddr(), Err: gerr}
		}
		if !c.hsDone.Load() && c.guard.handshakeDone() {
			c.hsDone.Store(true)
			if c.timer != nil {
				c.timer.Stop()
			}
			if c.onHandshake != nil {
				c.onHandshake()
			}
		}
	}
	return n, err
}

// Write queues p for the peer (accept side) or writes it (dial side).
func (c *smConn) Write(p []byte) (int, error) {
	total := len(p)
	if c.swallow > 0 { // only during zmq4's handshake, in its accept goroutine
		k := min(c.swallow, len(p))
		c.swallow -= k
		p = p[k:]
		if len(p) == 0 {
			return total, nil
		}
	}
	var n int
	var err error
	if c.out != nil {
		n, err = c.out.write(p)
	} else {
		n, err = c.tc.Write(p)
	}
	if err != nil {
		return total - len(p) + n, err
	}
	return total, nil
}

// slow cuts a peer whose send queue passed its bound.
func (c *smConn) slow() {
	c.Close()
	if c.opts.onSlow != nil {
		c.opts.onSlow(c.guard.identity, c.tc.RemoteAddr())
	}
}

// reject closes the connection for what the peer sent and reports it.
func (c *smConn) reject(err error) {
	c.Close()
	if c.opts.onReject != nil {
		c.opts.onReject(c.tc.RemoteAddr(), err)
	}
}

// Close closes the connection once.
func (c *smConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	if c.out != nil {
		c.out.close()
	}
	if c.opts.conns != nil && c.accepted {
		c.opts.conns.remove(c)
	}
	// The handshake timer is left to fire (a no-op on a closed conn): Close may run in the
	// timer's own callback, before newSMConn has even stored it.
	return c.tc.Close()
}

func (c *smConn) LocalAddr() net.Addr                { return c.tc.LocalAddr() }
func (c *smConn) RemoteAddr() net.Addr               { return c.tc.RemoteAddr() }
func (c *smConn) SetDeadline(t time.Time) error      { return c.tc.SetDeadline(t) }
func (c *smConn) SetReadDeadline(t time.Time) error  { return c.tc.SetReadDeadline(t) }
func (c *smConn) SetWriteDeadline(t time.Time) error { return c.tc.SetWriteDeadline(t) }

// zmtpGreeting is the greeting zmq4 v0.17.0 sends under NULL security (ZMTP 3.0); the accept
// side sends it itself, before zmq4 has the connection.
var zmtpGreeting = func() []byte {
	g := make([]byte, zmtpGreetingLen)
	g[0], g[9], g[10], g[11] = 0xFF, 0x7F, 3, 0
	copy(g[12:32], "NULL")
	return g
}()

const zmtpGreetingLen = 64

// prepare runs an accepted connection's handshake up to what zmq4 would otherwise wait for:
// authentication (closed mesh), our greeting out, the peer's greeting and READY in and checked.
// It runs under a socket deadline, in its own goroutine.
func (l *smListener) prepare(sc *smConn) error {
	o := l.opts
	if o.handshake > 0 {
		_ = sc.tc.SetDeadline(time.Now().Add(o.handshake))
	}
	if o.authKey != nil {
		if err := authAccept(sc.tc, o.authKey); err != nil {
			return err
		}
	}
	if _, err := sc.tc.Write(zmtpGreeting); err != nil {
		return err
	}
	sc.swallow = zmtpGreetingLen
	// The greeting and a READY of at most cmdMax; anything the peer sends after them in the
	// same reads is checked too and kept for zmq4.
	buf := make([]byte, 0, zmtpGreetingLen+9+cmdMax+64)
	for !sc.guard.handshakeDone() {
		if len(buf) == cap(buf) {
			return fmt.Errorf("%w: handshake longer than %d bytes", errBadFrame, cap(buf))
		}
		n, err := sc.tc.Read(buf[len(buf):cap(buf)])
		if n > 0 {
			if gerr := sc.guard.feed(buf[len(buf) : len(buf)+n]); gerr != nil {
				return gerr
			}
			buf = buf[:len(buf)+n]
		}
		if err != nil {
			return err
		}
	}
	sc.replay = buf
	sc.hsDone.Store(true)
	_ = sc.tc.SetDeadline(time.Time{})
	var onDrain func()
	var mailbox string
	if id := sc.guard.identity; id != "" {
		mailbox = mailboxTopic(id)
		if o.onDrain != nil {
			onDrain = func() { o.onDrain(id) }
		}
	}
	sc.out = newOutQueue(sc, o.bufferLimit(), mailbox, onDrain)
	return nil
}

// smListener accepts in its own goroutine, prepares each connection in another, and hands
// zmq4's accept loop only connections that are ready.
type smListener struct {
	tl   *net.TCPListener
	opts *connOpts

	ready chan *smConn
	// preparing: connections in their preparation and since when (guarded by mu); closed by
	// Close, so it never waits for a handshake deadline.
	preparing map[*smConn]time.Time

	mu    sync.Mutex
	conns map[*smConn]*progress

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
	failDelay time.Duration // only touched by zmq4's accept goroutine
}

type progress struct {
	acked uint64
	since time.Time
}

func (l *smListener) Addr() net.Addr { return l.tl.Addr() }

func (l *smListener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := l.tl.AcceptTCP()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			// EMFILE and the like: pace the retries, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-l.done:
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		sc := newSMConn(c, l.opts, true)
		l.mu.Lock()
		select {
		case <-l.done:
			l.mu.Unlock()
			sc.Close()
			return
		default:
		}
		// At the bound, the oldest connection still in its handshake makes room: a flood of
		// stalled connections then costs each of them its slot within the flood's own pace,
		// while a real peer's handshake (well under a millisecond) completes between them.
		var oldest *smConn
		if len(l.preparing) >= l.opts.pendingLimit() {
			for p, since := range l.preparing {
				if oldest == nil || since.Before(l.preparing[oldest]) {
					oldest = p
				}
			}
			delete(l.preparing, oldest)
		}
		l.preparing[sc] = time.Now()
		l.mu.Unlock()
		if oldest != nil {
			oldest.reject(errTooManyHandshakes)
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			err := l.prepare(sc)
			l.mu.Lock()
			delete(l.preparing, sc)
			l.mu.Unlock()
			if err != nil {
				var ne net.Error
				switch {
				case errors.As(err, &ne) && ne.Timeout():
					if l.opts.hsTimeouts != nil {
						l.opts.hsTimeouts.Add(1)
					}
					sc.Close()
				case errors.Is(err, errAuth), errors.Is(err, errBadFrame), errors.Is(err, errBadGreeting), errors.Is(err, errFrameTooLarge):
					sc.reject(err)
				default:
					sc.Close() // the peer went away
				}
				return
			}
			select {
			case l.ready <- sc:
			case <-l.done:
				sc.Close()
			}
		}()
	}
}

var errTooManyHandshakes = errors.New("mesh: too many connections in their handshake")

// Accept returns the next prepared connection.
func (l *smListener) Accept() (net.Conn, error) {
	select {
	case sc := <-l.ready:
		l.failDelay = 0
		if l.opts.conns != nil {
			l.opts.conns.add(sc)
		}
		if l.opts.stall > 0 {
			l.mu.Lock()
			l.conns[sc] = &progress{since: time.Now()}
			l.mu.Unlock()
		}
		return sc, nil
	case <-l.done:
		// zmq4's accept loop retries at once on any error until its context ends: pace it.
		l.failDelay = min(max(2*l.failDelay, 5*time.Millisecond), time.Second)
		time.Sleep(l.failDelay)
		return nil, net.ErrClosed
	}
}

func (l *smListener) Close() error {
	err := l.tl.Close()
	l.closeOnce.Do(func() {
		l.mu.Lock()
		close(l.done)
		for sc := range l.preparing {
			sc.Close()
		}
		l.mu.Unlock()
	})
	l.wg.Wait()
	return err
}

func (l *smListener) watchdog() {
	defer l.wg.Done()
	tick := time.NewTicker(max(l.opts.stall/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-l.done:
			return
		case now := <-tick.C:
			l.check(now)
		}
	}
}

func (l *smListener) check(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c, p := range l.conns {
		if c.closed.Load() {
			delete(l.conns, c)
			continue
		}
		queued, acked, err := sendProgress(c.tc)
		if err != nil {
			delete(l.conns, c)
			continue
		}
		if queued == 0 || acked != p.acked {
			p.acked, p.since = acked, now
			continue
		}
		if now.Sub(p.since) >= l.opts.stall {
			if l.opts.stalled != nil {
				l.opts.stalled.Add(1)
			}
			c.Close()
			delete(l.conns, c)
		}
	}
}

var errNoProgressInfo = errors.New("mesh transport: no TCP progress information")
