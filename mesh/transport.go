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
	"golang.org/x/sys/unix"
)

// sockmesh's own zmq4 transport, registered once per process as "smtcp". It fixes, outside the
// library, the zmq4 v0.17.0 behaviours that let one silent or frozen peer stall a node
// (reference/zmq4-serf-measured.md 1.4, 1.5, 3.3):
//
//   - Handshake deadline, accept and dial side: a connection that has not delivered the peer's
//     64-byte ZMTP greeting and its first command frame (READY under NULL security) within the
//     deadline is closed. zmq4's accept loop runs the handshake inline, so without this one
//     silent TCP client blocks every later peer; and Dial to a frozen peer hangs forever. Closing
//     (rather than a read deadline) gives zmq4 a non-timeout error, which it acts on, and also
//     frees the descriptor of a bad-greeting connection that zmq4 would otherwise hold until GC.
//   - Stall watchdog, accept (PUB) side: one goroutine per listener checks every stall/4 whether
//     an accepted connection has bytes queued (SIOCOUTQ) while the peer's acknowledged byte
//     count (TCP_INFO) has not moved for the stall timeout, and closes it. zmq4's PUB writes to
//     every peer from one goroutine with no deadline; a peer that stops reading would otherwise
//     stop delivery to all peers.
//   - Byte counting on reads, per link, for the received-bytes metrics.
//
// The connection type embeds *net.TCPConn and overrides only Read (made as raw system calls,
// see rawread.go) and Close, so that net.Buffers.WriteTo still finds writeBuffers and zmq4's
// SendMulti stays one writev (an ordinary system call: a raw one would need zmq4's frames
// gathered again behind Write).
//
// Settings travel in the context zmq4 passes to Listen and Dial (the socket's context, derived
// from the one given to NewPub/NewSub), so one registered transport serves every Mesh in the
// process with its own settings.

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
	// rx, if set, counts the bytes read from every connection of this socket.
	rx *atomic.Uint64
	// onDial, if set, is called with every dialled connection before the ZMTP handshake.
	onDial func(*smConn)
	// stalled counts connections closed by the watchdog.
	stalled *atomic.Uint64
	// hsTimeouts counts connections closed by the handshake deadline.
	hsTimeouts *atomic.Uint64
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
	sc := newSMConn(tc, o)
	// The socket's context ends when the socket is closed: also abort a handshake in flight.
	stop := context.AfterFunc(ctx, func() {
		if !sc.hsDone.Load() {
			sc.Close()
		}
	})
	sc.onHandshake = func() { stop() }
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
		TCPListener: l.(*net.TCPListener),
		opts:        optsFrom(ctx),
		conns:       make(map[*smConn]*progress),
		done:        make(chan struct{}),
	}
	if sl.opts.stall > 0 {
		sl.wg.Add(1)
		go sl.watchdog()
	}
	return sl, nil
}

// smConn is a TCP connection with a handshake deadline and byte counting.
type smConn struct {
	*net.TCPConn
	opts   *connOpts
	hsDone atomic.Bool
	closed atomic.Bool
	timer  *time.Timer
	// hs parses the peer's greeting and first frame; touched only by the reading goroutine.
	hs          hsParser
	onHandshake func()
	raw         *rawReader // nil: read through TCPConn
}

func newSMConn(tc *net.TCPConn, o *connOpts) *smConn {
	_ = tc.SetNoDelay(true)
	c := &smConn{TCPConn: tc, opts: o, raw: newRawReader(tc)}
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

// Read counts bytes and, until the handshake is complete, parses what the peer sent.
func (c *smConn) Read(p []byte) (int, error) {
	var n int
	var err error
	if c.raw != nil {
		n, err = c.raw.Read(p)
	} else {
		n, err = c.TCPConn.Read(p)
	}
	if n > 0 {
		if c.opts.rx != nil {
			c.opts.rx.Add(uint64(n))
		}
		if !c.hsDone.Load() && c.hs.feed(p[:n]) {
			c.hsDone.Store(true)
			c.timer.Stop()
			if c.onHandshake != nil {
				c.onHandshake()
			}
		}
	}
	return n, err
}

// Close closes the connection once.
func (c *smConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	// The handshake timer is left to fire (a no-op on a closed conn): Close may run in the
	// timer's own callback, before newSMConn has even stored it.
	return c.TCPConn.Close()
}

// hsParser recognises the end of the peer's part of a ZMTP 3 handshake under NULL security: a
// 64-byte greeting, then one frame (the READY command).
type hsParser struct {
	greet  int // greeting bytes seen
	hdr    [9]byte
	nhdr   int    // frame header bytes seen
	need   int    // header length once known (2 or 9)
	body   uint64 // body bytes still to see, once the header is complete
	inBody bool
}

const zmtpGreetingLen = 64

func (h *hsParser) feed(p []byte) bool {
	for len(p) > 0 {
		if h.greet < zmtpGreetingLen {
			k := min(zmtpGreetingLen-h.greet, len(p))
			h.greet += k
			p = p[k:]
			continue
		}
		if !h.inBody {
			h.hdr[h.nhdr] = p[0]
			h.nhdr++
			p = p[1:]
			if h.nhdr == 1 {
				h.need = 2
				if h.hdr[0]&0x02 != 0 { // long frame
					h.need = 9
				}
			}
			if h.nhdr < h.need {
				continue
			}
			if h.need == 2 {
				h.body = uint64(h.hdr[1])
			} else {
				var v uint64
				for _, b := range h.hdr[1:9] {
					v = v<<8 | uint64(b)
				}
				h.body = v
			}
			h.inBody = true
			if h.body == 0 {
				return true
			}
			continue
		}
		k := uint64(len(p))
		if k >= h.body {
			return true
		}
		h.body -= k
		p = nil
	}
	return false
}

// smListener wraps a TCP listener: handshake deadlines on accepted connections and the stall
// watchdog over them.
type smListener struct {
	*net.TCPListener
	opts *connOpts

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

func (l *smListener) Accept() (net.Conn, error) {
	c, err := l.TCPListener.AcceptTCP()
	if err != nil {
		// zmq4's accept loop retries at once on any error: pace it (EMFILE, or a listener
		// closed before the socket's context ends), as net/http does.
		l.failDelay = min(max(2*l.failDelay, 5*time.Millisecond), time.Second)
		select {
		case <-l.done:
		case <-time.After(l.failDelay):
		}
		return nil, err
	}
	l.failDelay = 0
	sc := newSMConn(c, l.opts)
	if l.opts.stall > 0 {
		l.mu.Lock()
		l.conns[sc] = &progress{since: time.Now()}
		l.mu.Unlock()
	}
	return sc, nil
}

func (l *smListener) Close() error {
	err := l.TCPListener.Close()
	l.closeOnce.Do(func() { close(l.done) })
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
		queued, acked, err := sendProgress(c.TCPConn)
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

// sendProgress returns the bytes queued in the kernel send buffer (not yet acknowledged) and
// the number of bytes the peer has acknowledged so far.
func sendProgress(c *net.TCPConn) (queued int, acked uint64, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var ierr error
	cerr := rc.Control(func(fd uintptr) {
		queued, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		if ierr != nil {
			return
		}
		var info *unix.TCPInfo
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if ierr == nil {
			acked = info.Bytes_acked
		}
	})
	if cerr != nil {
		return 0, 0, cerr
	}
	if ierr != nil {
		return 0, 0, errors.Join(errNoProgressInfo, ierr)
	}
	return queued, acked, nil
}
