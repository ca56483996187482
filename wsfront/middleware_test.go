package wsfront

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sockmesh/sockmesh/access"
	"github.com/sockmesh/sockmesh/scproto"
)

func TestMiddlewareAllowDenyAndChange(t *testing.T) {
	srv, url := startFront(t, Config{})
	srv.UseHandshake(func(_ context.Context, r *HandshakeRequest) error {
		switch r.HTTP.URL.Query().Get("who") {
		case "banned":
			return scproto.NewError("BannedError", "Banned forever", "statusCode", 4501)
		case "rude":
			return errors.New("Go away")
		}
		return nil
	})
	srv.UseSubscribe(func(_ context.Context, r *SubscribeRequest) error {
		switch {
		case r.Channel == "silent":
			return scproto.ErrSilentBlock
		case strings.HasPrefix(r.Channel, "forbidden"):
			return scproto.NewError("SubscribeForbiddenError", "You are not allowed to subscribe to "+r.Channel)
		}
		return nil
	})
	srv.UsePublish(func(_ context.Context, r *PublishRequest) error {
		if r.Channel == "readonly" {
			return scproto.NewError("PublishForbiddenError", "Publishing to readonly is not allowed")
		}
		if r.Channel == "shout" {
			var s string
			_ = json.Unmarshal(r.Data, &s)
			r.Data, _ = json.Marshal(strings.ToUpper(s))
		}
		return nil
	})

	t.Run("handshake rejected with statusCode closes with it", func(t *testing.T) {
		c := dialRaw(t, url+"?who=banned")
		c.send(`{"event":"#handshake","data":{"authToken":null},"cid":1}`)
		c.expect(`{"rid":1,"error":{"message":"Banned forever","name":"BannedError","statusCode":4501}}`)
		if code := c.closeCode(); code != 4501 {
			t.Fatalf("close %d, want 4501", code)
		}
	})
	t.Run("plain handshake error is HandshakeRejectedError 4008", func(t *testing.T) {
		c := dialRaw(t, url+"?who=rude")
		c.send(`{"event":"#handshake","data":{"authToken":null},"cid":3}`)
		c.expect(`{"rid":3,"error":{"message":"Go away","name":"HandshakeRejectedError","statusCode":4008}}`)
		if code := c.closeCode(); code != 4008 {
			t.Fatalf("close %d, want 4008", code)
		}
	})
	t.Run("subscribe and publish middleware", func(t *testing.T) {
		c := dialRaw(t, url)
		c.handshake()
		c.send(`{"event":"#subscribe","data":{"channel":"silent"},"cid":2}`)
		c.expect(`{"rid":2,"error":{"message":"The subscribe AGAction was blocked by inbound middleware","name":"SilentMiddlewareBlockedError","type":"inbound"}}`)
		c.send(`{"event":"#subscribe","data":{"channel":"forbidden"},"cid":3}`)
		c.expect(`{"rid":3,"error":{"message":"You are not allowed to subscribe to forbidden","name":"SubscribeForbiddenError"}}`)
		c.send(`{"event":"#subscribe","data":{"channel":"shout"},"cid":4}`)
		c.expect(`{"rid":4}`)
		c.send(`{"event":"#publish","data":{"channel":"readonly","data":"x"},"cid":5}`)
		c.expect(`{"rid":5,"error":{"message":"Publishing to readonly is not allowed","name":"PublishForbiddenError"}}`)
		c.send(`{"event":"#publish","data":{"channel":"shout","data":"hello"},"cid":6}`)
		c.expect(`{"event":"#publish","data":{"channel":"shout","data":"HELLO"}}`)
	})
}

