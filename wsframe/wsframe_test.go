package wsframe

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The headers this package writes are read back by gorilla/websocket, the reader every
// sockmesh client and server uses, at each length class boundary.
func TestHeadersReadByGorilla(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 0xffff, 0x10000, 1 << 20} {
		p := bytes.Repeat([]byte{'x'}, n)
		server := append(AppendHeader(nil, Text, n, nil), p...)
		if got := readWithGorilla(t, server, true); !bytes.Equal(got, p) {
			t.Fatalf("server frame of %d bytes read back as %d bytes", n, len(got))
		}
		client := AppendClientFrame(nil, Text, p)
		if got := readWithGorilla(t, client, false); !bytes.Equal(got, p) {
			t.Fatalf("client frame of %d bytes read back as %d bytes", n, len(got))
		}
	}
}

func TestParseRoundTrip(t *testing.T) {
	for _, n := range []int{0, 125, 126, 0xffff, 0x10000} {
		p := bytes.Repeat([]byte{'y'}, n)
		for _, key := range []*[4]byte{nil, {1, 2, 3, 4}} {
			b := AppendHeader(nil, Binary, n, key)
			start := len(b)
			b = append(b, p...)
			if key != nil {
				for i := range n {
					b[start+i] ^= key[i&3]
				}
			}
			for cut := range min(len(b), 20) { // every truncation is "not yet"
				if f, size, err := Parse(b[:cut], 1<<20); err != nil || size != 0 || f.Payload != nil {
					t.Fatalf("%d bytes of %d: %v %d", cut, len(b), err, size)
				}
			}
			f, size, err := Parse(b, 1<<20)
			if err != nil || size != len(b) || !f.Fin || f.Op != Binary || !bytes.Equal(f.Payload, p) {
				t.Fatalf("n=%d masked=%v: %+v %d %v", n, key != nil, f.Op, size, err)
			}
		}
	}
}

// Hostile headers are refused from the header alone, whatever they announce.
func TestParseRefusesHostileHeaders(t *testing.T) {
	huge := func(n uint64) []byte {
		return binary.BigEndian.AppendUint64([]byte{0x82, 127}, n)
	}
	for name, tc := range map[string]struct {
		b    []byte
		want error
	}{
		"2^64-1 bytes":           {huge(math.MaxUint64), ErrTooLarge},
		"2^63 bytes":             {huge(1 << 63), ErrTooLarge},
		"one over the limit":     {huge(1<<20 + 1), ErrTooLarge},
		"reserved bit":           {[]byte{0xc1, 0}, ErrReservedBits},
		"fragmented ping":        {[]byte{0x09, 0}, ErrBadControl},
		"close of 126 bytes":     {[]byte{0x88, 126, 0, 126}, ErrBadControl},
		"ping announcing 2^64-1": {append([]byte{0x89, 127}, bytes.Repeat([]byte{0xff}, 8)...), ErrBadControl},
	} {
		if _, size, err := Parse(tc.b, 1<<20); !errors.Is(err, tc.want) || size != 0 {
			t.Errorf("%s: %v (size %d), want %v", name, err, size, tc.want)
		}
	}
}

// The example of RFC 6455 §1.3.
func TestAcceptKey(t *testing.T) {
	if got := AcceptKey([]byte("dGhlIHNhbXBsZSBub25jZQ==")); string(got[:]) != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("accept %s", got[:])
	}
	if n := testing.AllocsPerRun(100, func() { AcceptKey([]byte("dGhlIHNhbXBsZSBub25jZQ==")) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func TestClosePayload(t *testing.T) {
	p := ClosePayload(4100, string(bytes.Repeat([]byte{'r'}, 300)))
	if len(p) != MaxControlPayload || binary.BigEndian.Uint16(p) != 4100 {
		t.Fatalf("close payload of %d bytes, code %d", len(p), binary.BigEndian.Uint16(p))
	}
	if !bytes.Equal(p[:2], websocket.FormatCloseMessage(4100, "")[:2]) {
		t.Fatal("code differs from gorilla's")
	}
}

// FuzzParse: any bytes are parsed without panic; a frame it returns lies within the input,
// respects the limit, and encodes back to the same size.
func FuzzParse(f *testing.F) {
	f.Add(AppendClientFrame(nil, Text, []byte("hello")))
	f.Add(AppendHeader(nil, Text, 70000, nil))
	f.Add(binary.BigEndian.AppendUint64([]byte{0x81, 0xff}, math.MaxUint64))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(nil), b...)
		fr, size, err := Parse(in, 1<<16)
		if err != nil || size == 0 {
			return
		}
		if size > len(b) || len(fr.Payload) > 1<<16 {
			t.Fatalf("frame of %d bytes (payload %d) from %d bytes", size, len(fr.Payload), len(b))
		}
		masked := b[1]&0x80 != 0
		var key *[4]byte
		if masked {
			key = &[4]byte{}
		}
		// The shortest header for the length may be shorter than the one received.
		if h := AppendHeader(nil, fr.Op, len(fr.Payload), key); len(h)+len(fr.Payload) > size {
			t.Fatalf("re-encoded header %d + %d bytes > %d", len(h), len(fr.Payload), size)
		}
	})
}

// readWithGorilla has gorilla/websocket read b, sent over a real loopback connection after an
// upgrade: as a client reading a server's frame, or as a server reading a client's.
func readWithGorilla(t *testing.T, b []byte, asClient bool) []byte {
	t.Helper()
	got := make(chan []byte, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if asClient { // a hand-made server: the 101, then b
			nc, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			accept := AcceptKey([]byte(r.Header.Get("Sec-WebSocket-Key")))
			fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept[:])
			rw.Write(b)
			rw.Flush()
			<-r.Context().Done()
			return
		}
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer ws.Close()
		ws.SetReadLimit(2 << 20)
		_, p, err := ws.ReadMessage()
		if err != nil {
			t.Error(err)
		}
		got <- p
	}))
	defer srv.Close()
	u := "ws" + strings.TrimPrefix(srv.URL, "http")
	if asClient {
		ws, _, err := websocket.DefaultDialer.Dial(u, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.SetReadLimit(2 << 20)
		_, p, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A hand-made client: the upgrade request, then b.
	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(nc), nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("gorilla read nothing")
		return nil
	}
}
