package wsfront

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/wsframe"
)

// rawPeer is a strict WebSocket client on a bare TCP connection: it builds every frame
// itself, and either sends each frame in a TCP packet of its own or everything in one write.
type rawPeer struct {
	t      *testing.T
	c      *net.TCPConn
	br     *bufio.Reader
	buf    []byte
	single bool // one write for everything sent by one call
}

func dialRawPeer(t *testing.T, url string, single bool) *rawPeer {
	t.Helper()
	addr := strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/socketcluster/")
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := nc.(*net.TCPConn)
	c.SetNoDelay(true)
	fmt.Fprintf(c, "GET /socketcluster/ HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	p := &rawPeer{t: t, c: c, br: br, single: single}
	p.send(frame(true, wsframe.Text, `{"event":"#handshake","data":{"authToken":null},"cid":1}`))
	if f := p.next(); !strings.Contains(string(f.Payload), `"rid":1`) {
		t.Fatalf("handshake answer %q", f.Payload)
	}
	return p
}

// frame builds a masked client frame (key 1,2,3,4), FIN and opcode as given.
func frame(fin bool, op wsframe.Opcode, payload string) []byte {
	key := [4]byte{1, 2, 3, 4}
	b := wsframe.AppendHeader(nil, op, len(payload), &key)
	if !fin {
		b[0] &^= 0x80
	}
	start := len(b)
	b = append(b, payload...)
	for i := range len(payload) {
		b[start+i] ^= key[i&3]
	}
	return b
}

// send writes frames: each in its own TCP packet (a pause between them), or all in one write.
func (p *rawPeer) send(frames ...[]byte) {
	p.t.Helper()
	if p.single {
		var all []byte
		for _, f := range frames {
			all = append(all, f...)
		}
		frames = [][]byte{all}
	}
	for i, f := range frames {
		if i > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := p.c.Write(f); err != nil {
			p.t.Fatalf("write: %v", err)
		}
	}
}

// next reads the next frame other than a ping (” text frames are answered).
func (p *rawPeer) next() wsframe.Frame {
	p.t.Helper()
	f, err := p.read()
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	return f
}

func (p *rawPeer) read() (wsframe.Frame, error) {
	_ = p.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, n, err := wsframe.Parse(p.buf, 64<<20)
		if err != nil {
			return f, err
		}
		if n > 0 {
			p.buf = p.buf[n:]
			if f.Op == wsframe.Text && len(f.Payload) == 0 {
				p.send(frame(true, wsframe.Text, ""))
				continue
			}
			return f, nil
		}
		var tmp [64 << 10]byte
		k, err := p.br.Read(tmp[:])
		p.buf = append(p.buf, tmp[:k]...)
		if err != nil {
			return wsframe.Frame{}, err
		}
	}
}

// closeCode reads until the server's close frame and returns its code and reason (-1: the
// connection ended without one).
func (p *rawPeer) closeCode() (int, string) {
	p.t.Helper()
	for {
		f, err := p.read()
		if err != nil {
			p.t.Logf("no close frame: %v", err)
			return -1, ""
		}
		if f.Op == wsframe.Close {
			if len(f.Payload) < 2 {
				return 1005, ""
			}
			return int(binary.BigEndian.Uint16(f.Payload)), string(f.Payload[2:])
		}
	}
}

func bothWays(t *testing.T, f func(t *testing.T, single bool)) {
	for _, single := range []bool{false, true} {
		name := "packet per frame"
		if single {
			name = "one write"
		}
		t.Run(name, func(t *testing.T) { f(t, single) })
	}
}

