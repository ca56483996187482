package node

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// POST /drain from loopback: readyz fails at once, clients are closed with 4000 over the
// drain duration, the node stops by itself and Done closes.
func TestDrainEndpointDrainsAndStops(t *testing.T) {
	n, err := New(Config{
		Name: "d", WSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		DrainDuration: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var clients []*websocket.Conn
	for range 5 {
		clients = append(clients, wsClient(t, n.WSURL(), "room"))
	}
	admin := n.AdminURL()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := hc.Get(admin + "/drain"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /drain: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	resp, err := hc.Post(admin+"/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st DrainStatus
	_ = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || !st.Draining {
		t.Fatalf("POST /drain: %d %+v", resp.StatusCode, st)
	}
	if resp, err := hc.Get(admin + "/readyz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("readyz while draining: %d, want 503", resp.StatusCode)
		}
	}
	start := time.Now()
	for _, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			_, _, err := c.ReadMessage()
			if err == nil {
				continue
			}
			if !websocket.IsCloseError(err, DrainCloseCode) {
				t.Fatalf("client closed with %v, want %d", err, DrainCloseCode)
			}
			break
		}
		c.Close()
	}
	select {
	case <-n.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("node did not stop after POST /drain")
	}
	if err := n.DrainErr(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("drain took %v", d)
	}
	if st := n.DrainStatus(); st.Phase != "stopped" {
		t.Fatalf("phase %q after Done", st.Phase)
	}
}

// POST /drain is refused to browsers (Origin) and to non-loopback peers without the API key.
func TestDrainEndpointGuard(t *testing.T) {
	n, err := New(Config{Name: "g", APIKey: "sekrit"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Front().Close() // never started: stop the front's sweeper
	h := n.withDrain(http.NotFoundHandler())
	try := func(remote string, hdr map[string]string) int {
		r := httptest.NewRequest(http.MethodPost, "/drain", nil)
		r.RemoteAddr = remote
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		// A refused request must not start a drain; an allowed one would (and is not tried
		// here: the node is not started).
		w := httptest.NewRecorder()
		if n.drainForbidden(r) == "" {
			return http.StatusAccepted
		}
		h.ServeHTTP(w, r)
		return w.Code
	}
	for _, c := range []struct {
		remote string
		hdr    map[string]string
		want   int
	}{
		{"127.0.0.1:5555", nil, http.StatusAccepted},
		{"[::1]:5555", nil, http.StatusAccepted},
		{"127.0.0.1:5555", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"10.1.2.3:5555", nil, http.StatusForbidden},
		{"10.1.2.3:5555", map[string]string{"X-API-Key": "wrong"}, http.StatusForbidden},
		{"10.1.2.3:5555", map[string]string{"X-API-Key": "sekrit"}, http.StatusAccepted},
		{"10.1.2.3:5555", map[string]string{"Authorization": "apikey sekrit"}, http.StatusAccepted},
	} {
		if got := try(c.remote, c.hdr); got != c.want {
			t.Errorf("%s %v: %d, want %d", c.remote, c.hdr, got, c.want)
		}
	}
	if n.Draining() {
		t.Fatal("a refused request started a drain")
	}
}