func TestServerTransmitInvokeKickOut(t *testing.T) {
	srv, url := startFront(t, Config{})
	answered := make(chan string, 1)
	srv.HandleInvoke("ask", func(ctx context.Context, inv *Invocation) (any, error) {
		inv.Async(func() (any, error) {
			d, err := inv.Socket.Invoke(ctx, "clientProc", map[string]int{"q": 1})
			if err != nil {
				answered <- "error: " + err.Error()
				return nil, err
			}
			answered <- string(d)
			return d, nil
		})
		return nil, nil
	})
	c := dialRaw(t, url)
	c.handshake()
	c.send(`{"event":"#subscribe","data":{"channel":"room1"},"cid":2}`)
	c.expect(`{"rid":2}`)
	c.send(`{"event":"ask","cid":3}`)
	c.expect(`{"event":"clientProc","data":{"q":1},"cid":1}`)
	c.send(`{"rid":1,"data":{"answer":42}}`)
	c.expect(`{"rid":3,"data":{"answer":42}}`)
	if got := <-answered; got != `{"answer":42}` {
		t.Fatalf("server invoke got %s", got)
	}
	sock := srv.Sockets()[0]
	if err := sock.Transmit("serverEvent", map[string]string{"hello": "client"}); err != nil {
		t.Fatal(err)
	}
	c.expect(`{"event":"serverEvent","data":{"hello":"client"}}`)
	sock.KickOut("room1", "You have been kicked")
	c.expect(`{"event":"#kickOut","data":{"channel":"room1","message":"You have been kicked"}}`)
	if subs := sock.Subscriptions(); len(subs) != 0 {
		t.Fatalf("still subscribed to %v after kickOut", subs)
	}
	// A client error answer reaches the server as an *scproto.Error.
	go func() {
		_, err := sock.Invoke(context.Background(), "clientProcErr", nil)
		answered <- err.Error()
	}()
	c.expect(`{"event":"clientProcErr","cid":2}`)
	c.send(`{"rid":2,"error":{"message":"Client refuses","name":"ClientRefusal"}}`)
	select {
	case got := <-answered:
		if got != "ClientRefusal: Client refuses" {
			t.Fatalf("got %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
	}
}

func TestAuthFlowOnTheWire(t *testing.T) {
	srv, url := startFront(t, Config{})
	srv.HandleInvoke("login", func(_ context.Context, inv *Invocation) (any, error) {
		inv.AfterReply(func() { _ = inv.Socket.SetAuthToken(access.Claims{"username": "alice"}, 0) })
		return "ok", nil
	})
	c := dialRaw(t, url)
	c.handshake()
	c.send(`{"event":"login","cid":2}`)
	c.expect(`{"rid":2,"data":"ok"}`)
	tokMsg, err := c.next()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tokMsg, `{"event":"#setAuthToken","data":{"token":"`) {
		// The reply and the token may share one batch frame.
		t.Fatalf("got %s", tokMsg)
	}
	var tm struct{ Data struct{ Token string } }
	_ = json.Unmarshal([]byte(tokMsg), &tm)
	// The token works in a new connection's handshake.
	c2 := dialRaw(t, url)
	c2.send(`{"event":"#handshake","data":{"authToken":"` + tm.Data.Token + `"},"cid":9}`)
	c2.expect(`"isAuthenticated":true`)
	// #authenticate with garbage: error answer, then #removeAuthToken.
	c2.send(`{"event":"#authenticate","data":"garbage.token.value","cid":10}`)
	c2.expect(`{"rid":10,"error":{"isBadToken":true,"message":"jwt malformed","name":"AuthTokenInvalidError"}}`)
	c2.expect(`{"event":"#removeAuthToken"}`)
	// #authenticate without cid is a protocol violation: 4008.
	c2.send(`{"event":"#authenticate","data":"x.y.z"}`)
	if code := c2.closeCode(); code != scproto.CloseHandshakeRejected {
		t.Fatalf("close %d, want 4008", code)
	}
}

// Tampered tokens are refused and counted by error name.
func TestTamperedTokensRejectedAndCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, url := startFront(t, Config{Metrics: NewMetrics(reg)})
	tok, _, err := srv.Auth().Sign(access.Claims{"username": "alice", "role": "user"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	// Same signature, payload changed to claim admin.
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"username":"alice","role":"admin"}`)) + "." + parts[2]
	c := dialRaw(t, url)
	c.send(`{"event":"#handshake","data":{"authToken":"` + forged + `"},"cid":1}`)
	c.expect(`"authError":{"isBadToken":true,"message":"invalid signature","name":"AuthTokenInvalidError"},"isAuthenticated":false`)
	c.expect(`{"event":"#removeAuthToken"}`)
	c.send(`{"event":"#authenticate","data":"` + parts[0] + "." + parts[1] + `.AAAA","cid":2}`)
	c.expect(`"name":"AuthTokenInvalidError"`)
	if got := testutil.ToFloat64(srv.cfg.Metrics.AuthFailures.WithLabelValues("AuthTokenInvalidError")); got != 2 {
		t.Fatalf("sockmesh_ws_auth_failures_total{error=AuthTokenInvalidError} = %v, want 2", got)
	}
}
