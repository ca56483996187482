package bench

import (
	"encoding/binary"
	"errors"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/wsframe"
)

// tcpConnPair returns the two ends of a loopback TCP connection.
func tcpConnPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// readerConn is a conn whose reader runs on c, waiting for the answer to call 7.
func readerConn(c net.Conn) (*conn, chan error) {
	waiter := make(chan error, 1)
	cn := &conn{r: &runner{base: time.Now(), wire: socketCluster}, nc: c, rsize: 512, calls: map[int64]chan error{7: waiter}, done: make(chan struct{})}
	go cn.readLoop()
	return cn, waiter
}

// The load generator's own frame reader, fed what a server may send in one write: a ping, a
// 1 MiB+ frame, a message in fragments whose JSON is split across them. The ping is answered,
// the big frame read past, the fragmented answer delivered.
func TestReaderTakesWhatOneWriteHolds(t *testing.T) {
	client, server := tcpConnPair(t)
	_, waiter := readerConn(client)
	var b []byte
	b = append(wsframe.AppendHeader(b, wsframe.Ping, 1, nil), 'p')
	big := `{"event":"#publish","data":"` + strings.Repeat("x", 1<<20) + `"}`
	b = append(wsframe.AppendHeader(b, wsframe.Text, len(big), nil), big...)
	first := wsframe.AppendHeader(nil, wsframe.Text, 4, nil)
	first[0] &^= 0x80 // not final
	b = append(append(b, first...), `{"ri`...)
	b = append(wsframe.AppendHeader(b, wsframe.Continuation, 6, nil), `d":7}`+" "...)
	if _, err := server.Write(b); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waiter:
		if err != nil {
			t.Fatalf("call 7 answered with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the fragmented answer never arrived")
	}
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	for {
		var tmp [64]byte
		n, err := server.Read(tmp[:])
		if err != nil {
			t.Fatalf("no pong: %v", err)
		}
		got = append(got, tmp[:n]...)
		if f, size, err := wsframe.Parse(got, 1<<10); err != nil || size > 0 {
			if err != nil || f.Op != wsframe.Pong || string(f.Payload) != "p" {
				t.Fatalf("answer to the ping: %v %q %v", f.Op, f.Payload, err)
			}
			return
		}
	}
}

// A server announcing a frame of 2^63 bytes, or breaking the fragmentation rules, ends the
// connection at once with an error (its waiting calls fail), without allocating for it.
func TestReaderRefusesHostileFrames(t *testing.T) {
	for name, b := range map[string][]byte{
		"2^63 bytes":                       binary.BigEndian.AppendUint64([]byte{0x81, 127}, 1<<63),
		"2^64-1 bytes":                     binary.BigEndian.AppendUint64([]byte{0x82, 127}, math.MaxUint64),
		"stray continuation":               wsframe.AppendHeader(nil, wsframe.Continuation, 0, nil),
		"text inside a fragmented message": append([]byte{0x01, 1, '{'}, wsframe.AppendHeader(nil, wsframe.Text, 0, nil)...),
	} {
		client, server := tcpConnPair(t)
		cn, waiter := readerConn(client)
		if _, err := server.Write(b); err != nil {
			t.Fatal(err)
		}
		select {
		case <-cn.done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the reader is still running", name)
		}
		if cn.rerr == nil || errors.Is(cn.rerr, net.ErrClosed) {
			t.Fatalf("%s: reader ended with %v", name, cn.rerr)
		}
		if err := <-waiter; err == nil {
			t.Fatalf("%s: the waiting call did not fail", name)
		}
	}
}
