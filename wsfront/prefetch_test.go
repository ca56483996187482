//go:build linux

package wsfront

import (
	"io"
	"net"
	"testing"
	"time"
)

// What the reader prefetches comes out of the next reads in order, "nothing yet" is told
// apart from the peer's close, and the close stays visible.
func TestPrefetchConnHandsOutWhatItRead(t *testing.T) {
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
	defer c.Close()
	pc := &prefetchConn{Conn: c}
	ps := newPollState(c)
	if pc.fill(&ps) || pc.pending() {
		t.Fatal("fill found bytes on a silent connection")
	}
	peer.Write([]byte("hello"))
	deadline := time.Now().Add(2 * time.Second)
	for !pc.fill(&ps) {
		if time.Now().After(deadline) {
			t.Fatal("fill never saw the bytes")
		}
		time.Sleep(time.Millisecond)
	}
	b := make([]byte, 2)
	if n, err := pc.Read(b); n != 2 || err != nil || string(b) != "he" {
		t.Fatalf("first read: %q %v", b[:n], err)
	}
	if !pc.pending() {
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
		if !pc.pending() {
			pc.fill(&ps)
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
