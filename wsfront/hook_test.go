package wsfront

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/access"
	"github.com/sockmesh/sockmesh/scproto"
)

func TestHookDecides(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req access.HookRequest
		json.NewDecoder(r.Body).Decode(&req)
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var resp access.HookResponse
		switch {
		case req.Action == "handshake" || req.Action == "subscribe" && req.Channel == "ok":
			resp.Allow = true
		case req.Action == "subscribe" && req.Channel == "slow":
			time.Sleep(500 * time.Millisecond)
			resp.Allow = true
		case req.Action == "subscribe":
			resp.Error = scproto.NewError("NotYoursError", "channel "+req.Channel+" belongs to someone else")
		case req.Action == "publish":
			resp.Allow, resp.Data = true, json.RawMessage(`{"censored":`+string(req.Data)+`}`)
		case req.Action == "invoke" && req.Event == "login":
			resp.Allow, resp.Data, resp.SetAuthClaims = true, json.RawMessage(`"welcome"`), access.Claims{"sub": "from-backend"}
		case req.Action == "invoke" && req.Event == "price":
			resp.Allow, resp.Data = true, json.RawMessage(`{"usd":42}`)
		}
		json.NewEncoder(w).Encode(resp)
	}))
	defer backend.Close()
	srv, url := startFront(t, Config{})
	srv.UseHook(&access.Hook{URL: backend.URL, Actions: []string{"handshake", "subscribe", "publish", "invoke"}, Timeout: 200 * time.Millisecond,
		Header: http.Header{"Authorization": {"Bearer s3cret"}}})
	c := dialRaw(t, url)
	c.handshake()
	c.send(`{"event":"#subscribe","data":{"channel":"ok"},"cid":2}`)
	c.expect(`{"rid":2}`)
	c.send(`{"event":"#subscribe","data":{"channel":"theirs"},"cid":3}`)
	c.expect(`{"rid":3,"error":{"message":"channel theirs belongs to someone else","name":"NotYoursError"}}`)
	c.send(`{"event":"#subscribe","data":{"channel":"slow"},"cid":4}`)
	c.expect(`{"rid":4,"error":{"message":"The subscribe could not be authorized: the decision service is unavailable","name":"HookUnavailableError"}}`)
	c.send(`{"event":"#publish","data":{"channel":"ok","data":"x"},"cid":5}`)
	c.expect(`{"event":"#publish","data":{"channel":"ok","data":{"censored":"x"}}}`)
	c.expect(`{"rid":5}`)
	c.send(`{"event":"price","cid":6}`)
	c.expect(`{"rid":6,"data":{"usd":42}}`)
	c.send(`{"event":"login","cid":8}`)
	c.expect(`{"rid":8,"data":"welcome"}`)
	c.expect(`{"event":"#setAuthToken","data":{"token":"`)
	if cl := srv.Sockets()[0].Claims(); cl["sub"] != "from-backend" {
		t.Fatalf("socket claims after hook login: %v", cl)
	}
	c.send(`{"event":"nobody","cid":7}`)
	c.expect(`"rid":7,"error":{"message":"No handler is registered for the nobody event","name":"UnhandledEventError"}`)
}

func TestHookFailurePolicy(t *testing.T) {
	for _, open := range []bool{false, true} {
		srv, url := startFront(t, Config{})
		srv.UseHook(&access.Hook{URL: "http://127.0.0.1:1/hook", FailOpen: open})
		c := dialRaw(t, url)
		c.send(`{"event":"#handshake","data":{"authToken":null},"cid":1}`)
		m, err := c.next()
		if err != nil {
			t.Fatal(err)
		}
		if open != strings.Contains(m, `"isAuthenticated"`) {
			t.Fatalf("FailOpen=%v: handshake answer %s", open, m)
		}
		if !open && !strings.Contains(m, "HookUnavailableError") {
			t.Fatalf("fail-closed handshake answer %s", m)
		}
	}
}
