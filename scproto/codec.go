package scproto

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// PacketKind classifies one inbound frame (or one element of a batch).
type PacketKind uint8

const (
	// KindRaw is anything that is not a ping/pong, an event or a response. The protocol
	// says such frames are ignored (after the handshake) and never answered.
	KindRaw PacketKind = iota
	// KindPong is the v2 empty frame.
	KindPong
	// KindEvent is an invoke (with a numeric cid) or a transmit (without).
	KindEvent
	// KindResponse answers one of our own invokes.
	KindResponse
	// KindBatch is a JSON array of packets; Batch holds them in order.
	KindBatch
	// KindTooMany is a JSON array of more packets than the decoder was allowed; nothing in
	// it is decoded.
	KindTooMany
)

// Packet is one decoded SocketCluster packet. Data, CID and Error keep their raw JSON so
// that they are forwarded untouched (a cid is echoed verbatim as rid, as the real server does).
type Packet struct {
	Kind  PacketKind
	Event string
	Data  json.RawMessage
	// Data is nil when the packet has no data field; an explicit null is kept as "null".
	// CID is the raw JSON number of an invoke; nil for a transmit.
	CID json.RawMessage
	// RID is the response id of a KindResponse packet.
	RID   int64
	Error json.RawMessage
	Batch []Packet
}

// IsInvoke reports whether the event expects an answer.
func (p *Packet) IsInvoke() bool { return p.CID != nil }

// wirePacket holds the raw top-level fields of a packet object (sub-slices of the frame).
type wirePacket struct {
	Event, Data, CID, RID, Error json.RawMessage
}

var packetFields = []string{"event", "data", "cid", "rid", "error"}

// scanPacket fills w from one JSON object; false when b is not a valid JSON object.
func scanPacket(b []byte, w *wirePacket) bool {
	return ScanFields(b, packetFields, &w.Event, &w.Data, &w.CID, &w.RID, &w.Error)
}

// MaxBatch is Decode's bound on the packets of one array frame: the frame size limit already
// bounds memory, this bounds the work a single frame can ask for.
const MaxBatch = 10000

// Decode classifies a frame with DecodeLimit(frame, MaxBatch).
func Decode(frame []byte) Packet { return DecodeLimit(frame, MaxBatch) }

// DecodeLimit classifies a frame. It never fails: what cannot be understood is KindRaw, which
// is how the protocol treats it; an array of more than maxBatch packets is KindTooMany.
func DecodeLimit(frame []byte, maxBatch int) Packet {
	if len(frame) == 0 {
		return Packet{Kind: KindPong}
	}
	t := bytes.TrimLeft(frame, " \t\r\n")
	if len(t) == 0 {
		return Packet{Kind: KindRaw}
	}
	switch t[0] {
	case '{':
		var w wirePacket
		if !scanPacket(t, &w) {
			return Packet{Kind: KindRaw}
		}
		return classify(&w)
	case '[':
		end := skipValue(t, 0, 0)
		if end < 0 || skipWS(t, end) != len(t) {
			return Packet{Kind: KindRaw}
		}
		// The array is valid: walk its elements.
		var items [][]byte
		for i := skipWS(t, 1); i < end && t[i] != ']'; {
			e := skipValue(t, i, 1)
			items = append(items, t[i:e])
			if len(items) > maxBatch {
				return Packet{Kind: KindTooMany}
			}
			i = skipWS(t, e)
			if t[i] == ',' {
				i = skipWS(t, i+1)
			}
		}
		out := Packet{Kind: KindBatch, Batch: make([]Packet, 0, len(items))}
		for _, it := range items {
			var w wirePacket
			if it[0] != '{' || !scanPacket(it, &w) {
				out.Batch = append(out.Batch, Packet{Kind: KindRaw})
				continue
			}
			out.Batch = append(out.Batch, classify(&w))
		}
		return out
	}
	return Packet{Kind: KindRaw}
}

