package bench

import (
	"bytes"
	"strconv"
)

// The publication payload is a JSON string of a fixed format, written and
// read by hand so that neither side decodes JSON per message:
//
//	"smb|<step>|<publisher>|<seq>|<sent ns>|xxxx…"
//
// step is the measurement step (0 = warm-up), publisher the index of the
// publishing connection, seq that publisher's sequence number on the channel
// (from 1), sent the send time in nanoseconds on the tool's monotonic clock.
// Padding of 'x' brings the JSON value to the requested size. A subscriber
// finds deliveries in a frame by searching for the marker, which works alike
// for single packets and batches and whatever the server's field order.
var marker = []byte(`"smb|`)

// minPayload is the smallest JSON value AppendPayload produces for small numbers.
const minPayload = len(`"smb|0|0|1|1|"`)

// Payload is the decoded header of one publication.
type Payload struct {
	Step      uint32
	Publisher uint32
	Seq       uint32
	SentNanos int64
}

// AppendPayload appends the JSON string for p to dst, padded with 'x' so
// that the appended value is size bytes long (or longer when the header
// alone needs more).
func AppendPayload(dst []byte, p Payload, size int) []byte {
	start := len(dst)
	dst = append(dst, marker...)
	dst = strconv.AppendUint(dst, uint64(p.Step), 10)
	dst = append(dst, '|')
	dst = strconv.AppendUint(dst, uint64(p.Publisher), 10)
	dst = append(dst, '|')
	dst = strconv.AppendUint(dst, uint64(p.Seq), 10)
	dst = append(dst, '|')
	dst = strconv.AppendInt(dst, p.SentNanos, 10)
	dst = append(dst, '|')
	for len(dst)-start < size-1 {
		dst = append(dst, 'x')
	}
	return append(dst, '"')
}

// ParsePayload decodes the payload starting at b[0] (which must be the
// opening quote of the marker). It returns the header and the number of
// bytes read, up to and including the last '|' of the header.
func ParsePayload(b []byte) (p Payload, n int, ok bool) {
	if !bytes.HasPrefix(b, marker) {
		return p, 0, false
	}
	i := len(marker)
	var v [4]uint64
	for k := range v {
		start := i
		var x uint64
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			x = x*10 + uint64(b[i]-'0')
			i++
		}
		if i == start || i-start > 19 || i >= len(b) || b[i] != '|' {
			return Payload{}, 0, false
		}
		v[k] = x
		i++
	}
	if v[0] > 1<<32-1 || v[1] > 1<<32-1 || v[2] > 1<<32-1 || v[3] > 1<<63-1 {
		return Payload{}, 0, false
	}
	return Payload{Step: uint32(v[0]), Publisher: uint32(v[1]), Seq: uint32(v[2]), SentNanos: int64(v[3])}, i, true
}

// nextMarker returns where the next payload marker starts in b, or -1. It looks for the
// marker's '|' and checks the bytes before it: '"', the marker's first byte, opens every
// JSON string of a frame, and bytes.Index stopped at each of them (a third of the tool's
// CPU at 2.5M deliveries/s), while '|' is rare outside payload headers.
func nextMarker(b []byte) int {
	const head = len(`"smb`)
	for off := 0; ; {
		i := bytes.IndexByte(b[off:], '|')
		if i < 0 {
			return -1
		}
		if j := off + i - head; j >= 0 && bytes.Equal(b[j:off+i], marker[:head]) {
			return j
		}
		off += i + 1
	}
}

// scanPayloads calls fn for every payload found in frame and returns how
// many were found.
func scanPayloads(frame []byte, fn func(Payload)) int {
	n := 0
	for {
		i := nextMarker(frame)
		if i < 0 {
			return n
		}
		frame = frame[i:]
		p, used, ok := ParsePayload(frame)
		if !ok {
			frame = frame[len(marker):]
			continue
		}
		fn(p)
		n++
		frame = frame[used:]
	}
}
