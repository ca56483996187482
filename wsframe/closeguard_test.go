package wsframe

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// guarded reads all of in through a CloseGuard, the input cut into reads of at most chunk
// bytes; it returns what the guard passed and the code of its CloseError (0: none).
func guarded(t testing.TB, in []byte, chunk int) ([]byte, int) {
	var r io.Reader = bytes.NewReader(in)
	if chunk > 0 {
		r = &chunkReader{r: r, n: chunk}
	}
	g := &CloseGuard{R: r}
	out, err := io.ReadAll(g)
	var ce *CloseError
	switch {
	case errors.As(err, &ce):
		if _, again := g.Read(make([]byte, 8)); !errors.Is(again, err) {
			t.Fatalf("after a CloseError the guard read on: %v", again)
		}
		return out, ce.Code
	case err != nil:
		t.Fatalf("read: %v", err)
	}
	return out, 0
}

type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

func masked(op Opcode, payload string) []byte {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	b := AppendHeader(nil, op, len(payload), &key)
	start := len(b)
	b = append(b, payload...)
	for i := range len(payload) {
		b[start+i] ^= key[i&3]
	}
	return b
}

// Frames of every header size pass through unchanged, and a close frame that fails the
// connection stops the stream just before its last byte, however the reads fall.
func TestCloseGuard(t *testing.T) {
	var lead []byte
	lead = append(lead, masked(Text, "hello")...)
	lead = append(lead, masked(Binary, strings.Repeat("b", 300))...)      // 16-bit length
	lead = append(lead, masked(Text, strings.Repeat("c", 70_000))...)     // 64-bit length
	lead = append(lead, AppendHeader(nil, Text, 3, nil)...)               // unmasked: followed, not judged
	lead = append(lead, "abc"...)                                         //
	lead = append(lead, masked(Ping, "")...)                              // empty control frame
	lead = append(lead, masked(Close, string(ClosePayload(1000, "")))...) // a valid close passes
	for _, c := range []struct {
		name  string
		close []byte
		want  int
	}{
		{"valid reason", masked(Close, string(ClosePayload(4000, "fine, thanks"))), 0},
		{"empty", masked(Close, ""), 0},
		{"1-byte body", masked(Close, "\x03"), 1002},
		{"invalid reason", masked(Close, string(ClosePayload(1001, "bad \xff"))), 1007},
		{"invalid reason behind a bad code", masked(Close, string(ClosePayload(1005, "\xff"))), 0}, // the reader's 1002
		{"overlong encoding", masked(Close, string(ClosePayload(3000, "\xc0\xaf"))), 1007},
		{"unmasked 1-byte body", append(AppendHeader(nil, Close, 1, nil), 3), 1002},
	} {
		in := append(append([]byte{}, lead...), c.close...)
		in = append(in, masked(Text, "after")...)
		for _, chunk := range []int{0, 1, 5, 4096} {
			out, code := guarded(t, in, chunk)
			want := in
			if c.want != 0 {
				want = in[:len(lead)+len(c.close)-1]
			}
			if code != c.want || !bytes.Equal(out, want) {
				t.Errorf("%s, reads of %d: passed %d of %d bytes with code %d; want %d bytes, code %d", c.name, chunk, len(out), len(in), code, len(want), c.want)
			}
		}
	}
}

// A header that announces 2^64-1 bytes is followed without allocating or overflowing: the
// guard passes what comes and judges nothing (the reader above refuses the frame).
func TestCloseGuardHugeLength(t *testing.T) {
	in := []byte{0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}
	in = append(in, masked(Close, "\x03")...) // payload of the huge frame, not a close
	out, code := guarded(t, in, 3)
	if code != 0 || !bytes.Equal(out, in) {
		t.Fatalf("passed %d of %d bytes, code %d", len(out), len(in), code)
	}
	r := bytes.NewReader(in)
	buf := make([]byte, 64)
	if n := testing.AllocsPerRun(100, func() {
		r.Reset(in)
		g := CloseGuard{R: r}
		for {
			if _, err := g.Read(buf); err != nil {
				break
			}
		}
	}); n > 0 {
		t.Fatalf("%v allocations per stream", n)
	}
}

func TestCloseGuardPassesReadErrors(t *testing.T) {
	g := &CloseGuard{R: iotest.ErrReader(io.ErrUnexpectedEOF)}
	if _, err := g.Read(make([]byte, 4)); err != io.ErrUnexpectedEOF {
		t.Fatalf("err %v", err)
	}
}

// Whatever the bytes and however the reads fall, the guard passes a prefix of its input,
// the same prefix and verdict for every read size, and the whole input when it finds no
// close frame to stop.
func FuzzCloseGuard(f *testing.F) {
	f.Add(masked(Close, "\x03"), uint8(1))
	f.Add(append(masked(Text, "x"), masked(Close, "\x03\xe8\xff")...), uint8(2))
	f.Add([]byte{0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint8(7))
	f.Add(append(masked(Ping, "abc"), masked(Close, string(ClosePayload(1000, "ok")))...), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		whole, code := guarded(t, in, 0)
		if !bytes.HasPrefix(in, whole) {
			t.Fatal("passed bytes that were not read")
		}
		if code == 0 && len(whole) != len(in) {
			t.Fatalf("stopped at %d of %d bytes without a verdict", len(whole), len(in))
		}
		if code != 0 && code != 1002 && code != 1007 {
			t.Fatalf("code %d", code)
		}
		cut, code2 := guarded(t, in, int(chunk)+1)
		if code2 != code || !bytes.Equal(cut, whole) {
			t.Fatalf("reads of %d: %d bytes code %d; one read: %d bytes code %d", int(chunk)+1, len(cut), code2, len(whole), code)
		}
	})
}
