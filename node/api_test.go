package node

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sockmesh/sockmesh/httpapi"
	"go.uber.org/goleak"
)

const testAPIKey = "s3cret-key"

func startAPINode(t testing.TB, mod func(*Config)) *Node {
	t.Helper()
	cfg := Config{
		Name: "a1", WSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		APIAddr: "127.0.0.1:0", APIKey: testAPIKey,
		AuthKey: "k", Demo: true, DrainDuration: time.Millisecond,
	}
	cfg.Front.MaxPayload = 4096
	if mod != nil {
		mod(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return n
}

// call does one API request; key "" sends none.
func call(t testing.TB, method, url, key, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	if key != "" {
		req.Header.Set("Authorization", "apikey "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, url, ct)
	}
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v", method, url, err)
	}
	return resp.StatusCode, m
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func readPublication(t testing.TB, ws *websocket.Conn) string {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if string(m) == "" { // ping
			continue
		}
		return string(m)
	}
}

func TestAPIAuth(t *testing.T) {
	n := startAPINode(t, nil)
	u := n.APIURL() + "/api/info"
	for _, tc := range []struct{ name, key string }{{"missing", ""}, {"wrong", "nope"}, {"prefix", testAPIKey[:4]}} {
		code, m := call(t, "GET", u, tc.key, "")
		if code != 401 || errCode(m) != "unauthorized" {
			t.Errorf("%s key: %d %v", tc.name, code, m)
		}
	}
	// Unknown paths and wrong methods are refused without a key as well: nothing is learned.
	if code, _ := call(t, "GET", n.APIURL()+"/api/nothing", "", ""); code != 401 {
		t.Errorf("unknown path without key: %d", code)
	}
	if got := apiRequests(t, n, "info", "401"); got != 3 {
		t.Errorf("401s counted %v, want 3", got)
	}
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("X-API-Key", testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("X-API-Key: %v %v", resp, err)
	}
	var info Cluster
	json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if info.Self != "a1" {
		t.Errorf("info: %+v", info)
	}
	if got := apiRequests(t, n, "info", "200"); got != 1 {
		t.Errorf("200s counted %v", got)
	}
	// The /local/ endpoints on the admin listener need the key too.
	if code, _ := call(t, "GET", n.AdminURL()+"/local/channels", "", ""); code != 401 {
		t.Errorf("/local/channels without key: %d", code)
	}
}

func TestAPIRequiresKey(t *testing.T) {
	_, err := New(Config{Name: "x", APIAddr: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "api-key") {
		t.Fatalf("APIAddr without key: %v", err)
	}
}

func TestAPIPublishAndErrors(t *testing.T) {
	n := startAPINode(t, nil)
	ws := wsClient(t, n.WSURL(), "room", "room2")
	defer ws.Close()
	api := n.APIURL()
	code, m := call(t, "POST", api+"/api/publish", testAPIKey, `{"channel":"room","data":{"a": 1}}`)
	if code != 200 || m["ok"] != true {
		t.Fatalf("publish: %d %v", code, m)
	}
	if got := readPublication(t, ws); got != `{"event":"#publish","data":{"channel":"room","data":{"a":1}}}` {
		t.Fatalf("subscriber got %s", got)
	}
	code, m = call(t, "POST", api+"/api/broadcast", testAPIKey, `{"channels":["room2","nobody.listens"],"data":"x"}`)
	if code != 200 || m["channels"] != 2.0 {
		t.Fatalf("broadcast: %d %v", code, m)
	}
	if got := readPublication(t, ws); !strings.Contains(got, `"channel":"room2","data":"x"`) {
		t.Fatalf("subscriber got %s", got)
	}
	big := `{"channel":"room","data":"` + strings.Repeat("x", 5000) + `"}`
	for _, tc := range []struct {
		method, path, body string
		code               int
		errCode            string
	}{
		{"POST", "/api/publish", `{"channel":"room","data":`, 400, "bad_json"},
		{"POST", "/api/publish", ``, 400, "bad_json"},
		{"POST", "/api/publish", `{"channel":"room","data":1} {}`, 400, "bad_json"},
		{"POST", "/api/publish", `{"channel":"room","data":1,"extra":2}`, 400, "bad_json"},
		{"POST", "/api/publish", `{"channel":"room"}`, 400, "bad_json"},
		{"POST", "/api/publish", `{"data":1}`, 400, "invalid_channel"},
		{"POST", "/api/publish", `{"channel":"","data":1}`, 400, "invalid_channel"},
		{"POST", "/api/publish", `{"channel":"` + strings.Repeat("c", 300) + `","data":1}`, 400, "invalid_channel"},
		{"POST", "/api/publish", big, 413, "payload_too_large"},
		{"POST", "/api/publish", `{"channel":"room","data":"` + strings.Repeat("x", 1<<20) + `"}`, 413, "payload_too_large"},
		{"GET", "/api/publish", ``, 405, "method_not_allowed"},
		{"POST", "/api/channels", ``, 405, "method_not_allowed"},
		{"POST", "/api/broadcast", `{"channels":[],"data":1}`, 400, "invalid_channel"},
		{"POST", "/api/broadcast", `{"channels":["a","a"],"data":1}`, 400, "invalid_channel"},
		{"POST", "/api/broadcast", `{"channels":["a",""],"data":1}`, 400, "invalid_channel"},
		{"GET", "/api/channels?pattern=%5B", ``, 400, "bad_pattern"},
		{"POST", "/api/disconnect", `{"value":"x"}`, 400, "bad_request"},
		{"POST", "/api/disconnect", `{"claim":"sub","value":{}}`, 400, "bad_request"},
		{"POST", "/api/disconnect", `{"claim":"sub","value":"x","code":2000}`, 400, "bad_request"},
		{"GET", "/api/nothing", ``, 404, "not_found"},
	} {
		code, m := call(t, tc.method, api+tc.path, testAPIKey, tc.body)
		if code != tc.code || errCode(m) != tc.errCode {
			body := tc.body
			if len(body) > 60 {
				body = body[:60] + "…"
			}
			t.Errorf("%s %s %s: %d %v, want %d %s", tc.method, tc.path, body, code, m, tc.code, tc.errCode)
		}
	}
}

func TestAPIChannelsKickDisconnect(t *testing.T) {
	n := startAPINode(t, nil)
	api := n.APIURL()
	a := wsClient(t, n.WSURL(), "orders.1", "orders.2", "chat")
	defer a.Close()
	b := wsClient(t, n.WSURL(), "orders.1")
	defer b.Close()
	code, m := call(t, "GET", api+"/api/channels?pattern=orders.*", testAPIKey, "")
	if code != 200 || m["complete"] != true {
		t.Fatalf("channels: %d %v", code, m)
	}
	chans, _ := json.Marshal(m["channels"])
	if want := `[{"channel":"orders.1","nodes":{"a1":2},"subscribers":2},{"channel":"orders.2","nodes":{"a1":1},"subscribers":1}]`; string(chans) != want {
		t.Fatalf("channels %s, want %s", chans, want)
	}
	code, m = call(t, "POST", api+"/api/kick", testAPIKey, `{"channel":"orders.1","message":"bye"}`)
	if code != 200 || m["total"] != 2.0 {
		t.Fatalf("kick: %d %v", code, m)
	}
	if got := readPublication(t, b); got != `{"event":"#kickOut","data":{"channel":"orders.1","message":"bye"}}` {
		t.Fatalf("kicked client got %s", got)
	}
	if s := n.Broker().Subscribers("orders.1"); s != 0 {
		t.Fatalf("%d subscribers left after kick", s)
	}

	// An authenticated socket (demo login: claims {"username": "alice"}) is disconnected by claim.
	alice, _, err := websocket.DefaultDialer.Dial(n.WSURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	alice.WriteMessage(websocket.TextMessage, []byte(`{"event":"#handshake","data":{},"cid":1}`))
	alice.WriteMessage(websocket.TextMessage, []byte(`{"event":"login","data":{"username":"alice"},"cid":2}`))
	for {
		if strings.Contains(readPublication(t, alice), "#setAuthToken") {
			break
		}
	}
	code, m = call(t, "POST", api+"/api/disconnect", testAPIKey, `{"claim":"username","value":"bob"}`)
	if code != 200 || m["total"] != 0.0 {
		t.Fatalf("disconnect bob: %d %v", code, m)
	}
	code, m = call(t, "POST", api+"/api/disconnect", testAPIKey, `{"claim":"username","value":"alice","reason":"banned"}`)
	if code != 200 || m["total"] != 1.0 {
		t.Fatalf("disconnect alice: %d %v", code, m)
	}
	alice.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := alice.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != httpapi.DefaultDisconnectCode || ce.Text != "banned" {
				t.Fatalf("alice closed with %v", err)
			}
			break
		}
	}
}

func TestAPIEnforcePolicy(t *testing.T) {
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(pol, []byte(`anonymous: true
rules:
  - channel: "public.*"
    subscribe: anyone
    publish: anyone
  - channel: "user.{sub}.*"
    subscribe: authenticated
    publish: authenticated
`), 0o600)
	trusted := startAPINode(t, func(c *Config) { c.AccessPolicyFile = pol; c.Name = "trusted" })
	enforced := startAPINode(t, func(c *Config) {
		c.AccessPolicyFile = pol
		c.APIEnforcePolicy = true
		c.Name = "enforced"
	})
	for _, tc := range []struct {
		n      *Node
		body   string
		code   int
		errMsg string
	}{
		{trusted, `{"channel":"user.alice.inbox","data":1}`, 200, ""},
		{trusted, `{"channel":"other","data":1}`, 200, ""},
		{enforced, `{"channel":"public.news","data":1}`, 200, ""},
		{enforced, `{"channel":"user.alice.inbox","data":1}`, 403, "AuthRequiredError"},
		{enforced, `{"channel":"other","data":1}`, 403, "PublishForbiddenError"},
	} {
		code, m := call(t, "POST", tc.n.APIURL()+"/api/publish", testAPIKey, tc.body)
		msg, _ := json.Marshal(m)
		if code != tc.code || (tc.errMsg != "" && !strings.Contains(string(msg), tc.errMsg)) {
			t.Errorf("%s %s: %d %s", tc.n.Name(), tc.body, code, msg)
		}
	}
	// broadcast is all or nothing
	code, _ := call(t, "POST", enforced.APIURL()+"/api/broadcast", testAPIKey, `{"channels":["public.a","other"],"data":1}`)
	if code != 403 {
		t.Errorf("broadcast with a forbidden channel: %d", code)
	}
}

// BenchmarkAPIPublish measures API publishes to one local subscriber, over one keep-alive
// connection (sequential requests: latency-bound) and in parallel.
func BenchmarkAPIPublish(b *testing.B) {
	n := startAPINode(b, nil)
	ws := wsClient(b, n.WSURL(), "bench")
	defer ws.Close()
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	u := n.APIURL() + "/api/publish"
	body := `{"channel":"bench","data":{"n":1,"text":"hello world"}}`
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	c := &http.Client{Transport: tr}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", u, strings.NewReader(body))
			req.Header.Set("X-API-Key", testAPIKey)
			resp, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

func TestAPIStartStopLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreAnyFunction("github.com/go-zeromq/zmq4.(*pubMWriter).run"),
		goleak.IgnoreCurrent())
	n, err := New(Config{Name: "leak", WSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0",
		GossipAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", APIKey: testAPIKey, DrainDuration: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	c := &http.Client{Transport: tr}
	for _, p := range []string{n.APIURL() + "/api/channels", n.APIURL() + "/api/info", n.AdminURL() + "/local/channels"} {
		req, _ := http.NewRequest("GET", p, nil)
		req.Header.Set("X-API-Key", testAPIKey)
		resp, err := c.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// apiRequests reads sockmesh_api_requests_total{endpoint,code} from the node's registry.
func apiRequests(t *testing.T, n *Node, endpoint, code string) float64 {
	t.Helper()
	return findMetric(t, n, "sockmesh_api_requests_total", map[string]string{"endpoint": endpoint, "code": code}).GetCounter().GetValue()
}
