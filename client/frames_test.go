package client

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "news", `a"b\c`, "tab\tnl\ncr\r\x00\x1f", "h\u00e9llo \u2028 \u2029 😀", "bad \xff utf8", "<html>&"} {
		got := appendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q -> %s: %v", s, got, err)
		}
		want, _ := json.Marshal(s)
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Fatalf("%q: round trip %q, encoding/json %q", s, back, wantBack)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("news")
	f.Add("a\"\\\x00\xff\u2028")
	f.Fuzz(func(t *testing.T, s string) {
		got := appendString(nil, s)
		if !json.Valid(got) {
			t.Fatalf("invalid JSON %s", got)
		}
		var back, wantBack string
		_ = json.Unmarshal(got, &back)
		want, _ := json.Marshal(s)
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Fatalf("%q: %q vs %q", s, back, wantBack)
		}
	})
}

func TestParsePublishFast(t *testing.T) {
	ok := []struct{ frame, ch, data string }{
		{`{"event":"#publish","data":{"channel":"news","data":"x"}}`, "news", `"x"`},
		{`{"event":"#publish","data":{"channel":"news","data":{"a":{"b":[1,2]}}}}`, "news", `{"a":{"b":[1,2]}}`},
		{`{"event":"#publish","data":{"channel":"","data":null}}`, "", `null`},
		{`{"event":"#publish","data":{"channel":"c","data":"}}"}}`, "c", `"}}"`},
	}
	for _, tc := range ok {
		ch, data, good := parsePublishFast([]byte(tc.frame))
		if !good || string(ch) != tc.ch || string(data) != tc.data {
			t.Fatalf("%s: %v %q %q", tc.frame, good, ch, data)
		}
	}
	for _, frame := range []string{
		`{"event":"#publish","data":{"channel":"news"}}`,
		`{"event":"#publish","data":{"channel":"news","data":1,"x":2}}`,
		`{"event":"#publish","data":{"channel":"news","data":1},"cid":3}`,
		`{"event":"#publish","data":{"channel":"n\"ews","data":1}}`,
		`{"event":"#publish","data":{"channel":"news","data":{"a":1}}`,
		`{"event":"#publish","data":{"channel":"news","data":}}`,
		`{"event":"#publishx","data":{"channel":"news","data":1}}`,
	} {
		if _, _, good := parsePublishFast([]byte(frame)); good {
			t.Fatalf("%s accepted", frame)
		}
	}
}

// FuzzParsePublishFast: whatever the fast path accepts, the generic decoder
// reads the same way.
func FuzzParsePublishFast(f *testing.F) {
	f.Add(`{"event":"#publish","data":{"channel":"news","data":"x"}}`)
	f.Add(`{"event":"#publish","data":{"channel":"news","data":{"a":1},"b":2}}`)
	f.Fuzz(func(t *testing.T, frame string) {
		ch, data, ok := parsePublishFast([]byte(frame))
		if !ok {
			return
		}
		var p struct {
			Event string `json:"event"`
			Data  struct {
				Channel string          `json:"channel"`
				Data    json.RawMessage `json:"data"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(frame), &p); err != nil {
			t.Fatalf("fast path accepted %q which encoding/json rejects: %v", frame, err)
		}
		if p.Event != "#publish" || p.Data.Channel != string(ch) || !bytes.Equal(p.Data.Data, data) {
			t.Fatalf("%q: fast %q %q, generic %+v", frame, ch, data, p)
		}
	})
}

func TestDispatchPublishFastPathAllocations(t *testing.T) {
	c := &Client{subs: map[string]*subscription{}}
	var n int
	c.opts.RawPublish = func(ch, data []byte) bool { n++; return true }
	cn := &conn{c: c}
	frame := []byte(`{"event":"#publish","data":{"channel":"bench","data":{"seq":1,"ts":123456789}}}`)
	if a := testing.AllocsPerRun(1000, func() { cn.handleFrame(frame) }); a != 0 {
		t.Fatalf("%v allocs per frame with RawPublish, want 0", a)
	}
	c.opts.RawPublish = nil
	c.subs["bench"] = &subscription{channel: "bench", handler: func(string, json.RawMessage) { n++ }}
	if a := testing.AllocsPerRun(1000, func() { cn.handleFrame(frame) }); a > 1 {
		t.Fatalf("%v allocs per frame with a handler, want <= 1 (the data copy)", a)
	}
}

func BenchmarkPublishEncode(b *testing.B) {
	data := json.RawMessage(`{"seq":1,"ts":123456789}`)
	b.ReportAllocs()
	for b.Loop() {
		bp := getBuf()
		*bp, _ = appendPublish((*bp)[:0], "bench", data, 0)
		putBuf(bp)
	}
}

func BenchmarkHandlePublishFrame(b *testing.B) {
	c := &Client{subs: map[string]*subscription{"bench": {channel: "bench", handler: func(string, json.RawMessage) {}}}}
	cn := &conn{c: c}
	frame := []byte(`{"event":"#publish","data":{"channel":"bench","data":{"seq":1,"ts":123456789}}}`)
	b.ReportAllocs()
	for b.Loop() {
		cn.handleFrame(frame)
	}
}
