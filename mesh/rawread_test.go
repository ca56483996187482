//go:build linux

package mesh

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// A link connection reads raw: its reads wait for bytes in the netpoller (deadlines apply), hand out exactly
// what the peer wrote, and end with io.EOF when the peer closes.
func TestRawReaderWaitsAndSeesTheEnd(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := newSMConn(c, &connOpts{}, false)
	if !sc.raw.Raw() {
		t.Fatal("a link connection does not read raw")
	}
	r := readerFunc(func(p []byte) (int, error) { n, _, err := sc.raw.Read(p); return n, err })
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := r.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read of a silent link past the deadline: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		peer.Write(want)
		peer.Close()
	}()
	got, err := io.ReadAll(r)
	if err != nil || string(got) != string(want) {
		t.Fatalf("read %d bytes, %v; want the %d the peer wrote, then the end", len(got), err, len(want))
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
