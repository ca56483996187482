//go:build linux

package bench

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/wsframe"
)

func TestRawConnectAgainstNode(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	var atEnd int
	srcs := map[string]int{}
	res := runOne(t, Config{URLs: []string{n.WSURL()}, Scenario: "connect", Connections: 300, Concurrency: 50,
		PerSourceAddr: 100, ServerPIDs: []int{os.Getpid()}, windowEnd: func() {
			socks := n.Front().Sockets()
			atEnd = len(socks)
			for _, s := range socks {
				h, _, _ := net.SplitHostPort(s.RemoteAddr().String())
				srcs[h]++
			}
		}})
	r := res[0]
	if r.Connector != "raw" || r.Connections != 300 || r.ConnectErrors != 0 || r.Disconnects != 0 || r.ConnectsPerSec <= 0 || connectWarning(r) {
		t.Fatalf("connect: %+v", r)
	}
	if atEnd != 300 {
		t.Fatalf("%d connections open on the node when the window ended, want 300", atEnd)
	}
	// 100 per source address: 127.0.0.1, .2 and .3, as the gorilla dialer binds them.
	if len(srcs) != 3 || srcs["127.0.0.1"] != 100 || srcs["127.0.0.2"] != 100 || srcs["127.0.0.3"] != 100 {
		t.Fatalf("source addresses: %v", srcs)
	}
	if !(r.LatP50Ms > 0 && r.LatP50Ms <= r.LatP90Ms && r.LatP90Ms <= r.LatP99Ms && r.LatP99Ms <= r.LatMaxMs) {
		t.Fatalf("latency percentiles out of order: %+v", r)
	}
	if r.ServerCPU <= 0 || r.ServerRSSMiB <= 0 || r.ToolCPUs < 1 {
		t.Fatalf("process stats: %+v", r)
	}
	// Closed once the result is known.
	deadline := time.Now().Add(5 * time.Second)
	for len(n.Front().Sockets()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open on the node after the run", len(n.Front().Sockets()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeServer accepts TCP connections and runs serve on each.
func fakeServer(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) (url string, wait func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	wait = func() {
		ln.Close()
		wg.Wait()
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "ws://" + ln.Addr().String() + "/socketcluster/", wait
}

// readUpgrade reads the upgrade request and returns the accept value it expects.
func readUpgrade(br *bufio.Reader) (string, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return "", err
	}
	if req.URL.Path != "/socketcluster/" || req.Header.Get("Upgrade") != "websocket" || req.Header.Get("Sec-WebSocket-Version") != "13" {
		return "", fmt.Errorf("bad upgrade request %+v", req)
	}
	key := req.Header.Get("Sec-WebSocket-Key")
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 16 {
		return "", fmt.Errorf("bad key %q", key)
	}
	accept := wsframe.AcceptKey([]byte(key))
	return string(accept[:]), nil
}

func response101(accept string) string {
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nsec-websocket-accept: " + accept + "\r\n\r\n"
}

// serverFrame is an unmasked final frame.
func serverFrame(op byte, p string) string {
	if len(p) < 126 {
		return string([]byte{0x80 | op, byte(len(p))}) + p
	}
	return string([]byte{0x80 | op, 126, byte(len(p) >> 8), byte(len(p))}) + p
}

// readClientFrame reads one masked client frame of up to 64 KiB.
func readClientFrame(br *bufio.Reader) (op byte, p []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x80 == 0 || h[1]&0x80 == 0 {
		return 0, nil, fmt.Errorf("not a final masked frame: %x", h)
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 127:
		return 0, nil, errors.New("frame too long")
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(l[:]))
	}
	p = make([]byte, 4+n)
	if _, err := io.ReadFull(br, p); err != nil {
		return 0, nil, err
	}
	for i := range p[4:] {
		p[4+i] ^= p[i&3]
	}
	return h[0] & 0x0f, p[4:], nil
}

func expectFrame(br *bufio.Reader, op byte, want string) error {
	gop, p, err := readClientFrame(br)
	if err != nil {
		return err
	}
	if gop != op || string(p) != want {
		return fmt.Errorf("got frame op %d %q, want op %d %q", gop, p, op, want)
	}
	return nil
}

const handshakeReq = `{"event":"#handshake","data":{"authToken":null},"cid":1}`

func runRaw(t *testing.T, url string, conns int, timeout time.Duration) Result {
	t.Helper()
	res := runOne(t, Config{URLs: []string{url}, Scenario: "connect", Connections: conns, Concurrency: 4, Connector: "raw", connectTimeout: timeout})
	if res[0].Connector != "raw" {
		t.Fatalf("connector %q", res[0].Connector)
	}
	return res[0]
}

func checkAllFailed(t *testing.T, r Result, n int, want string) {
	t.Helper()
	if r.Connections != 0 || r.ConnectErrors != n || r.ConnectsPerSec != 0 {
		t.Fatalf("want %d failed connections: %+v", n, r)
	}
	if !hasWarning(r, fmt.Sprintf("%d connections failed, the first with: connection ", n), want) {
		t.Fatalf("warnings %q, want the first error with %q", r.Warnings, want)
	}
}

// hasWarning: one of r's warnings contains all of subs. (Others may say that
// the tool was busy: tests run in parallel.)
func hasWarning(r Result, subs ...string) bool {
	for _, w := range r.Warnings {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(w, s)
		}
		if all {
			return true
		}
	}
	return false
}

