package scproto

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// referenceDecode is what Decode computes, written with encoding/json (exact keys, the last
// duplicate winning): the scanner must agree with it on every input.
func referenceDecode(b []byte) Packet {
	t := bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return Packet{Kind: KindPong}
	}
	if len(t) == 0 {
		return Packet{Kind: KindRaw}
	}
	one := func(raw []byte) Packet {
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil || m == nil {
			return Packet{Kind: KindRaw}
		}
		w := wirePacket{Event: m["event"], Data: m["data"], CID: m["cid"], RID: m["rid"], Error: m["error"]}
		if len(w.Event) > 0 && w.Event[0] == '"' {
			var name string
			if json.Unmarshal(w.Event, &name) != nil {
				return Packet{Kind: KindRaw}
			}
			p := Packet{Kind: KindEvent, Event: name, Data: w.Data}
			if IsJSONNumber(w.CID) {
				p.CID = w.CID
			}
			return p
		}
		if IsJSONNumber(w.RID) {
			var rid float64
			if json.Unmarshal(w.RID, &rid) != nil {
				return Packet{Kind: KindRaw}
			}
			return Packet{Kind: KindResponse, RID: int64(rid), Data: NullToNil(w.Data), Error: NullToNil(w.Error)}
		}
		return Packet{Kind: KindRaw}
	}
	switch t[0] {
	case '{':
		return one(t)
	case '[':
		var items []json.RawMessage
		if json.Unmarshal(t, &items) != nil {
			return Packet{Kind: KindRaw}
		}
		if len(items) > MaxBatch {
			return Packet{Kind: KindTooMany}
		}
		out := Packet{Kind: KindBatch, Batch: make([]Packet, 0, len(items))}
		for _, it := range items {
			if it[0] != '{' {
				out.Batch = append(out.Batch, Packet{Kind: KindRaw})
				continue
			}
			out.Batch = append(out.Batch, one(it))
		}
		return out
	}
	return Packet{Kind: KindRaw}
}

func samePacket(a, b *Packet) bool {
	if a.Kind != b.Kind || a.Event != b.Event || !bytes.Equal(a.Data, b.Data) || (a.Data == nil) != (b.Data == nil) ||
		!bytes.Equal(a.CID, b.CID) || a.RID != b.RID || !bytes.Equal(a.Error, b.Error) || len(a.Batch) != len(b.Batch) {
		return false
	}
	for i := range a.Batch {
		if !samePacket(&a.Batch[i], &b.Batch[i]) {
			return false
		}
	}
	return true
}

var scanSeeds = []string{
	`{"event":"#publish","data":{"channel":"a","data":{"x":[1,2.5e-3,true,false,null,"s\u00e9\n"]}},"cid":7}`,
	`{"event":"#publish","data":{"channel":"a","data":1},"data":2}`, `{"ev\u0065nt":"x"}`, `{"EVENT":"x"}`,
	` {"rid":3,"data":null,"error":{"name":"E"}} `, `{"rid":1e400}`, `{"rid":-0}`, `{"event":"x","cid":01}`,
	`[{"event":"a"},1,"x",{"rid":2}]`, `[]`, `{}`, `{"a":}`, `{"a" 1}`, `{"a":1,}`, `[1,]`, `"\x01"`,
	`{"event":"\ud800"}`, "{\"event\":\"\xff\"}", `{"a":[[[[]]]]}`, `-`, `1.`, `1e`, `tru`, `nul`, `{"a":"\q"}`,
	`{"event":"#handshake","data":{"authToken":null},"cid":1} x`, "\t[ {\"event\" : \"e\" , \"cid\" : 2 } ]\n",
}

func FuzzScanner(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		i := skipWS(b, 0)
		end := skipValue(b, i, 0)
		ours := end >= 0 && skipWS(b, end) == len(b)
		if want := json.Valid(b); ours != want {
			t.Fatalf("valid(%q) = %v, encoding/json says %v", b, ours, want)
		}
		got, want := Decode(b), referenceDecode(b)
		if !samePacket(&got, &want) {
			t.Fatalf("Decode(%q) = %+v, encoding/json gives %+v", b, got, want)
		}
		var pd PublishData
		var m map[string]json.RawMessage
		okRef := json.Unmarshal(b, &m) == nil && m != nil
		if ok := pd.Scan(b); ok != okRef || (ok && (!bytes.Equal(pd.Channel, m["channel"]) || !bytes.Equal(pd.Data, m["data"]))) {
			t.Fatalf("PublishData.Scan(%q) = %v %q %q, encoding/json: %v %q %q", b, ok, pd.Channel, pd.Data, okRef, m["channel"], m["data"])
		}
	})
}

func TestScannerAgreesWithEncodingJSON(t *testing.T) {
	for _, s := range scanSeeds {
		b := []byte(s)
		got, want := Decode(b), referenceDecode(b)
		if !samePacket(&got, &want) {
			t.Errorf("Decode(%q) = %+v, want %+v", s, got, want)
		}
	}
	// Keys are exact, unlike encoding/json's struct matching: "EVENT" is no event.
	if p := Decode([]byte(`{"EVENT":"x"}`)); p.Kind != KindRaw {
		t.Errorf("upper-case key decoded as %+v", p)
	}
	// Nesting deeper than encoding/json allows is refused, without blowing the stack.
	deep := strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1)
	if p := Decode([]byte(`{"event":"x","data":` + deep + `}`)); p.Kind != KindRaw {
		t.Errorf("over-deep frame decoded as %v", p.Kind)
	}
}

func BenchmarkDecodePublish(b *testing.B) {
	frame := []byte(`{"event":"#publish","data":{"channel":"bench.room.42","data":{"s":1,"p":2,"q":` +
		strconv.Quote(strings.Repeat("x", 80)) + `}},"cid":12345}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		p := Decode(frame)
		var pd PublishData
		if !pd.Scan(p.Data) {
			b.Fatal("bad")
		}
	}
}
