package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"unicode/utf8"
)

// Frame encoding and decoding for the default SocketCluster codec
// (sc-formatter): '' ping/pong, one JSON object per packet, JSON arrays as
// batches. Encoding appends into pooled buffers; decoding of the hot packet
// (the server's #publish transmit) does not allocate.

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 64<<10 {
		return // let big buffers go
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

var errInvalidRaw = errors.New("client: json.RawMessage data is not valid JSON")

// appendData appends v as JSON. json.RawMessage is used as is (after a
// validity check), strings are escaped without reflection, everything else
// goes through encoding/json.
func appendData(dst []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case json.RawMessage:
		if len(x) == 0 {
			return append(dst, "null"...), nil
		}
		if !json.Valid(x) {
			return dst, errInvalidRaw
		}
		return append(dst, x...), nil
	case string:
		return appendString(dst, x), nil
	case bool:
		return strconv.AppendBool(dst, x), nil
	case int:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(dst, x, 10), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

// isAbsent reports whether data should be omitted from a packet, the way the
// JS client omits an undefined data field.
func isAbsent(v any) bool {
	if v == nil {
		return true
	}
	if r, ok := v.(json.RawMessage); ok && len(r) == 0 {
		return true
	}
	return false
}

// appendEvent appends {"event":E[,"data":D][,"cid":N]} (cid omitted when 0).
func appendEvent(dst []byte, event string, data any, cid int64) ([]byte, error) {
	dst = append(dst, `{"event":`...)
	dst = appendString(dst, event)
	if !isAbsent(data) {
		dst = append(dst, `,"data":`...)
		var err error
		if dst, err = appendData(dst, data); err != nil {
			return dst, err
		}
	}
	if cid != 0 {
		dst = append(dst, `,"cid":`...)
		dst = strconv.AppendInt(dst, cid, 10)
	}
	return append(dst, '}'), nil
}

// appendPublish appends {"event":"#publish","data":{"channel":C,"data":D}[,"cid":N]}.
func appendPublish(dst []byte, channel string, data any, cid int64) ([]byte, error) {
	dst = append(dst, `{"event":"#publish","data":{"channel":`...)
	dst = appendString(dst, channel)
	dst = append(dst, `,"data":`...)
	var err error
	if dst, err = appendData(dst, data); err != nil {
		return dst, err
	}
	dst = append(dst, '}')
	if cid != 0 {
		dst = append(dst, `,"cid":`...)
		dst = strconv.AppendInt(dst, cid, 10)
	}
	return append(dst, '}'), nil
}

// appendHandshake appends {"event":"#handshake","data":{"authToken":T|null},"cid":N}.
func appendHandshake(dst []byte, token string, cid int64) []byte {
	dst = append(dst, `{"event":"#handshake","data":{"authToken":`...)
	if token == "" {
		dst = append(dst, "null"...)
	} else {
		dst = appendString(dst, token)
	}
	dst = append(dst, `},"cid":`...)
	dst = strconv.AppendInt(dst, cid, 10)
	return append(dst, '}')
}

// appendSubscribe appends {"event":"#subscribe","data":{"channel":C},"cid":N}.
func appendSubscribe(dst []byte, channel string, cid int64) []byte {
	return appendSubscribeData(dst, channel, nil, cid)
}

// appendSubscribeData is appendSubscribe with the subscription's data (JSON; nil: none).
func appendSubscribeData(dst []byte, channel string, data []byte, cid int64) []byte {
	dst = append(dst, `{"event":"#subscribe","data":{"channel":`...)
	dst = appendString(dst, channel)
	if data != nil {
		dst = append(dst, `,"data":`...)
		dst = append(dst, data...)
	}
	dst = append(dst, `},"cid":`...)
	dst = strconv.AppendInt(dst, cid, 10)
	return append(dst, '}')
}

// appendResponse appends {"rid":R[,"data":D]} or {"rid":R,"error":E}; rid is
// the peer's cid echoed verbatim.
func appendResponse(dst []byte, rid []byte, data any, rerr error) ([]byte, error) {
	dst = append(dst, `{"rid":`...)
	dst = append(dst, rid...)
	if rerr != nil {
		var e *Error
		if !errors.As(rerr, &e) {
			e = &Error{Name: "Error", Message: rerr.Error()}
		}
		b, err := json.Marshal(e)
		if err != nil {
			return dst, err
		}
		dst = append(dst, `,"error":`...)
		dst = append(dst, b...)
	} else if !isAbsent(data) {
		dst = append(dst, `,"data":`...)
		var err error
		if dst, err = appendData(dst, data); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaping like encoding/json
// (without HTML escaping); invalid UTF-8 becomes U+FFFD.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// ---- decoding ----

var publishPrefix = []byte(`{"event":"#publish","data":{"channel":"`)

// parsePublishFast recognises the exact form servers encode a delivery in,
// {"event":"#publish","data":{"channel":"C","data":D}}, without allocating.
// channel and data alias frame. ok is false for anything else (other field
// order, escapes in the channel, extra fields, no data), which then goes
// through the generic decoder.
func parsePublishFast(frame []byte) (channel, data []byte, ok bool) {
	if !bytes.HasPrefix(frame, publishPrefix) {
		return nil, nil, false
	}
	rest := frame[len(publishPrefix):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return nil, nil, false
	}
	channel = rest[:end]
	for _, c := range channel {
		if c < 0x20 || c == '\\' {
			return nil, nil, false // escapes or invalid JSON: generic path
		}
	}
	rest = rest[end+1:]
	const dataKey = `,"data":`
	if !bytes.HasPrefix(rest, []byte(dataKey)) {
		return nil, nil, false
	}
	rest = bytes.TrimRight(rest[len(dataKey):], " \t\r\n")
	if len(rest) < 2 || rest[len(rest)-1] != '}' {
		return nil, nil, false
	}
	rest = bytes.TrimRight(rest[:len(rest)-1], " \t\r\n")
	if len(rest) < 1 || rest[len(rest)-1] != '}' {
		return nil, nil, false
	}
	data = bytes.Trim(rest[:len(rest)-1], " \t\r\n")
	// One JSON value exactly: rejects `1,"x":2` and similar.
	if !json.Valid(data) {
		return nil, nil, false
	}
	if !utf8.Valid(channel) {
		return nil, nil, false
	}
	return channel, data, true
}

// packet is the generic decoded form of one protocol object. The RawMessage
// fields are copies, independent of the read buffer.
type packet struct {
	Event json.RawMessage `json:"event"`
	Data  json.RawMessage `json:"data"`
	Cid   json.RawMessage `json:"cid"`
	Rid   json.RawMessage `json:"rid"`
	Error json.RawMessage `json:"error"`
}

// isJSONNumber reports whether a raw JSON value is a number.
func isJSONNumber(b []byte) bool {
	return len(b) > 0 && (b[0] == '-' || (b[0] >= '0' && b[0] <= '9'))
}

func isNull(b []byte) bool { return len(b) == 0 || string(b) == "null" }

// firstByte returns the first non-whitespace byte of b, or 0.
func firstByte(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}
