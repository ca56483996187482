package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// A scripted fake SocketCluster server: each accepted connection is handed
// to the test, which reads the client's frames and writes the server's.

const waitFor = 5 * time.Second

type fakeServer struct {
	t     *testing.T
	srv   *httptest.Server
	URL   string
	conns chan *fakeConn
	wg    sync.WaitGroup
	mu    sync.Mutex
	all   []*fakeConn
	n     int
}

type fakeConn struct {
	t    *testing.T
	ws   *websocket.Conn
	id   string
	in   chan string   // text frames from the client
	done chan struct{} // closed when the client side is gone
	wmu  sync.Mutex

	mu        sync.Mutex
	closeCode int // close code the client sent, 0 if none
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	fs := &fakeServer{t: t, conns: make(chan *fakeConn, 16)}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	fs.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/socketcluster/" {
			http.Error(w, "bad path", http.StatusBadRequest)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		fs.mu.Lock()
		fs.n++
		fc := &fakeConn{t: t, ws: ws, id: fmt.Sprintf("fake-%d", fs.n), in: make(chan string, 4096), done: make(chan struct{})}
		fs.all = append(fs.all, fc)
		fs.wg.Add(1)
		fs.mu.Unlock()
		defer fs.wg.Done()
		fs.conns <- fc
		fc.readLoop()
	}))
	fs.URL = "ws" + strings.TrimPrefix(fs.srv.URL, "http") + "/socketcluster/"
	t.Cleanup(fs.Close)
	return fs
}

// Close stops listening, drops every connection and waits for the handlers.
func (fs *fakeServer) Close() {
	fs.srv.Close()
	fs.mu.Lock()
	for _, c := range fs.all {
		c.ws.Close()
	}
	fs.mu.Unlock()
	fs.wg.Wait()
}

func (fs *fakeServer) accept(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case c := <-fs.conns:
		return c
	case <-time.After(waitFor):
		t.Fatal("no connection from the client")
		return nil
	}
}

func (fs *fakeServer) expectNoConn(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-fs.conns:
		t.Fatal("unexpected connection")
	case <-time.After(d):
	}
}

func (c *fakeConn) readLoop() {
	defer close(c.done)
	defer close(c.in)
	for {
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				c.mu.Lock()
				c.closeCode = ce.Code
				c.mu.Unlock()
			}
			c.ws.Close()
			return
		}
		c.in <- string(b)
	}
}

// next returns the next frame from the client.
func (c *fakeConn) next(t *testing.T) string {
	t.Helper()
	select {
	case f, ok := <-c.in:
		if !ok {
			t.Fatal("client connection closed while a frame was expected")
		}
		return f
	case <-time.After(waitFor):
		t.Fatal("no frame from the client")
		return ""
	}
}

// nextJSON returns the next frame decoded as a JSON object.
func (c *fakeConn) nextJSON(t *testing.T) map[string]any {
	t.Helper()
	f := c.next(t)
	var m map[string]any
	if err := json.Unmarshal([]byte(f), &m); err != nil {
		t.Fatalf("frame %q is not a JSON object: %v", f, err)
	}
	return m
}

// expectEvent reads the next frame, checks its event name and returns its
// cid (0 for a transmit) and data.
func (c *fakeConn) expectEvent(t *testing.T, event string) (int, any) {
	t.Helper()
	m := c.nextJSON(t)
	if m["event"] != event {
		t.Fatalf("got %v, want event %q", m, event)
	}
	cid, _ := m["cid"].(float64)
	return int(cid), m["data"]
}

// handshake reads the #handshake, checks its exact shape, answers it and
// returns the token the client presented (nil for null).
func (c *fakeConn) handshake(t *testing.T, pingTimeoutMS int) any {
	t.Helper()
	f := c.next(t)
	var m map[string]any
	if err := json.Unmarshal([]byte(f), &m); err != nil {
		t.Fatalf("handshake frame %q: %v", f, err)
	}
	data, _ := m["data"].(map[string]any)
	cid, isNum := m["cid"].(float64)
	if m["event"] != "#handshake" || len(m) != 3 || !isNum || cid < 1 || data == nil || len(data) != 1 {
		t.Fatalf("bad handshake frame %s", f)
	}
	tok, present := data["authToken"]
	if !present {
		t.Fatalf("handshake frame without authToken: %s", f)
	}
	c.sendf(`{"rid":%d,"data":{"id":%q,"pingTimeout":%d,"isAuthenticated":%t}}`, int(cid), c.id, pingTimeoutMS, tok != nil)
	return tok
}

// ackSubscribe reads a #subscribe for channel and acknowledges it.
func (c *fakeConn) ackSubscribe(t *testing.T, channel string) {
	t.Helper()
	cid, data := c.expectEvent(t, "#subscribe")
	d, _ := data.(map[string]any)
	if d["channel"] != channel || len(d) != 1 || cid == 0 {
		t.Fatalf("bad #subscribe: cid %d data %v, want channel %q", cid, data, channel)
	}
	c.sendf(`{"rid":%d}`, cid)
}

func (c *fakeConn) send(s string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.WriteMessage(websocket.TextMessage, []byte(s))
}

func (c *fakeConn) sendf(format string, args ...any) { c.send(fmt.Sprintf(format, args...)) }

func (c *fakeConn) closeWith(code int, reason string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
}

// kill drops the TCP connection without a close frame.
func (c *fakeConn) kill() { c.ws.UnderlyingConn().Close() }

// waitClosed waits until the client side is gone and returns the close code
// the client sent (0 if none).
func (c *fakeConn) waitClosed(t *testing.T) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(waitFor):
		t.Fatal("client did not close the connection")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