// connectWarning: a warning about failed or closed connections.
func connectWarning(r Result) bool {
	return hasWarning(r, "connections failed") || hasWarning(r, "closed by the server")
}

func TestRawConnectBadAccept(t *testing.T) {
	t.Parallel()
	url, _ := fakeServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readUpgrade(br); err != nil {
			t.Error(err)
			return
		}
		io.WriteString(c, response101("dGhlIHNhbXBsZSBub25jZQ=="))
		io.Copy(io.Discard, br)
	})
	checkAllFailed(t, runRaw(t, url, 10, 0), 10, "upgrade: bad Sec-WebSocket-Accept")
}

// acceptAndReadHandshake answers the upgrade and reads the client's #handshake.
func acceptAndReadHandshake(t *testing.T, c net.Conn, br *bufio.Reader) bool {
	accept, err := readUpgrade(br)
	if err != nil {
		t.Error(err)
		return false
	}
	io.WriteString(c, response101(accept))
	if err := expectFrame(br, 1, handshakeReq); err != nil {
		t.Error(err)
		return false
	}
	return true
}

func TestRawConnectHandshakeError(t *testing.T) {
	t.Parallel()
	url, _ := fakeServer(t, func(c net.Conn, br *bufio.Reader) {
		if !acceptAndReadHandshake(t, c, br) {
			return
		}
		io.WriteString(c, serverFrame(1, `{"rid":1,"error":{"name":"X","message":"no"}}`))
		io.Copy(io.Discard, br)
	})
	checkAllFailed(t, runRaw(t, url, 10, 0), 10, `handshake: server error {"rid":1,"error":{"name":"X","message":"no"}}`)
}

func TestRawConnectTimeout(t *testing.T) {
	t.Parallel()
	url, _ := fakeServer(t, func(c net.Conn, br *bufio.Reader) {
		io.Copy(io.Discard, br) // never answers
	})
	checkAllFailed(t, runRaw(t, url, 6, 200*time.Millisecond), 6, "no handshake answer within 200ms (waiting for the upgrade response)")
}