// RFC 6455 §8.1: a text message that is not valid UTF-8 fails the connection with 1007,
// whether the bad bytes are in one frame or a code point is split across fragments; a valid
// code point split across fragments is fine.
func TestInvalidUTF8Closes1007(t *testing.T) {
	bothWays(t, func(t *testing.T, single bool) {
		_, url := startFront(t, Config{})
		for name, frames := range map[string][][]byte{
			"one frame":            {frame(true, wsframe.Text, "{\"event\":\"x\",\"data\":\"\xff\"}")},
			"split code point":     {frame(false, wsframe.Text, "{\"event\":\"x\",\"data\":\"\xc3"), frame(true, wsframe.Continuation, "\x28\"}")},
			"truncated at the end": {frame(false, wsframe.Text, "{\"event\":\"x\"}"), frame(true, wsframe.Continuation, "\xe2\x82")},
		} {
			p := dialRawPeer(t, url, single)
			p.send(frames...)
			if code, _ := p.closeCode(); code != 1007 {
				t.Errorf("%s: close %d, want 1007", name, code)
			}
		}
		// A valid two-byte code point split across two fragments is one valid message.
		p := dialRawPeer(t, url, single)
		p.send(frame(false, wsframe.Text, "{\"event\":\"echo\",\"data\":\"caf\xc3"), frame(true, wsframe.Continuation, "\xa9\",\"cid\":2}"))
		if f := p.next(); f.Op == wsframe.Close {
			t.Fatalf("valid split code point closed the connection: %q", f.Payload)
		}
	})
}

// RFC 6455 §5.5.1: the client's close code and reason come back in the server's close frame.
func TestClientCloseIsEchoed(t *testing.T) {
	bothWays(t, func(t *testing.T, single bool) {
		_, url := startFront(t, Config{})
		p := dialRawPeer(t, url, single)
		p.send(frame(true, wsframe.Close, string(wsframe.ClosePayload(4321, "bye now"))))
		if code, reason := p.closeCode(); code != 4321 || reason != "bye now" {
			t.Fatalf("echo %d %q, want 4321 \"bye now\"", code, reason)
		}
		p = dialRawPeer(t, url, single)
		p.send(frame(true, wsframe.Close, ""))
		if code, _ := p.closeCode(); code != 1005 {
			t.Fatalf("empty close answered with %d, want an empty close", code)
		}
	})
}

// RFC 6455 §5.5.1 and §8.1: a close frame whose body is one byte (a code needs two) fails the
// connection with 1002, and one whose reason is not UTF-8 with 1007, as socketcluster-server
// answers; a bad code keeps its 1002. gorilla alone answered the first with an empty close
// (as if no code had been sent) and the second with 1002. Also behind a ping, and with the
// close frame cut into single bytes (the guard that stops it sees it across reads).
func TestBadCloseFrames(t *testing.T) {
	bothWays(t, func(t *testing.T, single bool) {
		_, url := startFront(t, Config{})
		for _, c := range []struct {
			name   string
			frames [][]byte
			want   int
		}{
			{"1-byte body", [][]byte{frame(true, wsframe.Close, "\x03")}, 1002},
			{"1-byte body after a ping", [][]byte{frame(true, wsframe.Ping, "p"), frame(true, wsframe.Close, "\x03")}, 1002},
			{"reason not UTF-8", [][]byte{frame(true, wsframe.Close, "\x03\xe8ok\xff")}, 1007},
			{"reason with a code point cut short", [][]byte{frame(true, wsframe.Close, "\x03\xe8\xce")}, 1007},
			{"reserved code", [][]byte{frame(true, wsframe.Close, "\x03\xed")}, 1002}, // 1005 may not be sent
			{"close between fragments", [][]byte{frame(false, wsframe.Text, `{"event":`), frame(true, wsframe.Close, "\x03\xe8\xc0\xaf")}, 1007},
		} {
			p := dialRawPeer(t, url, single)
			if single {
				p.send(c.frames...)
			} else {
				var all []byte
				for _, f := range c.frames {
					all = append(all, f...)
				}
				for i := range all {
					p.send(all[i : i+1])
				}
			}
			if code, reason := p.closeCode(); code != c.want {
				t.Errorf("%s: close %d %q, want %d", c.name, code, reason, c.want)
			}
		}
	})
}

