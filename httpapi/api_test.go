package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeNode is a node with one local subscriber on every channel and the given peers.
type fakeNode struct {
	peers     []Peer
	published atomic.Int64
}

func (f *fakeNode) Name() string                                    { return "self" }
func (f *fakeNode) Info() any                                       { return map[string]string{"self": "self"} }
func (f *fakeNode) Peers() []Peer                                   { return f.peers }
func (f *fakeNode) Publish(string, json.RawMessage)                 { f.published.Add(1) }
func (f *fakeNode) LocalChannels() map[string]int                   { return map[string]int{"a": 1} }
func (f *fakeNode) KickChannel(string, string) int                  { return 1 }
func (f *fakeNode) DisconnectClaim(string, string, int, string) int { return 1 }

const key = "k3y"

func post(t *testing.T, h http.Handler, path, body string) (int, map[string]any) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	r.Header.Set("X-API-Key", key)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var m map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &m)
	return w.Code, m
}

// A cluster-wide call is bounded by FanoutTimeout whatever the peers do: one that never
// answers, one that answers garbage, one that refuses the key and one that works each get
// their line in the answer, the local node's count stands, and "complete" says false.
func TestClusterCallSurvivesBadPeers(t *testing.T) {
	hang := make(chan struct{})
	frozen := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	defer frozen.Close()
	defer close(hang) // before Close, which waits for the handler
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{\"count\": [")) }))
	defer garbage.Close()
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":{"code":"unauthorized","message":"wrong key"}}`))
	}))
	defer refusing.Close()
	good := &fakeNode{}
	goodAPI := New(good, Config{Key: key, MaxPayload: 1 << 10, MaxChannelLength: 64}, nil)
	mux := http.NewServeMux()
	goodAPI.RegisterLocal(mux)
	healthy := httptest.NewServer(mux)
	defer healthy.Close()

	n := &fakeNode{peers: []Peer{{"p1-frozen", frozen.URL}, {"p2-garbage", garbage.URL}, {"p3-refusing", refusing.URL}, {"p4-healthy", healthy.URL}}}
	a := New(n, Config{Key: key, MaxPayload: 1 << 10, MaxChannelLength: 64}, nil)
	defer a.Close()
	start := time.Now()
	code, m := post(t, a.Handler(), "/api/kick", `{"channel":"a"}`)
	took := time.Since(start)
	if code != 200 || m["total"] != 2.0 || m["complete"] != false {
		t.Fatalf("kick: %d %v", code, m)
	}
	if took > FanoutTimeout+time.Second {
		t.Fatalf("kick took %v with a frozen peer (bound %v)", took, FanoutTimeout)
	}
	nodes, _ := m["nodes"].([]any)
	errs := map[string]string{}
	for _, x := range nodes {
		r := x.(map[string]any)
		e, _ := r["error"].(string)
		errs[r["node"].(string)] = e
	}
	if len(errs) != 5 || errs["self"] != "" || errs["p4-healthy"] != "" || errs["p1-frozen"] == "" || errs["p2-garbage"] == "" || !strings.Contains(errs["p3-refusing"], "wrong key") {
		t.Fatalf("per-node results: %v", errs)
	}
}

// Hostile bodies get a clear error and publish nothing.
func TestHostileBodies(t *testing.T) {
	n := &fakeNode{}
	h := New(n, Config{Key: key, MaxPayload: 1 << 10, MaxChannelLength: 64}, nil).Handler()
	for _, tc := range []struct {
		body string
		code int
		err  string
	}{
		{`{"channel":"a","data":"` + strings.Repeat("x", 1<<20) + `"}`, 413, "payload_too_large"},
		{`{"channel":"a","data":1}{"channel":"b","data":1}`, 400, "bad_json"},
		{`{"channel":"a","data":1,"extra":1}`, 400, "bad_json"},
		{`{"channel":"` + strings.Repeat("c", 65) + `","data":1}`, 400, "invalid_channel"},
		{`{"channel":"a\u0000b","data":1}`, 400, "invalid_channel"},
		{`{"channel":"a"}`, 400, "bad_json"},
		{strings.Repeat("[", 100000), 400, "bad_json"},
		{``, 400, "bad_json"},
	} {
		code, m := post(t, h, "/api/publish", tc.body)
		e, _ := m["error"].(map[string]any)
		if code != tc.code || e["code"] != tc.err {
			t.Errorf("%.40q: %d %v, want %d %s", tc.body, code, m, tc.code, tc.err)
		}
	}
	if n.published.Load() != 0 {
		t.Fatalf("%d publications from refused requests", n.published.Load())
	}
}

// FuzzRequestBodies: any body on any endpoint is answered 200 or a 4xx with an error code,
// never a panic, and a publication goes out only with valid JSON data.
func FuzzRequestBodies(f *testing.F) {
	for _, s := range []string{`{"channel":"a","data":{"x":[1,2]}}`, `{"channels":["a","b"],"data":null}`, `{"claim":"sub","value":42}`, `{"channel":"a","message":"bye"}`, `[`, `{"channel":"a","data":1e400}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var got json.RawMessage
		n := &recordingNode{publish: func(d json.RawMessage) { got = d }}
		h := New(n, Config{Key: key, MaxPayload: 1 << 10, MaxChannelLength: 64}, nil).Handler()
		for _, path := range []string{"/api/publish", "/api/broadcast", "/api/kick", "/api/disconnect"} {
			got = nil
			code, m := post(t, h, path, body)
			switch {
			case code == 200:
				if got != nil && !json.Valid(got) {
					t.Fatalf("%s %q: published invalid JSON %q", path, body, got)
				}
			case code >= 400 && code < 500:
				if e, _ := m["error"].(map[string]any); e["code"] == nil {
					t.Fatalf("%s %q: %d without an error code: %v", path, body, code, m)
				}
			default:
				t.Fatalf("%s %q: status %d", path, body, code)
			}
		}
	})
}

type recordingNode struct {
	fakeNode
	publish func(json.RawMessage)
}

func (r *recordingNode) Publish(_ string, d json.RawMessage) { r.publish(d) }
