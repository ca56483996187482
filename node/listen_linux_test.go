package node

import (
	"bufio"
	"context"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The client listener defers accepts until the request arrives (TCP_DEFER_ACCEPT), and a
// client that takes its time before sending the request is still served.
func TestClientListenerDefersAcceptUntilRequest(t *testing.T) {
	n := startTestNode(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	rc, err := n.wsLn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if v <= 0 {
		t.Fatalf("TCP_DEFER_ACCEPT = %d on the client listener, want > 0", v)
	}

	c, err := net.Dial("tcp", n.wsLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(300 * time.Millisecond) // connected, silent
	host := n.wsLn.Addr().String()
	req := "GET /socketcluster/ HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 101") {
		t.Fatalf("after a silent start: %q, %v; want the upgrade", line, err)
	}
}
