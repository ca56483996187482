package mesh

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
)

// replayConn is a net.Conn whose peer sent exactly r; what zmq4 writes is discarded.
type replayConn struct{ r io.Reader }

func (c *replayConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzZMTPGuard: whatever a peer sends, the guard's verdict does not depend on how the bytes
// are split into reads, and zmq4 itself survives every byte the guard lets through: no panic
// (its READY parser indexes without bounds checks) and no allocation beyond the limit (it
// allocates what a header announces). zmq4 runs on the accepted side as a PUB and on the dial
// side as a SUB, as in the mesh.
func FuzzZMTPGuard(f *testing.F) {
	pubStream := append(zmtpGreetingBytes(true), readyFrame(prop("Socket-Type", "PUB"))...)
	pubStream = append(pubStream, zmtpMore, 5, 2, 'm', 'e', 0, 0)
	pubStream = append(pubStream, longHeader(0, 300)...)
	pubStream = append(pubStream, bytes.Repeat([]byte{'x'}, 300)...)
	f.Add(false, uint8(0), pubStream)
	f.Add(false, uint8(7), pubStream)
	f.Add(true, uint8(3), append(subHandshake(), 0, 5, 1, 2, 'x', 'y', 0))
	for _, in := range hostileInputs() {
		f.Add(true, uint8(1), in.bytes[:min(len(in.bytes), 512)])
		f.Add(false, uint8(2), in.bytes[:min(len(in.bytes), 512)])
	}
	const limit = 64 << 10
	f.Fuzz(func(t *testing.T, accepted bool, split uint8, data []byte) {
		whole := newZMTPGuard(accepted, limit)
		wholeErr := whole.feed(data)

		g := newZMTPGuard(accepted, limit)
		var passed []byte
		var err error
		for rest := data; len(rest) > 0; {
			k := min(int(split)+1, len(rest))
			if err = g.feed(rest[:k]); err != nil {
				break
			}
			passed = append(passed, rest[:k]...)
			rest = rest[k:]
		}
		if (err == nil) != (wholeErr == nil) {
			t.Fatalf("verdict depends on the split: whole %v, in reads of %d: %v", wholeErr, int(split)+1, err)
		}

		typ, id := zmq4.Sub, zmq4.SocketIdentity("fuzz")
		if accepted {
			typ = zmq4.Pub
		}
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("zmq4 panicked on bytes the guard passed: %v\n%x", r, passed)
			}
		}()
		zc, oerr := zmq4.Open(&replayConn{r: bytes.NewReader(passed)}, null.Security(), typ, id, accepted, nil)
		if oerr != nil {
			return
		}
		for range len(passed) + 1 {
			msg, rerr := zc.RecvMsg()
			if rerr != nil {
				return
			}
			n := 0
			for _, fr := range msg.Frames {
				n += len(fr)
			}
			if n > limit {
				t.Fatalf("zmq4 read a %d-byte message through a %d-byte guard", n, limit)
			}
		}
	})
}