func classify(w *wirePacket) Packet {
	if len(w.Event) > 0 && w.Event[0] == '"' {
		name, ok := Unquote(w.Event)
		if !ok {
			return Packet{Kind: KindRaw}
		}
		// An explicit null stays: echoing it must answer "data":null, not omit data.
		p := Packet{Kind: KindEvent, Event: name, Data: w.Data}
		if IsJSONNumber(w.CID) {
			p.CID = w.CID
		}
		return p
	}
	if IsJSONNumber(w.RID) {
		rid, err := strconv.ParseFloat(string(w.RID), 64)
		if err != nil {
			return Packet{Kind: KindRaw}
		}
		return Packet{Kind: KindResponse, RID: int64(rid), Data: NullToNil(w.Data), Error: NullToNil(w.Error)}
	}
	return Packet{Kind: KindRaw}
}

func NullToNil(m json.RawMessage) json.RawMessage {
	if len(m) == 0 || string(m) == "null" {
		return nil
	}
	return m
}

func IsJSONNumber(m json.RawMessage) bool {
	if len(m) == 0 {
		return false
	}
	c := m[0]
	return c == '-' || (c >= '0' && c <= '9')
}

// AppendJSONString appends s as a JSON string literal.
func AppendJSONString(dst []byte, s string) []byte {
	if PlainJSONString(s) { // channel and event names nearly always: no allocation
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	b, _ := json.Marshal(s) // strings always marshal
	return append(dst, b...)
}

// EncodePublish builds the frame a subscriber receives for a publication:
// {"event":"#publish","data":{"channel":<ch>,"data":<data>}}. It is built once per
// publication and the same bytes are queued for every subscriber.
func EncodePublish(channel string, data json.RawMessage) []byte {
	// 50 bytes of framing around the two; 8 to spare for escapes in the name. One
	// allocation: a capacity short by a byte made append copy every frame once more.
	b := make([]byte, 0, 58+len(channel)+len(data))
	b = append(b, `{"event":"#publish","data":{"channel":`...)
	b = AppendJSONString(b, channel)
	if len(data) > 0 {
		b = append(b, `,"data":`...)
		b = append(b, data...)
	}
	return append(b, "}}"...)
}

// EncodeEvent builds a transmit (cid 0) or an invoke frame.
func EncodeEvent(event string, data json.RawMessage, cid int64) []byte {
	b := make([]byte, 0, 56+len(event)+len(data)) // framing and a cid: 47
	b = append(b, `{"event":`...)
	b = AppendJSONString(b, event)
	if len(data) > 0 {
		b = append(b, `,"data":`...)
		b = append(b, data...)
	}
	if cid != 0 {
		b = append(b, `,"cid":`...)
		b = AppendInt(b, cid)
	}
	return append(b, '}')
}

// EncodeResponse builds {"rid":cid[,"data":d]} or {"rid":cid,"error":e}.
func EncodeResponse(cid json.RawMessage, data json.RawMessage, errObj json.RawMessage) []byte {
	b := make([]byte, 0, 18+len(cid)+len(data)+len(errObj))
	b = append(b, `{"rid":`...)
	b = append(b, cid...)
	if len(errObj) > 0 {
		b = append(b, `,"error":`...)
		b = append(b, errObj...)
	} else if len(data) > 0 {
		b = append(b, `,"data":`...)
		b = append(b, data...)
	}
	return append(b, '}')
}

func AppendInt(b []byte, v int64) []byte {
	var tmp [20]byte
	i := len(tmp)
	neg := v < 0
	if neg {
		v = -v
	}
	for {
		i--
		tmp[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	if neg {
		i--
		tmp[i] = '-'
	}
	return append(b, tmp[i:]...)
}

// PlainJSONString reports whether s can be written between quotes as it is: no escaping,
// and nothing encoding/json would escape either.
func PlainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// PublishData is the data of a #publish event, its fields as raw JSON.
type PublishData struct {
	Channel json.RawMessage
	Data    json.RawMessage
}

var publishFields = []string{"channel", "data"}

// Scan reads {"channel":…,"data":…} (sub-slices of b); false when b is not an object.
func (pd *PublishData) Scan(b []byte) bool {
	return ScanFields(b, publishFields, &pd.Channel, &pd.Data)
}
