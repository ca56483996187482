package netpoll

import (
	"errors"
	"net"
	"sync"
	"syscall"
)

// PrefetchConn is a socket's connection as gorilla sees it: reads first hand out what the
// socket's reader prefetched. The reader, before it would wait for the network (to answer
// what it has read, or to park), asks the kernel for bytes without waiting; when some come,
// they are kept here for the next read, so that looking costs no extra system call (a
// MSG_PEEK and then the read were two per inbound burst).
//
// Read and fill are called by the socket's reader goroutine only (a parked socket's next
// reader comes after it, through s.mu); everything else goes to the connection.
type PrefetchConn struct {
	net.Conn
	buf *[]byte // prefetched bytes from off on; pooled, nil when none
	off int
	err error // what the prefetch read ended with (io.EOF: the peer closed); sticky
	// ps, once the socket exists, reads the descriptor without entering a system call the
	// runtime knows of (see rawRead); nil: reads go to the connection.
	ps *Conn
}

// PrefetchSize is the most one prefetch reads: the size of a connection's read buffer (an
// idle connection keeps one).
const PrefetchSize = 512

var prefetchBufs = sync.Pool{New: func() any { b := make([]byte, PrefetchSize); return &b }}

// NewPrefetchConn wraps c.
func NewPrefetchConn(c net.Conn) *PrefetchConn { return &PrefetchConn{Conn: c} }

// ReadRaw has reads go through ps (the connection's descriptor) from now on.
func (p *PrefetchConn) ReadRaw(ps *Conn) { p.ps = ps }

// ReadsRaw reports whether reads go through ps.
func (p *PrefetchConn) ReadsRaw(ps *Conn) bool { return p.ps == ps }

var errNoSyscallConn = errors.New("sockmesh: connection has no descriptor")

// SyscallConn lets the poller reach the descriptor (a TLS connection has none to offer).
func (p *PrefetchConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := p.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errNoSyscallConn
}

// Pending reports whether the next Read returns without waiting for the network.
func (p *PrefetchConn) Pending() bool { return p.buf != nil || p.err != nil }

func (p *PrefetchConn) Read(b []byte) (int, error) {
	if p.buf != nil {
		n := copy(b, (*p.buf)[p.off:])
		p.off += n
		if p.off == len(*p.buf) {
			*p.buf = (*p.buf)[:cap(*p.buf)]
			prefetchBufs.Put(p.buf)
			p.buf, p.off = nil, 0
		}
		return n, nil
	}
	if p.err != nil {
		return 0, p.err
	}
	if p.ps != nil {
		if n, ok, err := p.ps.Read(b); ok {
			return n, err
		}
	}
	return p.Conn.Read(b)
}

// Fill reads without waiting; true when it got bytes, the end of the stream or an error
// (each of them means the next read does not wait).
func (p *PrefetchConn) Fill(ps *Conn) bool {
	bp := prefetchBufs.Get().(*[]byte)
	n, ok, err := ps.TryRead(*bp)
	switch {
	case !ok: // cannot read this way: "maybe", and the caller reads normally
		prefetchBufs.Put(bp)
		return true
	case err != nil:
		prefetchBufs.Put(bp)
		p.err = err
		return true
	case n == 0:
		prefetchBufs.Put(bp)
		return false
	}
	*bp = (*bp)[:n]
	p.buf, p.off = bp, 0
	return true
}
