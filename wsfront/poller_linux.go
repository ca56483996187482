package wsfront

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// poller lets an idle connection exist without a goroutine. A reader that finds nothing to
// read parks its socket: the socket's descriptor is armed (one-shot) in the poller's epoll
// set and the goroutine ends; when bytes or the peer's close arrive, the poller starts a
// new reader. Go's own netpoller keeps its registration; this is a second, independent
// epoll set, used only to learn "readable" for parked sockets.
//
// With 10,000 idle connections this removes 10,000 goroutine stacks (2-8 KiB each) from the
// node's memory; a busy connection pays one epoll_ctl per inbound burst.
type poller struct {
	epfd int
	// file wraps epfd for Go's own netpoller: the poller waits for its epoll set to become
	// readable the way any goroutine waits for a socket, never in a blocking epoll_wait
	// (a goroutine in a blocking system call keeps its P until sysmon takes it back, which
	// with one P stalled every other goroutine for up to 10 ms).
	file  *os.File
	rc    syscall.RawConn
	mu    sync.Mutex
	socks map[uint64]*Socket
	next  uint64
	done  chan struct{}
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, err
	}
	f := os.NewFile(uintptr(epfd), "sockmesh-poller")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &poller{epfd: epfd, file: f, rc: rc, socks: map[uint64]*Socket{}, next: 1, done: make(chan struct{})}
	go p.run()
	return p, nil
}

func setToken(ev *unix.EpollEvent, t uint64) { ev.Fd, ev.Pad = int32(uint32(t)), int32(uint32(t>>32)) }
func token(ev *unix.EpollEvent) uint64       { return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32 }

func (p *poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		var n int
		err := p.rc.Read(func(fd uintptr) bool {
			var e error
			n, e = unix.EpollWait(int(fd), events, 0)
			return e == nil && n > 0 // nothing ready: wait in Go's netpoller
		})
		if err != nil {
			return // closed
		}
		for i := range events[:n] {
			p.mu.Lock()
			s := p.socks[token(&events[i])]
			p.mu.Unlock()
			if s != nil {
				s.unpark()
			}
		}
	}
}

// close stops the poller goroutine; parked sockets stay parked (their owner aborts them).
func (p *poller) close() {
	_ = p.file.Close()
	<-p.done
}

// pollState is a socket's registration with the poller.
type pollState struct {
	rc    syscall.RawConn // nil: the connection cannot be parked (TLS)
	token uint64          // 0 until first parked
}

func newPollState(c net.Conn) pollState {
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return pollState{rc: rc}
		}
	}
	return pollState{}
}

// tryReader is one read of a socket without waiting (tryRead). Pooled, so that passing its
// method to RawConn.Read allocates nothing (a closure would be an allocation per read).
type tryReader struct {
	buf   []byte
	n     int
	errno unix.Errno
	fn    func(fd uintptr) bool
}

var tryReaders = sync.Pool{New: func() any {
	p := &tryReader{}
	p.fn = p.read
	return p
}}

func (p *tryReader) read(fd uintptr) bool {
	for {
		r, _, errno := unix.Syscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p.buf[0])), uintptr(len(p.buf)))
		p.n, p.errno = int(r), errno
		if p.errno != unix.EINTR {
			return true // never wait
		}
	}
}

// tryRead reads into b what the kernel has, without waiting: n == 0 and err == nil when
// there is nothing yet; io.EOF when the peer has closed. ok is false when the socket cannot
// be read this way (TLS).
func (ps *pollState) tryRead(b []byte) (n int, ok bool, err error) {
	if ps.rc == nil || len(b) == 0 {
		return 0, false, nil
	}
	p := tryReaders.Get().(*tryReader)
	p.buf = b
	cerr := ps.rc.Read(p.fn)
	n, errno := p.n, p.errno
	p.buf = nil
	tryReaders.Put(p)
	switch {
	case cerr != nil:
		return 0, true, cerr
	case errno == unix.EAGAIN:
		return 0, true, nil
	case errno != 0:
		return 0, true, errno
	case n == 0:
		return 0, true, io.EOF
	}
	return n, true, nil
}

// arm registers (or re-arms) s's descriptor for one readable event; false when it could
// not (the connection is closed, for example), in which case the reader must not park.
func (p *poller) arm(s *Socket) bool {
	ps := &s.poll
	op := unix.EPOLL_CTL_MOD
	if ps.token == 0 {
		p.mu.Lock()
		ps.token = p.next
		p.next++
		p.socks[ps.token] = s
		p.mu.Unlock()
		op = unix.EPOLL_CTL_ADD
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setToken(&ev, ps.token)
	var cerr error
	err := ps.rc.Control(func(fd uintptr) { cerr = unix.EpollCtl(p.epfd, op, int(fd), &ev) })
	return err == nil && cerr == nil
}

// forget drops s's registration (at cleanup, before the descriptor is closed).
func (p *poller) forget(s *Socket) {
	ps := &s.poll
	if ps.token == 0 {
		return
	}
	_ = ps.rc.Control(func(fd uintptr) { _ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	p.mu.Lock()
	delete(p.socks, ps.token)
	p.mu.Unlock()
}
