package scproto

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name  string
		frame string
		kind  PacketKind
		event string
		cid   string
		data  string
	}{
		{"pong", "", KindPong, "", "", ""},
		{"v1 ping string is raw", "#2", KindRaw, "", "", ""},
		{"transmit", `{"event":"note","data":{"a":1}}`, KindEvent, "note", "", `{"a":1}`},
		{"transmit without data", `{"event":"note"}`, KindEvent, "note", "", ""},
		{"invoke", `{"event":"echo","data":[1,2],"cid":7}`, KindEvent, "echo", "7", "[1,2]"},
		{"non-integer cid echoed verbatim", `{"event":"echo","cid":1.5}`, KindEvent, "echo", "1.5", ""},
		{"string cid makes a transmit", `{"event":"echo","cid":"7"}`, KindEvent, "echo", "", ""},
		{"leading whitespace", " \n{\"event\":\"x\"}", KindEvent, "x", "", ""},
		{"response", `{"rid":3,"data":"ok"}`, KindResponse, "", "", `"ok"`},
		{"string rid is raw", `{"rid":"3"}`, KindRaw, "", "", ""},
		{"malformed json", `{"broken json`, KindRaw, "", "", ""},
		{"plain text", `this is not json`, KindRaw, "", "", ""},
		{"non-string event", `{"event":5}`, KindRaw, "", "", ""},
		{"null data is kept", `{"event":"x","data":null}`, KindEvent, "x", "", "null"},
		{"batch", `[{"event":"a","cid":1},{"event":"b"}]`, KindBatch, "", "", ""},
		{"whitespace only", "   ", KindRaw, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Decode([]byte(tt.frame))
			if p.Kind != tt.kind {
				t.Fatalf("kind = %d, want %d", p.Kind, tt.kind)
			}
			if p.Event != tt.event || string(p.CID) != tt.cid || string(p.Data) != tt.data {
				t.Fatalf("got event=%q cid=%q data=%q, want %q %q %q", p.Event, p.CID, p.Data, tt.event, tt.cid, tt.data)
			}
		})
	}
}

func TestDecodeBatchKeepsOrderAndRawItems(t *testing.T) {
	p := Decode([]byte(`[{"event":"a","cid":1},5,{"event":"b"},{"rid":2}]`))
	if p.Kind != KindBatch || len(p.Batch) != 4 {
		t.Fatalf("got %+v", p)
	}
	want := []PacketKind{KindEvent, KindRaw, KindEvent, KindResponse}
	for i, k := range want {
		if p.Batch[i].Kind != k {
			t.Fatalf("item %d kind %d, want %d", i, p.Batch[i].Kind, k)
		}
	}
	if p.Batch[0].Event != "a" || p.Batch[2].Event != "b" || p.Batch[3].RID != 2 {
		t.Fatalf("batch items out of order: %+v", p.Batch)
	}
}

func TestEncodePublishIsValidJSON(t *testing.T) {
	for _, ch := range []string{"news", `we"ird\ch`, "ünï", "a\u2028b"} {
		for _, data := range []string{"", `"x"`, `{"base64":true,"data":"AQID+g=="}`, `[1,{"a":null}]`} {
			b := EncodePublish(ch, json.RawMessage(data))
			var v struct {
				Event string `json:"event"`
				Data  struct {
					Channel string          `json:"channel"`
					Data    json.RawMessage `json:"data"`
				} `json:"data"`
			}
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			if v.Event != "#publish" || v.Data.Channel != ch || string(v.Data.Data) != data {
				t.Fatalf("round trip of %q %q gave %s", ch, data, b)
			}
		}
	}
}

func TestEncodeResponseAndEvent(t *testing.T) {
	cases := map[string]string{
		string(EncodeResponse(json.RawMessage("2"), nil, nil)):                        `{"rid":2}`,
		string(EncodeResponse(json.RawMessage("3"), json.RawMessage(`"ok"`), nil)):    `{"rid":3,"data":"ok"}`,
		string(EncodeResponse(json.RawMessage("4"), nil, json.RawMessage(`{"n":1}`))): `{"rid":4,"error":{"n":1}}`,
		string(EncodeEvent("#removeAuthToken", nil, 0)):                               `{"event":"#removeAuthToken"}`,
		string(EncodeEvent("clientProc", json.RawMessage(`{"q":1}`), 12)):             `{"event":"clientProc","data":{"q":1},"cid":12}`,
		string(AppendInt(nil, -9081)):                                                 `-9081`,
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}

func TestValidChannel(t *testing.T) {
	long := make([]byte, 257)
	for i := range long {
		long[i] = 'a'
	}
	bad := []string{"", string(long), "\xff\xfe", "\x01hb", "a\x00b"}
	for _, ch := range bad {
		if ValidChannel(ch, 256) == "" {
			t.Errorf("%q accepted", ch)
		}
	}
	for _, ch := range []string{"chat", "user.42.inbox", "ünïcödé", string(long[:256])} {
		if why := ValidChannel(ch, 256); why != "" {
			t.Errorf("%q refused: %s", ch, why)
		}
	}
}

// FuzzDecode checks that no frame makes the decoder panic and that everything it calls an
// event has a string name and, when it has a cid, a numeric one.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{"", "#1", `{"event":"#handshake","data":{"authToken":null},"cid":1}`,
		`[{"event":"#subscribe","data":{"channel":"a"},"cid":2},{"rid":1}]`, `{"rid":1e400}`, `[[[`, `{"event":"x","cid":-0.5e3}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p := Decode(b)
		check := func(p *Packet) {
			if p.Kind == KindEvent && p.CID != nil && !IsJSONNumber(p.CID) {
				t.Fatalf("non-numeric cid %q", p.CID)
			}
		}
		check(&p)
		for i := range p.Batch {
			check(&p.Batch[i])
			if p.Batch[i].Kind == KindBatch {
				t.Fatal("nested batch")
			}
		}
	})
}

// Names are written without encoding/json when they need no escaping, byte for byte as it
// would write them.
func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "chat", "a b", `q"`, `back\slash`, "tab\t", "<html>", "a&b", "é", "\u2028", "\x7f"} {
		want, _ := json.Marshal(s)
		if got := AppendJSONString(nil, s); string(got) != string(want) {
			t.Errorf("%q: %s, want %s", s, got, want)
		}
	}
	if got := EncodePublish("c", json.RawMessage(`1`)); string(got) != `{"event":"#publish","data":{"channel":"c","data":1}}` {
		t.Fatalf("EncodePublish: %s", got)
	}
	// One allocation per publication frame (the frame itself), however long the parts.
	data := json.RawMessage(`"` + strings.Repeat("x", 300) + `"`)
	if n := testing.AllocsPerRun(100, func() { EncodePublish("room-42", data) }); n != 1 {
		t.Fatalf("EncodePublish: %v allocations, want 1", n)
	}
}
