package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/text/cases"
	"golang.org/x/text/language"
)

// metaKey title-cases a READY property name exactly as zmq4 v0.17.0 does (toTitle). A Caser
// is not safe for concurrent use, hence one per call (a few per connection, in its handshake).
func metaKey(k string) string { return cases.Title(language.Und, cases.NoLower).String(k) }

// zmtpGuard checks, byte by byte as they arrive, what a peer sends on one mesh connection before
// zmq4 sees it. zmq4 v0.17.0 trusts the wire: it allocates whatever length a frame header
// announces (73 bytes announcing 1 TiB were a fatal out-of-memory), indexes READY metadata
// without bounds checks (a panic in its accept goroutine, where nothing recovers), appends
// frames to a message for as long as MORE is set, keeps every subscription a peer sends, and
// parks non-subscription messages on a 10-slot channel nobody reads (the connection's reader
// goroutine then blocks for ever). The guard rejects all of that, and it does so before the
// bytes that would complete the offending header or body are handed to zmq4: a violation is
// found in the Read that delivers them, which then fails instead.
//
// What a valid stream is depends on the side:
//   - both: a 64-byte ZMTP 3 greeting with the NULL mechanism, then one READY command whose
//     metadata is well formed;
//   - accepted (our PUB reading a peer's SUB): only single-frame subscribe/unsubscribe messages
//     for a mesh topic (0x01 or 0x00, then a topic that starts with a byte below 0x20 and ends
//     with NUL), at most maxSubs of them per connection;
//   - dialled (our SUB reading a peer's PUB): messages of at most maxFrames frames and
//     maxMessage bytes in all.
//
// Commands after READY (ZMTP PING and the like) are allowed when short, on both sides.
//
// The guard keeps no more than cmdMax bytes of any body (commands and subscriptions, which it
// must see whole); message frames are only counted.
type zmtpGuard struct {
	accepted   bool
	maxMessage uint64 // bytes of all frames of one message
	maxFrames  int
	maxSubs    int

	greet  int // greeting bytes seen
	ready  bool
	nsubs  int
	hdr    [9]byte
	nhdr   int
	need   int    // header length once its first byte is known (2 or 9)
	flags  byte   // flags of the current frame
	left   uint64 // body bytes of the current frame still to come
	inBody bool
	keep   bool   // the current body is collected in body (commands, subscriptions)
	body   []byte // collected body
	frames int    // frames of the current message so far
	msgLen uint64 // bytes of the current message so far

	// identity is the Identity property of the peer's READY, when it sent one.
	identity string
}

const (
	zmtpMore    = 0x01
	zmtpLong    = 0x02
	zmtpCommand = 0x04

	// cmdMax bounds a command body and a subscription body: READY metadata of a zmq4 peer is
	// its socket type and identity (a Serf name), about 60 bytes.
	cmdMax = 1024
	// subsMax: our SUB sends two subscriptions per connection; room for a few more.
	subsMax = 64
	// framesMax: our messages have two frames.
	framesMax = 4
)

// Errors of the guard, each a reason in sockmesh_mesh_rejected_connections_total.
var (
	errBadGreeting   = errors.New("mesh: not a ZMTP 3 NULL greeting")
	errFrameTooLarge = errors.New("mesh: frame larger than the mesh frame limit")
	errBadFrame      = errors.New("mesh: malformed or unexpected ZMTP frame")
)

// rejectReason maps a guard or auth error to its metric label.
func rejectReason(err error) string {
	switch {
	case errors.Is(err, errBadGreeting):
		return "bad_greeting"
	case errors.Is(err, errFrameTooLarge):
		return "frame_too_large"
	case errors.Is(err, errBadFrame):
		return "bad_frame"
	case errors.Is(err, errAuth):
		return "auth"
	case errors.Is(err, errTooManyHandshakes):
		return "too_many_handshakes"
	}
	return "other"
}

func newZMTPGuard(accepted bool, maxMessage uint64) *zmtpGuard {
	return &zmtpGuard{accepted: accepted, maxMessage: maxMessage, maxFrames: framesMax, maxSubs: subsMax}
}

// handshakeDone reports whether the peer's greeting and READY have been seen whole.
func (g *zmtpGuard) handshakeDone() bool { return g.ready }

// feed checks p, the next bytes from the peer. It returns an error at the first violation;
// nothing after it is looked at, and the connection must be closed.
func (g *zmtpGuard) feed(p []byte) error {
	for len(p) > 0 {
		if g.greet < zmtpGreetingLen {
			k := min(zmtpGreetingLen-g.greet, len(p))
			for i := range k {
				if err := checkGreetingByte(g.greet+i, p[i]); err != nil {
					return err
				}
			}
			g.greet += k
			p = p[k:]
			continue
		}
		if !g.inBody {
			g.hdr[g.nhdr] = p[0]
			g.nhdr++
			p = p[1:]
			if g.nhdr == 1 {
				g.flags = g.hdr[0]
				if g.flags&^(zmtpMore|zmtpLong|zmtpCommand) != 0 {
					return fmt.Errorf("%w: reserved flag bits %#02x", errBadFrame, g.flags)
				}
				g.need = 2
				if g.flags&zmtpLong != 0 {
					g.need = 9
				}
			}
			if g.nhdr < g.need {
				continue
			}
			var size uint64
			if g.need == 2 {
				size = uint64(g.hdr[1])
			} else {
				size = binary.BigEndian.Uint64(g.hdr[1:9])
			}
			g.nhdr = 0
			if err := g.header(size); err != nil {
				return err
			}
			if g.left == 0 {
				if err := g.endFrame(); err != nil {
					return err
				}
			}
			continue
		}
		k := uint64(len(p))
		if k > g.left {
			k = g.left
		}
		if g.keep {
			g.body = append(g.body, p[:k]...)
		}
		g.left -= k
		p = p[k:]
		if g.left == 0 {
			if err := g.endFrame(); err != nil {
				return err
			}
		}
	}
	return nil
}

