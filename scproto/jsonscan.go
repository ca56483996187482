package scproto

import (
	"encoding/json"
	"unicode/utf8"
)

// A small validating JSON scanner for the hot path. Every inbound frame is JSON, and a
// publication is looked at twice (the packet, then its data); encoding/json did that with
// reflection and a copy of every raw field, which was a quarter of a busy node's CPU. The
// scanner validates exactly what json.Valid accepts and hands out sub-slices of the frame
// instead of copies. Keys match exactly (case-sensitive), as JSON.parse does in the
// reference server; encoding/json would also have matched "EVENT".

// maxJSONDepth bounds nesting, as encoding/json does.
const maxJSONDepth = 10000

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString expects b[i] == '"' and returns the index after the closing quote (-1: not a
// valid string) and whether the string has escapes.
func skipString(b []byte, i int) (int, bool) {
	esc := false
	for i++; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, esc
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				return -1, esc
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return -1, esc
				}
				i += 6
			default:
				return -1, esc
			}
		case c < 0x20:
			return -1, esc
		default:
			i++
		}
	}
	return -1, esc
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func skipNumber(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return -1
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return -1
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i
}

func skipLiteral(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// skipValue returns the index after the JSON value starting at b[i] (no leading
// whitespace), or -1 when there is no valid value there.
func skipValue(b []byte, i, depth int) int {
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; {
	case c == '"':
		j, _ := skipString(b, i)
		return j
	case c == '{' || c == '[':
		if depth >= maxJSONDepth {
			return -1
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == closer {
			return i + 1
		}
		for {
			if c == '{' {
				if i >= len(b) || b[i] != '"' {
					return -1
				}
				if i, _ = skipString(b, i); i < 0 {
					return -1
				}
				i = skipWS(b, i)
				if i >= len(b) || b[i] != ':' {
					return -1
				}
				i = skipWS(b, i+1)
			}
			if i = skipValue(b, i, depth+1); i < 0 {
				return -1
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return -1
			}
			if b[i] == closer {
				return i + 1
			}
			if b[i] != ',' {
				return -1
			}
			i = skipWS(b, i+1)
		}
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	case c == '-' || isDigit(c):
		return skipNumber(b, i)
	}
	return -1
}

// objectScanner walks the members of one JSON object, validating as it goes: every value
// is walked once (a separate validating pass first would walk the frame twice).
type objectScanner struct {
	b   []byte
	i   int
	n   int  // members returned so far
	bad bool // b is not exactly one valid JSON object; known once next returns false
}

// startObject prepares to scan b, which must hold one JSON object (whitespace around it
// allowed); false when b does not start like one. Whether the rest is valid is known
// only when next has returned false (see bad).
func startObject(b []byte) (objectScanner, bool) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return objectScanner{}, false
	}
	return objectScanner{b: b, i: i + 1}, true
}

// next returns the next member: its key as written between the quotes (escaped is true
// when the key has escapes, see keyIs) and its raw value. It returns false at the end of
// the object, or at the first invalid byte (then bad is set).
func (o *objectScanner) next() (key []byte, escaped bool, val []byte, ok bool) {
	b := o.b
	i := skipWS(b, o.i)
	if i < len(b) && b[i] == '}' { // the end: of "{}" or after a member
		o.bad = skipWS(b, i+1) != len(b)
		return nil, false, nil, false
	}
	if o.n > 0 {
		if i >= len(b) || b[i] != ',' {
			o.bad = true
			return nil, false, nil, false
		}
		i = skipWS(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		o.bad = true
		return nil, false, nil, false
	}
	ke, esc := skipString(b, i)
	if ke < 0 {
		o.bad = true
		return nil, false, nil, false
	}
	key = b[i+1 : ke-1]
	i = skipWS(b, ke)
	if i >= len(b) || b[i] != ':' {
		o.bad = true
		return nil, false, nil, false
	}
	i = skipWS(b, i+1)
	ve := skipValue(b, i, 1)
	if ve < 0 {
		o.bad = true
		return nil, false, nil, false
	}
	o.i, o.n = ve, o.n+1
	return key, esc, b[i:ve], true
}

// keyIs compares a key from next with name, unescaping it if needed.
func keyIs(key []byte, escaped bool, name string) bool {
	if !escaped {
		return string(key) == name
	}
	var s string
	q := make([]byte, 0, len(key)+2)
	q = append(append(append(q, '"'), key...), '"')
	return json.Unmarshal(q, &s) == nil && s == name
}

// Unquote returns the string a valid JSON string literal stands for, without allocating
// for the common names the protocol uses.
func Unquote(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	in := raw[1 : len(raw)-1]
	for _, c := range in {
		if c == '\\' || c >= utf8.RuneSelf {
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return "", false
			}
			return s, true
		}
	}
	switch string(in) { // the compiler compares without converting
	case "#publish":
		return "#publish", true
	case "#subscribe":
		return "#subscribe", true
	case "#unsubscribe":
		return "#unsubscribe", true
	case "#handshake":
		return "#handshake", true
	case "#authenticate":
		return "#authenticate", true
	case "#removeAuthToken":
		return "#removeAuthToken", true
	}
	return string(in), true
}

// ScanFields reads the members of the JSON object b named in names into the matching
// dst (sub-slices of b; a repeated key counts once, the last one winning, as in
// encoding/json); false when b is not a valid JSON object.
func ScanFields(b []byte, names []string, dst ...*json.RawMessage) bool {
	o, ok := startObject(b)
	if !ok {
		return false
	}
	for {
		k, esc, v, ok := o.next()
		if !ok {
			return !o.bad
		}
		for i, name := range names {
			if keyIs(k, esc, name) {
				*dst[i] = v
				break
			}
		}
	}
}
