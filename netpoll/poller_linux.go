package netpoll

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Poller lets an idle connection exist without a goroutine. A reader that finds nothing to
// read parks its socket: the socket's descriptor is armed (one-shot) in the poller's epoll
// set and the goroutine ends; when bytes or the peer's close arrive, the poller starts a
// new reader. Go's own netpoller keeps its registration; this is a second, independent
// epoll set, used only to learn "readable" for parked sockets.
//
// With 10,000 idle connections this removes 10,000 goroutine stacks (2-8 KiB each) from the
// node's memory; a busy connection pays one epoll_ctl per inbound burst.
type Poller struct {
	epfd int
	// file wraps epfd for Go's own netpoller: the poller waits for its epoll set to become
	// readable the way any goroutine waits for a socket, never in a blocking epoll_wait
	// (a goroutine in a blocking system call keeps its P until sysmon takes it back, which
	// with one P stalled every other goroutine for up to 10 ms).
	file  *os.File
	rc    syscall.RawConn
	mu    sync.Mutex
	wakes map[uint64]func()
	next  uint64
	done  chan struct{}
}

// NewPoller starts a poller and its goroutine.
func NewPoller() (*Poller, error) {
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
	p := &Poller{epfd: epfd, file: f, rc: rc, wakes: map[uint64]func(){}, next: 1, done: make(chan struct{})}
	go p.run()
	return p, nil
}

func setToken(ev *unix.EpollEvent, t uint64) { ev.Fd, ev.Pad = int32(uint32(t)), int32(uint32(t>>32)) }
func token(ev *unix.EpollEvent) uint64       { return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32 }

func (p *Poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		var n int
		err := p.rc.Read(func(fd uintptr) bool {
			var e error
			n, e = rawEpollWait(fd, events)
			return e == nil && n > 0 // nothing ready: wait in Go's netpoller
		})
		if err != nil {
			return // closed
		}
		for i := range events[:n] {
			p.mu.Lock()
			wake := p.wakes[token(&events[i])]
			p.mu.Unlock()
			if wake != nil {
				wake()
			}
		}
	}
}

// Close stops the poller goroutine; parked connections stay parked (their owner aborts them).
func (p *Poller) Close() {
	_ = p.file.Close()
	<-p.done
}

// Conn is one connection's descriptor as the poller and the raw reads and writes use it.
type Conn struct {
	rc    syscall.RawConn // nil: the connection cannot be parked (TLS)
	token uint64          // 0 until first parked
}

// NewConn reaches c's descriptor; a connection without one (TLS) gives a Conn whose methods
// all answer "not this way" (ok false).
func NewConn(c net.Conn) Conn {
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return Conn{rc: rc}
		}
	}
	return Conn{}
}

// Raw reports whether the connection has a descriptor: it can be parked and read and written
// with raw system calls.
func (ps *Conn) Raw() bool { return ps.rc != nil }

// The descriptors are nonblocking (Go's netpoller made them so), so a read or write returns
// at once and is made as a raw system call, without telling the runtime it entered one.
// A goroutine in an ordinary system call gives sysmon its P to take back after 20 µs; with
// several processes sharing a core, a write is often preempted for longer than that, and
// each time the P went to another thread and back (with three nodes on one core, half of
// the core's 13.6k context switches a second were sysmon waking to do it). Holding the P for
// the few microseconds of a nonblocking call costs the other goroutines nothing they would
// not have waited anyway.
func rawRead(fd uintptr, b []byte) (int, unix.Errno) {
	for {
		r, _, errno := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if errno != unix.EINTR {
			return int(r), errno
		}
	}
}

// rawIO is a read or write of a socket through its RawConn (see rawRead), waiting in Go's
// netpoller when the socket is not ready (deadlines apply as for any read or write), except
// for a read that must not wait (tryRead). Pooled, so that passing its methods to RawConn
// allocates nothing (a closure would be an allocation per call).
type rawIO struct {
	buf        []byte
	n          int
	errno      unix.Errno
	readFn     func(fd uintptr) bool
	tryReadFn  func(fd uintptr) bool
	writeFn    func(fd uintptr) bool
	tryWriteFn func(fd uintptr) bool
}

var rawIOs = sync.Pool{New: func() any {
	p := &rawIO{}
	p.readFn, p.tryReadFn, p.writeFn, p.tryWriteFn = p.read, p.tryRead, p.write, p.tryWrite
	return p
}}

func (p *rawIO) read(fd uintptr) bool {
	p.n, p.errno = rawRead(fd, p.buf)
	return p.errno != unix.EAGAIN // nothing yet: wait for the socket, then again
}

func (p *rawIO) tryRead(fd uintptr) bool {
	p.n, p.errno = rawRead(fd, p.buf)
	return true // never wait
}

// write uses sendto rather than write(2): it goes to the socket layer without the VFS's
// checks and file-position lock (measured 1,030 -> 950 ns per 100-byte loopback send), and
// MSG_NOSIGNAL turns a reset peer into EPIPE without raising SIGPIPE.
func (p *rawIO) write(fd uintptr) bool {
	for p.n < len(p.buf) {
		b := p.buf[p.n:]
		r, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_NOSIGNAL, 0, 0)
		switch errno {
		case 0:
			p.n += int(r)
		case unix.EINTR:
		case unix.EAGAIN:
			return false // the send buffer is full: wait until it has room
		default:
			p.errno = errno
			return true
		}
	}
	return true
}

