package mesh

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

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
