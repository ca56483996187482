// Package wsframe is RFC 6455 framing for the paths that build or read WebSocket frames by
// hand instead of through gorilla/websocket: the server's outbound data frames (a header in
// front of bytes that are already encoded, no copy) and the bench tool's thousands of raw
// client connections; and CloseGuard, which follows the frames a client sends on their way
// to gorilla/websocket and stops the close frames gorilla would answer with the wrong code.
// Everything else (upgrades, the frames the server reads, the Go client) goes through
// gorilla/websocket; this package is the one place where the frame layout is written down in
// sockmesh's own code.
package wsframe

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
)

// Opcode is a frame's opcode (RFC 6455 §5.2).
type Opcode byte

// The opcodes sockmesh sends or reads.
const (
	Continuation Opcode = 0x0
	Text         Opcode = 0x1
	Binary       Opcode = 0x2
	Close        Opcode = 0x8
	Ping         Opcode = 0x9
	Pong         Opcode = 0xa
)

// IsControl reports whether op is a control opcode (close, ping, pong and the reserved ones).
func (op Opcode) IsControl() bool { return op&0x8 != 0 }

const (
	// MaxServerHeader is the longest header of an unmasked (server) frame.
	MaxServerHeader = 10
	// MaxHeader is the longest header of any frame: a masked one with a 64-bit length.
	MaxHeader = 14
	// MaxControlPayload is the most a control frame may carry.
	MaxControlPayload = 125
	// maxLimit caps Parse's limit so that header + payload always fits an int.
	maxLimit = 1 << 40
)

// AppendHeader appends the header of a final frame of n payload bytes. With a mask key (a
// client frame) the caller must mask the payload with it; see AppendClientFrame.
func AppendHeader(dst []byte, op Opcode, n int, mask *[4]byte) []byte {
	var m byte
	if mask != nil {
		m = 0x80
	}
	dst = append(dst, 0x80|byte(op))
	switch {
	case n < 126:
		dst = append(dst, m|byte(n))
	case n <= 0xffff:
		dst = append(dst, m|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, m|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	if mask != nil {
		dst = append(dst, mask[:]...)
	}
	return dst
}

// zeroKey masks nothing: x XOR 0 is x, so a client frame can carry its payload as it is. A
// server must accept any key (RFC 6455 §5.3); the bench tool uses this one so that it never
// copies or rewrites what it sends.
var zeroKey [4]byte

// AppendClientFrame appends a final, masked frame holding p, with a zero mask key.
func AppendClientFrame(dst []byte, op Opcode, p []byte) []byte {
	dst = AppendHeader(dst, op, len(p), &zeroKey)
	return append(dst, p...)
}

// ClosePayload is the payload of a close frame: the status code and a reason, cut to fit a
// control frame.
func ClosePayload(code int, reason string) []byte {
	if len(reason) > MaxControlPayload-2 {
		reason = reason[:MaxControlPayload-2]
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// Frame is one parsed frame; Payload aliases the parsed buffer.
type Frame struct {
	Fin     bool
	Op      Opcode
	Payload []byte
}

// Errors of Parse. A frame that breaks one cannot be read past: the connection is unusable.
var (
	ErrReservedBits = errors.New("wsframe: reserved bits set (no extension was negotiated)")
	ErrBadControl   = errors.New("wsframe: control frame fragmented or longer than 125 bytes")
	ErrTooLarge     = errors.New("wsframe: frame larger than the limit")
)

// Parse reads the frame at the start of b. It returns size 0 and no error while b does not
// hold the whole frame yet (the header alone is enough to refuse one longer than maxPayload,
// so a peer announcing 2^63 bytes is refused after 10 bytes, not waited for). A masked
// payload is unmasked in place.
func Parse(b []byte, maxPayload uint64) (f Frame, size int, err error) {
	maxPayload = min(maxPayload, maxLimit)
	if len(b) < 2 {
		return Frame{}, 0, nil
	}
	if b[0]&0x70 != 0 {
		return Frame{}, 0, ErrReservedBits
	}
	f.Fin, f.Op = b[0]&0x80 != 0, Opcode(b[0]&0x0f)
	h, n := 2, uint64(b[1]&0x7f)
	switch n {
	case 126:
		if len(b) < 4 {
			return Frame{}, 0, nil
		}
		h, n = 4, uint64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		if len(b) < 10 {
			return Frame{}, 0, nil
		}
		h, n = 10, binary.BigEndian.Uint64(b[2:])
	}
	if f.Op.IsControl() && (!f.Fin || n > MaxControlPayload) {
		return Frame{}, 0, ErrBadControl
	}
	if n > maxPayload {
		return Frame{}, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, maxPayload)
	}
	masked := b[1]&0x80 != 0
	if masked {
		h += 4
	}
	if len(b) < h || uint64(len(b)-h) < n { // n <= maxPayload <= maxLimit: h+n cannot overflow
		return Frame{}, 0, nil
	}
	f.Payload = b[h : h+int(n)]
	if masked {
		key := b[h-4 : h]
		for i := range f.Payload {
			f.Payload[i] ^= key[i&3]
		}
	}
	return f, h + int(n), nil
}

// acceptGUID is the constant of RFC 6455 §1.3 that a server appends to the client's key.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKey is the Sec-WebSocket-Accept value that answers the Sec-WebSocket-Key key. It does
// not allocate for keys of the usual 24 characters (the bench tool computes one per connection).
func AcceptKey(key []byte) [28]byte {
	var buf [24 + len(acceptGUID)]byte
	in := append(append(buf[:0], key...), acceptGUID...)
	sum := sha1.Sum(in)
	var out [28]byte
	base64.StdEncoding.Encode(out[:], sum[:])
	return out
}
