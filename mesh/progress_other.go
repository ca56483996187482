//go:build !linux

package mesh

import "net"

// sendProgress: the stall watchdog needs the kernel's send queue and the peer's acknowledged
// bytes (SIOCOUTQ, TCP_INFO), which only Linux gives; elsewhere (development builds) it
// reports no information and the watchdog leaves the connection alone.
func sendProgress(*net.TCPConn) (queued int, acked uint64, err error) {
	return 0, 0, errNoProgressInfo
}