// header decides about a frame from its header alone, before any of its body is accepted.
func (g *zmtpGuard) header(size uint64) error {
	cmd := g.flags&zmtpCommand != 0
	more := g.flags&zmtpMore != 0
	switch {
	case cmd:
		if more || g.frames > 0 {
			return fmt.Errorf("%w: command inside a multi-frame message", errBadFrame)
		}
		limit := uint64(cmdMax)
		if g.ready {
			limit = 255 // PING and friends
		}
		if size > limit {
			return fmt.Errorf("%w: command of %d bytes (limit %d)", errFrameTooLarge, size, limit)
		}
		if size == 0 {
			return fmt.Errorf("%w: empty command", errBadFrame)
		}
		g.keep = true
	case !g.ready:
		return fmt.Errorf("%w: message before READY", errBadFrame)
	case g.accepted:
		// A subscriber's side of PUB/SUB carries subscriptions only.
		if more {
			return fmt.Errorf("%w: multi-frame message from a subscriber", errBadFrame)
		}
		if size > cmdMax {
			return fmt.Errorf("%w: subscription of %d bytes (limit %d)", errFrameTooLarge, size, cmdMax)
		}
		if size < 2 {
			return fmt.Errorf("%w: subscription of %d bytes", errBadFrame, size)
		}
		g.keep = true
	default:
		if g.frames >= g.maxFrames {
			return fmt.Errorf("%w: more than %d frames in a message", errBadFrame, g.maxFrames)
		}
		if size > g.maxMessage || g.msgLen+size > g.maxMessage {
			return fmt.Errorf("%w: %d bytes announced (limit %d)", errFrameTooLarge, g.msgLen+size, g.maxMessage)
		}
		g.msgLen += size
		g.keep = false
	}
	g.inBody = true
	g.left = size
	if g.keep {
		g.body = g.body[:0]
	}
	return nil
}

// endFrame checks a complete frame (its body is in g.body when kept).
func (g *zmtpGuard) endFrame() error {
	g.inBody = false
	if g.flags&zmtpCommand != 0 {
		if err := g.command(g.body); err != nil {
			return err
		}
		g.keep = false
		return nil
	}
	if g.accepted {
		b := g.body
		// [0x01|0x00] + a mesh topic: a control byte below 0x20 first, NUL last.
		if (b[0] != 0 && b[0] != 1) || len(b) < 3 || b[1] >= 0x20 || b[len(b)-1] != 0 {
			return fmt.Errorf("%w: not a mesh subscription", errBadFrame)
		}
		g.nsubs++
		if g.nsubs > g.maxSubs {
			return fmt.Errorf("%w: more than %d subscriptions", errBadFrame, g.maxSubs)
		}
		g.keep = false
		return nil
	}
	g.frames++
	if g.flags&zmtpMore == 0 {
		g.frames, g.msgLen = 0, 0
	}
	return nil
}

func (g *zmtpGuard) command(b []byte) error {
	n := int(b[0])
	if n == 0 || n > len(b)-1 {
		return fmt.Errorf("%w: command name", errBadFrame)
	}
	name, body := string(b[1:1+n]), b[1+n:]
	if g.ready {
		return nil
	}
	if name != "READY" {
		return fmt.Errorf("%w: %q before READY", errBadFrame, name)
	}
	// Metadata: (name length byte, name, 4-byte value length, value)*, all inside the body.
	var sockType string
	for len(body) > 0 {
		kl := int(body[0])
		if kl == 0 || 1+kl+4 > len(body) {
			return fmt.Errorf("%w: READY metadata", errBadFrame)
		}
		// Keys as zmq4 reads them (title-cased), so the guard sees what zmq4 will.
		key := metaKey(string(body[1 : 1+kl]))
		vl := binary.BigEndian.Uint32(body[1+kl : 1+kl+4])
		rest := body[1+kl+4:]
		if uint64(vl) > uint64(len(rest)) {
			return fmt.Errorf("%w: READY metadata value", errBadFrame)
		}
		switch key {
		case "Identity":
			g.identity = string(rest[:vl])
		case "Socket-Type":
			sockType = string(rest[:vl])
		}
		body = rest[vl:]
	}
	// zmq4 panics on a socket type it does not know (SocketType.IsCompatible); only the
	// counterparts of our own sockets may pass.
	want := [2]string{"PUB", "XPUB"}
	if g.accepted {
		want = [2]string{"SUB", "XSUB"}
	}
	if sockType != want[0] && sockType != want[1] {
		return fmt.Errorf("%w: READY socket type %q", errBadFrame, sockType)
	}
	g.ready = true
	return nil
}

// checkGreetingByte checks byte i of a ZMTP 3 greeting: signature, major version 3, the NULL
// mechanism (the only one the mesh speaks), an as-server flag of 0 or 1.
func checkGreetingByte(i int, b byte) error {
	ok := true
	switch {
	case i == 0:
		ok = b == 0xFF
	case i == 9:
		ok = b == 0x7F
	case i == 10:
		ok = b == 3
	case i >= 12 && i < 16:
		ok = b == "NULL"[i-12]
	case i >= 16 && i < 32:
		ok = b == 0
	case i == 32:
		ok = b <= 1
	}
	if !ok {
		return fmt.Errorf("%w: byte %d is %#02x", errBadGreeting, i, b)
	}
	return nil
}
