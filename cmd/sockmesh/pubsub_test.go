package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// pubsubServer is a minimal in-process SocketCluster server for the CLI
// tests: handshake, subscribe (denying "denied.*"), publish with and without
// ack, delivery to every subscriber.
type pubsubServer struct {
	srv  *httptest.Server
	url  string
	mu   sync.Mutex
	subs map[string]map[*psConn]bool
	subd chan string // channels subscribed, in order
	wg   sync.WaitGroup
}

type psConn struct {
	ws  *websocket.Conn
	wmu sync.Mutex
}

func (c *psConn) send(b []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.WriteMessage(websocket.TextMessage, b)
}

func newPubsubServer(t *testing.T) *pubsubServer {
	s := &pubsubServer{subs: map[string]map[*psConn]bool{}, subd: make(chan string, 100)}
	up := websocket.Upgrader{}
	var conns []*websocket.Conn
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s.mu.Lock()
		conns = append(conns, ws)
		s.wg.Add(1)
		s.mu.Unlock()
		defer s.wg.Done()
		s.serve(&psConn{ws: ws})
	}))
	s.url = "ws" + strings.TrimPrefix(s.srv.URL, "http") + "/socketcluster/"
	t.Cleanup(func() {
		s.srv.Close()
		s.mu.Lock()
		for _, ws := range conns {
			ws.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *pubsubServer) serve(c *psConn) {
	defer func() {
		s.mu.Lock()
		for _, m := range s.subs {
			delete(m, c)
		}
		s.mu.Unlock()
	}()
	for {
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		var p struct {
			Event string          `json:"event"`
			Data  json.RawMessage `json:"data"`
			Cid   int             `json:"cid"`
		}
		if json.Unmarshal(b, &p) != nil {
			continue
		}
		reply := func(extra string) {
			if p.Cid != 0 {
				c.send([]byte(`{"rid":` + itoa(p.Cid) + extra + `}`))
			}
		}
		switch p.Event {
		case "#handshake":
			reply(`,"data":{"id":"x","pingTimeout":30000,"isAuthenticated":false}`)
		case "#subscribe":
			var d struct{ Channel string }
			_ = json.Unmarshal(p.Data, &d)
			if strings.HasPrefix(d.Channel, "denied.") {
				reply(`,"error":{"name":"SubscribeDeniedError","message":"Subscription to ` + d.Channel + ` is denied"}`)
				continue
			}
			s.mu.Lock()
			if s.subs[d.Channel] == nil {
				s.subs[d.Channel] = map[*psConn]bool{}
			}
			s.subs[d.Channel][c] = true
			s.mu.Unlock()
			reply("")
			s.subd <- d.Channel
		case "#publish":
			var d struct {
				Channel string          `json:"channel"`
				Data    json.RawMessage `json:"data"`
			}
			_ = json.Unmarshal(p.Data, &d)
			if d.Channel == "readonly" {
				reply(`,"error":{"name":"PublishForbiddenError","message":"no"}`)
				continue
			}
			frame, _ := json.Marshal(map[string]any{"event": "#publish", "data": map[string]any{"channel": d.Channel, "data": d.Data}})
			s.mu.Lock()
			var to []*psConn
			for sc := range s.subs[d.Channel] {
				to = append(to, sc)
			}
			s.mu.Unlock()
			for _, sc := range to {
				sc.send(frame)
			}
			reply("")
		}
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// syncBuffer is a bytes.Buffer safe for a writer and a concurrent reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startSub runs subMain in the background and waits until the server saw
// its n subscriptions.
func startSub(t *testing.T, s *pubsubServer, n int, args ...string) (*syncBuffer, chan error) {
	t.Helper()
	var out, errOut syncBuffer
	errc := make(chan error, 1)
	go func() { errc <- subMain(context.Background(), args, &out, &errOut) }()
	for range n {
		select {
		case <-s.subd:
		case err := <-errc:
			t.Fatalf("sub exited early: %v (stderr %s)", err, errOut.String())
		case <-time.After(5 * time.Second):
			t.Fatal("sub did not subscribe")
		}
	}
	return &out, errc
}

func TestPubSubRoundTrip(t *testing.T) {
	s := newPubsubServer(t)
	out, errc := startSub(t, s, 2, "--url", s.url, "--count", "4", "--timeout", "5s", "room.a", "room.b")

	var stderr bytes.Buffer
	ctx := context.Background()
	if err := pubMain(ctx, []string{"--url", s.url, "room.a", `{"n": 1}`}, nil, &stderr); err != nil {
		t.Fatal(err, stderr.String())
	}
	if err := pubMain(ctx, []string{"room.b", "plain text", "--ack", "--url", s.url}, nil, &stderr); err != nil {
		t.Fatal(err, stderr.String())
	}
	stdin := strings.NewReader("42\n\nline two\n")
	if err := pubMain(ctx, []string{"--url", s.url, "--ack", "room.a"}, stdin, &stderr); err != nil {
		t.Fatal(err, stderr.String())
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("sub did not exit after --count; output so far %q", out.String())
	}
	want := "room.a\t{\"n\":1}\nroom.b\t\"plain text\"\nroom.a\t42\nroom.a\t\"line two\"\n"
	if got := out.String(); got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
}

func TestPubAckReportsServerError(t *testing.T) {
	s := newPubsubServer(t)
	err := pubMain(context.Background(), []string{"--url", s.url, "--ack", "readonly", "x"}, nil, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "PublishForbiddenError") {
		t.Fatalf("err %v", err)
	}
}

func TestSubDeniedAndTimeout(t *testing.T) {
	s := newPubsubServer(t)
	err := subMain(context.Background(), []string{"--url", s.url, "denied.x"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "SubscribeDeniedError") {
		t.Fatalf("err %v", err)
	}
	err = subMain(context.Background(), []string{"--url", s.url, "--count", "1", "--timeout", "200ms", "quiet.ch"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "0 of 1") {
		t.Fatalf("err %v", err)
	}
	// Without --count, a timeout is a normal end.
	if err := subMain(context.Background(), []string{"--url", s.url, "--timeout", "100ms", "quiet.ch"}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
}

func TestSubURLFromEnvAndFailover(t *testing.T) {
	s := newPubsubServer(t)
	dead := newPubsubServer(t)
	deadURL := dead.url
	dead.srv.Close()
	t.Setenv("SOCKMESH_URL", deadURL+","+strings.TrimPrefix(s.url, "ws://"))
	out, errc := startSub(t, s, 1, "--count", "1", "--timeout", "5s", "env.ch")
	if err := pubMain(context.Background(), []string{"--url", s.url, "env.ch", "true"}, nil, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "env.ch\ttrue\n" {
		t.Fatalf("output %q", got)
	}
}

func TestNormalizeURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8000":                     "ws://127.0.0.1:8000/socketcluster/",
		"ws://h:1":                           "ws://h:1/socketcluster/",
		"https://h/":                         "wss://h/socketcluster/",
		"ws://h:1/socketcluster/?a=b":        "ws://h:1/socketcluster/?a=b",
		"ws://127.0.0.1:8000/socketcluster/": "ws://127.0.0.1:8000/socketcluster/",
	} {
		if got, err := normalizeURL(in); err != nil || got != want {
			t.Errorf("%s: %s %v, want %s", in, got, err, want)
		}
	}
	if _, err := normalizeURL("ftp://h"); err == nil {
		t.Error("ftp accepted")
	}
}

func TestPubArgs(t *testing.T) {
	if err := pubMain(context.Background(), []string{"--url", "ws://127.0.0.1:1/"}, nil, &bytes.Buffer{}); err == nil {
		t.Fatal("no channel accepted")
	}
	if got := parseData(`{"a":1}`); string(got.(json.RawMessage)) != `{"a":1}` {
		t.Fatalf("%v", got)
	}
	if got := parseData(`hello`); got != "hello" {
		t.Fatalf("%v", got)
	}
}

func TestPubThroughAPI(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/publish" || r.Method != "POST" || r.Header.Get("X-API-Key") != "k1" {
			w.WriteHeader(401)
			w.Write([]byte(`{"error":{"code":"unauthorized","message":"missing or wrong API key"}}`))
			return
		}
		b, _ := io.ReadAll(r.Body)
		got = append(got, string(b))
		w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	ctx := context.Background()
	if err := pubMain(ctx, []string{"--api", srv.URL, "--api-key", "k1", "orders.1", `{"id": 7}`}, nil, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if err := pubMain(ctx, []string{"--api", srv.URL, "--api-key", "k1", "orders.2"}, strings.NewReader("a\n\n2\n"), &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	want := []string{`{"channel":"orders.1","data":{"id":7}}`, `{"channel":"orders.2","data":"a"}`, `{"channel":"orders.2","data":2}`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("API got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	err := pubMain(ctx, []string{"--api", srv.URL, "--api-key", "wrong", "x", "1"}, nil, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "unauthorized") {
		t.Fatalf("wrong key: %v", err)
	}
}