// TestRawConnectSplitAndPings: a server that sends its answers one byte per
// write (split), or several frames and the 101 response in one write, with
// pings ("" and "#1") before the handshake answer and pings ("" and a
// WebSocket ping) after it, which open connections answer too.
func TestRawConnectSplitAndPings(t *testing.T) {
	const n = 12
	for _, split := range []bool{true, false} {
		t.Run(fmt.Sprint("split=", split), func(t *testing.T) {
			t.Parallel()
			var seq, pongs, trailing, closes atomic.Int64
			url, wait := fakeServer(t, func(c net.Conn, br *bufio.Reader) {
				send := func(s string) {
					if !split {
						io.WriteString(c, s)
						return
					}
					for i := range len(s) {
						c.Write([]byte{s[i]})
						time.Sleep(10 * time.Microsecond)
					}
				}
				expect := func(op byte, p string) bool {
					if err := expectFrame(br, op, p); err != nil {
						t.Error(err)
						return false
					}
					return true
				}
				accept, err := readUpgrade(br)
				if err != nil {
					t.Error(err)
					return
				}
				send(response101(accept) + serverFrame(1, ""))
				if !expect(1, handshakeReq) || !expect(1, "") {
					return
				}
				pongs.Add(1)
				answer := serverFrame(1, "#1") + serverFrame(1, `{"rid":1,"data":{"id":"x","pingTimeout":20000,"isAuthenticated":false}}`)
				if seq.Add(1) == n {
					// The run's window ends with the last answer and the tool
					// then answers nothing: answer last once the other
					// connections answered their pings after the handshake.
					for trailing.Load() < n-1 {
						time.Sleep(time.Millisecond)
					}
					send(answer)
					if !expect(1, "#2") {
						return
					}
					pongs.Add(1)
				} else {
					send(answer + serverFrame(1, "") + serverFrame(9, "p"))
					if !expect(1, "#2") || !expect(1, "") || !expect(10, "p") {
						return
					}
					pongs.Add(3)
					trailing.Add(1)
				}
				if expect(8, string(binary.BigEndian.AppendUint16(nil, 1000))) {
					closes.Add(1)
				}
			})
			r := runRaw(t, url, n, 0)
			if r.Connections != n || r.ConnectErrors != 0 || r.Disconnects != 0 || connectWarning(r) || r.LatP50Ms <= 0 {
				t.Fatalf("connect: %+v", r)
			}
			wait()
			if pongs.Load() != 4*n-2 || closes.Load() != n {
				t.Fatalf("%d pongs (want %d), %d close frames (want %d)", pongs.Load(), 4*n-2, closes.Load(), n)
			}
		})
	}
}

// TestRawConnectServerCloses: connections the server closes after their
// handshake are counted as disconnects, their close frame echoed.
func TestRawConnectServerCloses(t *testing.T) {
	t.Parallel()
	const n = 4
	var seq, echoed atomic.Int64
	url, wait := fakeServer(t, func(c net.Conn, br *bufio.Reader) {
		if !acceptAndReadHandshake(t, c, br) {
			return
		}
		// An answer with a 16-bit length.
		answer := serverFrame(1, `{"rid":1,"data":{"id":"`+strings.Repeat("x", 200)+`","pingTimeout":20000,"isAuthenticated":false}}`)
		if seq.Add(1) == n {
			for echoed.Load() < n-1 { // the window ends with this answer
				time.Sleep(time.Millisecond)
			}
			io.WriteString(c, answer)
		} else {
			io.WriteString(c, answer+serverFrame(1, strings.Repeat("y", 300))+serverFrame(8, "\x03\xe9bye"))
		}
		if err := expectFrame(br, 8, string(binary.BigEndian.AppendUint16(nil, 1000))); err != nil {
			t.Error(err)
			return
		}
		echoed.Add(1)
	})
	r := runRaw(t, url, n, 0)
	if r.Connections != n || r.ConnectErrors != 0 || r.Disconnects != n-1 || hasWarning(r, "connections failed") || !hasWarning(r, "3 connections were closed by the server") {
		t.Fatalf("connect: %+v", r)
	}
	wait()
	if echoed.Load() != n {
		t.Fatalf("%d close frames, want %d", echoed.Load(), n)
	}
}
