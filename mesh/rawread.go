package mesh

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawReader reads a nonblocking socket with raw system calls: the runtime is not told a
// system call is under way, so it neither wakes sysmon for it nor lets sysmon hand the P
// to another thread when the call is slow only because the core is shared. With several
// nodes on one core every link read used to start that round of thread switches. When
// there is nothing to read, the goroutine waits in Go's netpoller as any read would.
//
// One goroutine reads a connection at a time (zmq4's reader), so one rawReader per
// connection serves every read without allocating.
type rawReader struct {
	rc    syscall.RawConn
	buf   []byte
	n     int
	errno unix.Errno
	fn    func(fd uintptr) bool
}

func newRawReader(c *net.TCPConn) *rawReader {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawReader{rc: rc}
	r.fn = r.read
	return r
}

func (r *rawReader) read(fd uintptr) bool {
	for {
		n, _, errno := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)))
		if errno == unix.EINTR {
			continue
		}
		r.n, r.errno = int(n), errno
		return errno != unix.EAGAIN
	}
}

// Read reads into p, waiting for the socket when nothing is there yet.
func (r *rawReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.buf, r.n, r.errno = p, 0, 0
	err := r.rc.Read(r.fn)
	r.buf = nil
	switch {
	case err != nil:
		return 0, err
	case r.errno != 0:
		return 0, os.NewSyscallError("read", r.errno)
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}
