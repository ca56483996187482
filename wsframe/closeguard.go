package wsframe

import (
	"encoding/binary"
	"io"
	"strconv"
	"unicode/utf8"
)

// CloseError is the close a CloseGuard found that the connection must fail with.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return "wsframe: peer's close frame fails the connection (" + strconv.Itoa(e.Code) + "): " + e.Reason
}

// CloseGuard passes a peer's frame stream through to a frame reader of its own (gorilla's)
// and stops it in front of a close frame that RFC 6455 says fails the connection, where that
// reader would answer wrongly: a 1-byte body, which gorilla takes for "no status code" and
// echoes as a clean close (RFC 6455 §5.5.1 requires a code first: 1002), and a reason that
// is not UTF-8, which gorilla answers with 1002 (§8.1 and socketcluster-server: 1007).
//
// The guard only follows the frame layout (headers, payload lengths) and copies at most a
// control frame's 125 bytes; it never rewrites what it passes. It withholds the last byte of
// such a close frame, so the reader above never holds it whole, and Read then returns a
// *CloseError: the caller answers with that code. Everything else is the reader's to judge.
type CloseGuard struct {
	R   io.Reader
	err error

	hdr  [MaxHeader]byte
	nh   int    // header bytes of the current frame seen so far
	left uint64 // payload bytes of the current frame not yet passed (after its header)
	// inBody: the header is complete and left payload bytes follow; closing: the frame is a
	// close frame whose body is being copied into body.
	inBody  bool
	closing bool
	body    [MaxControlPayload]byte
	nb      int
}

// Read reads from R; see CloseGuard.
func (g *CloseGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.R.Read(p)
	if cut, bad := g.scan(p[:n]); bad != nil {
		g.err = bad
		return cut, bad
	}
	return n, err
}

// scan follows the frame layout through b; on a close frame that fails the connection it
// returns the offset of that frame's last byte and the error.
func (g *CloseGuard) scan(b []byte) (int, error) {
	for i := 0; i < len(b); {
		if !g.inBody {
			g.hdr[g.nh] = b[i]
			g.nh++
			i++
			need := headerLen(g.hdr[:g.nh])
			if g.nh < need {
				continue
			}
			g.startBody()
			if g.left == 0 { // an empty frame; an empty close body is valid
				g.inBody, g.nh = false, 0
			}
			continue
		}
		k := len(b) - i
		if uint64(k) > g.left {
			k = int(g.left)
		}
		if g.closing {
			copy(g.body[g.nb:], b[i:i+k])
			g.nb += k
		}
		g.left -= uint64(k)
		i += k
		if g.left > 0 {
			continue
		}
		var bad error
		if g.closing {
			bad = g.judgeClose()
		}
		g.inBody, g.nh = false, 0
		if bad != nil {
			return i - 1, bad
		}
	}
	return 0, nil
}

// headerLen is the length of the header that starts with h, as far as h tells it (never
// more than MaxHeader, never less than len(h) once h is whole).
func headerLen(h []byte) int {
	if len(h) < 2 {
		return 2
	}
	n := 2
	switch h[1] & 0x7f {
	case 126:
		n = 4
	case 127:
		n = 10
	}
	if h[1]&0x80 != 0 {
		n += 4
	}
	return n
}

// startBody reads the length and kind of the frame whose header is whole in hdr.
func (g *CloseGuard) startBody() {
	h := g.hdr[:g.nh]
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		n = uint64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		n = binary.BigEndian.Uint64(h[2:])
	}
	g.left, g.inBody = n, true
	// A close frame longer than a control frame may be is the reader's to refuse (1002);
	// the guard just follows it.
	g.closing = Opcode(h[0]&0x0f) == Close && n <= MaxControlPayload
	g.nb = 0
}

// judgeClose checks a whole close body; its mask key is the last 4 header bytes.
func (g *CloseGuard) judgeClose() error {
	body := g.body[:g.nb]
	if g.hdr[1]&0x80 != 0 {
		key := g.hdr[g.nh-4 : g.nh]
		for i := range body {
			body[i] ^= key[i&3]
		}
	}
	switch {
	case len(body) == 1:
		return &CloseError{Code: 1002, Reason: "close frame with a 1-byte body"}
	case len(body) >= 2 && ValidCloseCode(int(binary.BigEndian.Uint16(body))) && !utf8.Valid(body[2:]):
		return &CloseError{Code: 1007, Reason: "close reason is not UTF-8"}
	}
	return nil
}

// ValidCloseCode reports whether a peer may send code in a close frame (RFC 6455 §7.4: the
// defined codes that may go on the wire, and 3000–4999 for libraries and applications).
func ValidCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1014:
		return code != 1004 && code != 1005 && code != 1006
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