// A frame over the limit gets a 1009 close frame the client can read, and the client's own
// write of the frame ends normally: before, the server closed with the rest of the frame
// unread and the kernel reset the connection, so the client's write failed with "connection
// reset by peer" (a client such as ws then reports 1006 and never reads the 1009). Ten tries
// each way, the frame 1 MiB + 30 bytes in one write.
func TestOversizeFrameGetsReadable1009(t *testing.T) {
	bothWays(t, func(t *testing.T, single bool) {
		_, url := startFront(t, Config{MaxPayload: 1 << 20})
		big := frame(true, wsframe.Text, `{"event":"x","data":"`+strings.Repeat("a", 1<<20)+`"}`)
		for try := range 10 {
			p := dialRawPeer(t, url, single)
			if _, err := p.c.Write(big); err != nil {
				t.Fatalf("try %d: the client's write failed: %v", try, err)
			}
			if code, _ := p.closeCode(); code != 1009 {
				t.Fatalf("try %d: close %d, want 1009", try, code)
			}
		}
	})
}

// A batch over --max-batch closes with 1009 and a reason that says why, instead of being
// dropped without an answer; one at the limit is handled in full.
func TestOversizeBatchCloses1009(t *testing.T) {
	_, url := startFront(t, Config{MaxBatch: 100})
	batch := func(n int) string {
		var b strings.Builder
		b.WriteString("[")
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"event":"#subscribe","data":{"channel":"c%d"},"cid":%d}`, i, i+2)
		}
		b.WriteString("]")
		return b.String()
	}
	p := dialRawPeer(t, url, true)
	p.send(frame(true, wsframe.Text, batch(100)))
	for i := range 100 {
		if f := p.next(); !strings.Contains(string(f.Payload), fmt.Sprintf(`"rid":%d`, i+2)) {
			t.Fatalf("answer %d: %q", i, f.Payload)
		}
	}
	p = dialRawPeer(t, url, true)
	p.send(frame(true, wsframe.Text, batch(101)))
	if code, reason := p.closeCode(); code != 1009 || !strings.Contains(reason, "more than 100 packets") {
		t.Fatalf("close %d %q, want 1009 naming the limit", code, reason)
	}
}

// Protocol v1 (--protocol-version 1): the server pings '#1' and takes '#2' as the pong, so a
// v1 client that answers stays connected past the ping timeout; one that does not is cut
// with 4001 as in v2.
func TestProtocolV1Pings(t *testing.T) {
	_, url := startFront(t, Config{ProtocolVersion: 1, PingInterval: 100 * time.Millisecond, PingTimeout: 400 * time.Millisecond})
	for _, answer := range []bool{true, false} {
		p := dialRawPeer(t, url, false)
		pings := 0
		deadline := time.Now().Add(time.Second) // 2.5 ping timeouts
		for time.Now().Before(deadline) {
			f, err := p.read()
			if err != nil {
				t.Fatalf("answer=%v: %v after %d pings", answer, err, pings)
			}
			if f.Op == wsframe.Close {
				if answer {
					t.Fatalf("a v1 client answering #2 was closed: %q", f.Payload)
				}
				if code := binary.BigEndian.Uint16(f.Payload); code != 4001 {
					t.Fatalf("silent v1 client closed with %d, want 4001", code)
				}
				return
			}
			if string(f.Payload) != "#1" {
				t.Fatalf("unexpected frame %q", f.Payload)
			}
			pings++
			if answer {
				p.send(frame(true, wsframe.Text, "#2"))
			}
		}
		if !answer {
			t.Fatal("a v1 client that never answered was not cut")
		}
		if pings < 5 {
			t.Fatalf("%d pings in a second at a 100 ms interval", pings)
		}
	}
}

// #unsubscribe with {"channel": name}, as sacOO7's clients send it, unsubscribes; a plain
// string (the npm client) still does, and anything else is refused as before.
func TestUnsubscribeTakesTheObjectForm(t *testing.T) {
	_, url := startFront(t, Config{})
	c := dialRaw(t, url)
	c.handshake()
	c.send(`{"event":"#subscribe","data":{"channel":"a"},"cid":2}`)
	c.expect(`{"rid":2}`)
	c.send(`{"event":"#unsubscribe","data":{"channel":"a"},"cid":3}`)
	c.expect(`{"rid":3}`)
	c.send(`{"event":"#unsubscribe","data":"a","cid":4}`)
	c.expect(`"rid":4,"error":{"message":"Failed to unsubscribe`)
	c.send(`{"event":"#unsubscribe","data":{"name":"a"},"cid":5}`)
	c.expect(`"rid":5,"error":{"message":"Unsubscribe channel name was malformatted"`)
}
