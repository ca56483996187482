package node

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// deferAccept makes the kernel hand over a client connection only once its first bytes
// (the upgrade request) have arrived (TCP_DEFER_ACCEPT), so the node reads the request at
// once instead of finding nothing, parking the goroutine and being woken for it: one
// system call and one scheduler round trip less per connection. A client that connects
// and sends nothing is kept out of the accept queue for up to the given seconds, then
// handed over as before (the handshake timeout then applies).
func deferAccept(seconds int) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, seconds)
		})
		if err != nil {
			return err
		}
		return serr
	}
}
