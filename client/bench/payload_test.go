package bench

import (
	"encoding/json"
	"testing"
)

func TestPayloadRoundTripAndSize(t *testing.T) {
	for _, size := range []int{0, 10, minPayload, 100, 1000} {
		p := Payload{Step: 3, Publisher: 7, Seq: 4294967295, SentNanos: 1234567890123}
		b := AppendPayload([]byte("prefix"), p, size)
		v := b[len("prefix"):]
		if size > len(v) || (len(v) != size && size >= 40) {
			t.Fatalf("size %d: got %d bytes %s", size, len(v), v)
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			t.Fatalf("size %d: not a JSON string: %s", size, v)
		}
		got, n, ok := ParsePayload(v)
		if !ok || got != p || v[n-1] != '|' {
			t.Fatalf("size %d: parsed %+v %d %v from %s", size, got, n, ok, v)
		}
	}
}

func TestParsePayloadRejectsGarbage(t *testing.T) {
	for _, s := range []string{``, `"smb|`, `"smb|1|2|3|`, `"smb|1|2|3|4`, `"smb|a|2|3|4|`, `"smb||2|3|4|`,
		`"smb|1|2|3|99999999999999999999|`, `"smb|4294967296|2|3|4|`, `"xmb|1|2|3|4|`} {
		if p, _, ok := ParsePayload([]byte(s)); ok {
			t.Errorf("%s parsed as %+v", s, p)
		}
	}
}

func TestScanFindsEveryDeliveryInSinglesAndBatches(t *testing.T) {
	mk := func(seq uint32) string {
		return `{"event":"#publish","data":{"channel":"c","data":` + string(AppendPayload(nil, Payload{Step: 1, Publisher: 2, Seq: seq, SentNanos: 99}, 60)) + `}}`
	}
	single := mk(1)
	batch := `[` + mk(2) + `,{"rid":5},` + mk(3) + `,` + `{"event":"#publish","data":{"channel":"c","data":"smb|bad"}}` + `,` +
		`{"event":"#publish","data":{"channel":"|a|smb|","data":"|"}}` + `,` + mk(4) + `]`
	var seqs []uint32
	n := scanPayloads([]byte(single), func(p Payload) { seqs = append(seqs, p.Seq) })
	n += scanPayloads([]byte(batch), func(p Payload) { seqs = append(seqs, p.Seq) })
	if n != 4 || len(seqs) != 4 || seqs[0] != 1 || seqs[3] != 4 {
		t.Fatalf("found %d: %v", n, seqs)
	}
}

func TestPayloadCodecDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 256)
	frame := []byte(`{"event":"#publish","data":{"channel":"c","data":` + string(AppendPayload(nil, Payload{1, 2, 3, 4}, 100)) + `}}`)
	n := testing.AllocsPerRun(1000, func() {
		buf = AppendPayload(buf[:0], Payload{Step: 1, Publisher: 2, Seq: 3, SentNanos: 4}, 100)
		if _, _, ok := ParsePayload(buf); !ok {
			t.Fatal("parse failed")
		}
	})
	if n != 0 {
		t.Fatalf("codec allocates %v times", n)
	}
	r := &runner{}
	c := &conn{r: r, lastSeq: make([]uint32, 4)}
	r.activeStep.Store(1)
	if n := testing.AllocsPerRun(1000, func() { r.deliveries(c, frame) }); n != 0 {
		t.Fatalf("delivery scan allocates %v times", n)
	}
}

func TestAppendFrameHeaders(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		f := appendFrame(nil, make([]byte, n))
		hdr := len(f) - n
		want := map[bool]int{true: 6}[n < 126]
		if n >= 126 && n < 1<<16 {
			want = 8
		} else if n >= 1<<16 {
			want = 14
		}
		if hdr != want || f[0] != 0x81 || f[1]&0x80 == 0 {
			t.Fatalf("len %d: header %d bytes (%x), want %d", n, hdr, f[:2], want)
		}
	}
}

func BenchmarkDeliveriesBatch(b *testing.B) {
	var frame []byte
	frame = append(frame, '[')
	for i := 0; i < 10; i++ {
		if i > 0 {
			frame = append(frame, ',')
		}
		frame = append(frame, `{"event":"#publish","data":{"channel":"bench.x.fanout","data":`...)
		frame = AppendPayload(frame, Payload{Step: 1, Publisher: 0, Seq: uint32(i + 1), SentNanos: 1}, 100)
		frame = append(frame, "}}"...)
	}
	frame = append(frame, ']')
	r := &runner{}
	c := &conn{r: r, lastSeq: make([]uint32, 1)}
	r.activeStep.Store(1)
	b.SetBytes(int64(len(frame)))
	for i := 0; i < b.N; i++ {
		c.lastSeq[0] = 0
		r.deliveries(c, frame)
	}
}

// A frame of 60 batched deliveries of 100 B, as a fan-out subscriber reads them.
func BenchmarkScanBatch(b *testing.B) {
	frame := []byte{'['}
	for i := range 60 {
		if i > 0 {
			frame = append(frame, ',')
		}
		frame = append(frame, `{"event":"#publish","data":{"channel":"fanout","data":`...)
		frame = AppendPayload(frame, Payload{Step: 3, Publisher: 1, Seq: uint32(1000 + i), SentNanos: 123456789012345}, 100)
		frame = append(frame, `}}`...)
	}
	frame = append(frame, ']')
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if scanPayloads(frame, func(Payload) {}) != 60 {
			b.Fatal("not every delivery found")
		}
	}
}
