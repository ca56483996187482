//go:build linux

package netpoll

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// What the reader prefetches comes out of the next reads in order, "nothing yet" is told
// apart from the peer's close, and the close stays visible.
func TestPrefetchConnHandsOutWhatItRead(t *testing.T) {
	c, peer := tcpPair(t)
	pc := NewPrefetchConn(c)
	ps := NewConn(c)
	if pc.Fill(&ps) || pc.Pending() {
		t.Fatal("fill found bytes on a silent connection")
	}
	peer.Write([]byte("hello"))
	deadline := time.Now().Add(2 * time.Second)
	for !pc.Fill(&ps) {
		if time.Now().After(deadline) {
			t.Fatal("fill never saw the bytes")
		}
		time.Sleep(time.Millisecond)
	}
	b := make([]byte, 2)
	if n, err := pc.Read(b); n != 2 || err != nil || string(b) != "he" {
		t.Fatalf("first read: %q %v", b[:n], err)
	}
	if !pc.Pending() {
		t.Fatal("the rest of the prefetched bytes is not pending")
	}
	b = make([]byte, 10)
	if n, err := pc.Read(b); n != 3 || err != nil || string(b[:n]) != "llo" {
		t.Fatalf("second read: %q %v", b[:n], err)
	}
	peer.Write([]byte("!"))
	peer.Close()
	time.Sleep(50 * time.Millisecond)
	got, err := io.ReadAll(readerFunc(func(p []byte) (int, error) {
		if !pc.Pending() {
			pc.Fill(&ps)
		}
		return pc.Read(p)
	}))
	if string(got) != "!" || err != nil {
		t.Fatalf("after the close: %q %v, want the last byte and then EOF", got, err)
	}
	if n, err := pc.Read(b); n != 0 || err != io.EOF {
		t.Fatalf("read after EOF: %d %v", n, err)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// tcpPair is a connected pair of loopback TCP connections (server side, client side).
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

// The raw write (no runtime system call, see rawRead) still writes everything in order when
// the send buffer fills and waits for the reader in Go's netpoller, keeps the write
// deadline, and reports a dead peer as an error.
func TestRawWriteWaitsForRoomAndKeepsDeadlines(t *testing.T) {
	c, peer := tcpPair(t)
	ps := NewConn(c)
	want := make([]byte, 16<<20) // far more than the socket buffers hold
	for i := range want {
		want[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() {
		ok, err := ps.Write(want)
		if !ok {
			err = errors.New("no raw write on a TCP connection")
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // the writer is waiting for room by now
	select {
	case err := <-done:
		t.Fatalf("the write returned before the peer read anything: %v", err)
	default:
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the peer read other bytes than were written")
	}

	// Nobody reads now: the deadline ends the write.
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := ps.Write(want); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past the deadline: %v, want a deadline error", err)
	}
	c.SetWriteDeadline(time.Time{})

	// The peer is gone (reset): the write fails with the system's error.
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	time.Sleep(50 * time.Millisecond)
	var err error
	for range 10 {
		if _, err = ps.Write([]byte("x")); err != nil {
			break
		}
	}
	var se *os.SyscallError
	if !errors.As(err, &se) || se.Syscall != "write" {
		t.Fatalf("write to a reset connection: %v, want a write system call error", err)
	}
}

// The raw read waits for bytes (in the netpoller, keeping the read deadline) and tells the
// peer's close as io.EOF; the prefetching connection reads through it once it has one.
func TestRawReadWaitsAndSeesTheEnd(t *testing.T) {
	c, peer := tcpPair(t)
	ps := NewConn(c)
	pc := &PrefetchConn{Conn: c, ps: &ps}
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	b := make([]byte, 16)
	if _, err := pc.Read(b); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read of a silent connection past the deadline: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	go func() {
		time.Sleep(50 * time.Millisecond)
		peer.Write([]byte("late"))
		peer.Close()
	}()
	got, err := io.ReadAll(pc)
	if string(got) != "late" || err != nil {
		t.Fatalf("read %q, %v; want what the peer wrote, then the end", got, err)
	}
}