func (p *rawIO) tryWrite(fd uintptr) bool {
	p.write(fd)
	return true // never wait: a full send buffer ends the attempt
}

// CanTry reports whether TryWrite works on this socket (a plain TCP connection).
func (ps *Conn) CanTry() bool { return ps.rc != nil }

// TryWrite writes what the socket takes of b now, without waiting for room: n bytes were
// written; ok is false when the socket cannot be written this way (then nothing was).
func (ps *Conn) TryWrite(b []byte) (n int, ok bool, err error) {
	if ps.rc == nil {
		return 0, false, nil
	}
	if len(b) == 0 {
		return 0, true, nil
	}
	p := rawIOs.Get().(*rawIO)
	p.buf, p.n, p.errno = b, 0, 0
	cerr := ps.rc.Write(p.tryWriteFn)
	n, errno := p.n, p.errno
	p.buf = nil
	rawIOs.Put(p)
	if cerr != nil {
		return n, true, cerr
	}
	if errno != 0 {
		return n, true, os.NewSyscallError("write", errno)
	}
	return n, true, nil
}

// Read is Read of the socket (ok false: it has no descriptor, use the connection).
func (ps *Conn) Read(b []byte) (n int, ok bool, err error) {
	return ps.readRaw(b, true)
}

// TryRead reads into b what the kernel has, without waiting: n == 0 and err == nil when
// there is nothing yet; io.EOF when the peer has closed. ok is false when the socket cannot
// be read this way (TLS).
func (ps *Conn) TryRead(b []byte) (n int, ok bool, err error) {
	return ps.readRaw(b, false)
}

// readRaw is a raw read: the peer's close is io.EOF; without wait, "nothing yet" is n == 0
// and no error.
func (ps *Conn) readRaw(b []byte, wait bool) (n int, ok bool, err error) {
	if ps.rc == nil || len(b) == 0 {
		return 0, false, nil
	}
	p := rawIOs.Get().(*rawIO)
	p.buf, p.n, p.errno = b, 0, 0
	fn := p.tryReadFn
	if wait {
		fn = p.readFn
	}
	cerr := ps.rc.Read(fn)
	n, errno := p.n, p.errno
	p.buf = nil
	rawIOs.Put(p)
	switch {
	case cerr != nil:
		return 0, true, cerr
	case errno == unix.EAGAIN:
		return 0, true, nil
	case errno != 0:
		return 0, true, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, true, io.EOF
	}
	return n, true, nil
}

// Write is Write of the socket: all of b, or an error (ok false: it has no descriptor).
func (ps *Conn) Write(b []byte) (ok bool, err error) {
	if ps.rc == nil {
		return false, nil
	}
	if len(b) == 0 {
		return true, nil
	}
	p := rawIOs.Get().(*rawIO)
	p.buf, p.n, p.errno = b, 0, 0
	cerr := ps.rc.Write(p.writeFn)
	errno := p.errno
	p.buf = nil
	rawIOs.Put(p)
	if cerr != nil {
		return true, cerr
	}
	if errno != 0 {
		return true, os.NewSyscallError("write", errno)
	}
	return true, nil
}

// Arm registers (or re-arms) ps's descriptor for one readable event, after which the poller
// calls wake (once per event; the wake given first is kept); false when it could not (the
// connection is closed, for example), in which case the reader must not park.
func (p *Poller) Arm(ps *Conn, wake func()) bool {
	op := unix.EPOLL_CTL_MOD
	if ps.token == 0 {
		p.mu.Lock()
		ps.token = p.next
		p.next++
		p.wakes[ps.token] = wake
		p.mu.Unlock()
		op = unix.EPOLL_CTL_ADD
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setToken(&ev, ps.token)
	var cerr error
	err := ps.rc.Control(func(fd uintptr) { cerr = rawEpollCtl(p.epfd, op, fd, &ev) })
	return err == nil && cerr == nil
}

// Forget drops ps's registration (at cleanup, before the descriptor is closed).
func (p *Poller) Forget(ps *Conn) {
	if ps.token == 0 {
		return
	}
	_ = ps.rc.Control(func(fd uintptr) { _ = rawEpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil) })
	p.mu.Lock()
	delete(p.wakes, ps.token)
	p.mu.Unlock()
}

// rawEpollWait collects the ready events without waiting, and rawEpollCtl changes the set;
// neither blocks, so both are raw system calls (see rawRead).
func rawEpollWait(epfd uintptr, events []unix.EpollEvent) (int, error) {
	for {
		r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, epfd, uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
		switch errno {
		case 0:
			return int(r), nil
		case unix.EINTR:
		default:
			return 0, errno
		}
	}
}

func rawEpollCtl(epfd, op int, fd uintptr, ev *unix.EpollEvent) error {
	_, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), fd, uintptr(unsafe.Pointer(ev)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
