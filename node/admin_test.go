package node

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// adminGet does a GET on the node's admin listener with extra headers (name, value, ...).
func adminGet(t *testing.T, n *Node, path string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.AdminURL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// The admin listener with a token: the probes answer anyone; the cluster view, metrics,
// status page, drain and the cluster-wide API's /local/ calls need the token (or the API
// key); profiles are absent unless --pprof, and then behind the token too; no origin reads
// anything unless listed (before: Access-Control-Allow-Origin: * on /cluster and /metrics).
func TestAdminListenerIsClosed(t *testing.T) {
	const tok = "admin-t0ken"
	n := startAPINode(t, func(c *Config) { c.AdminToken = tok })
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _, _ := adminGet(t, n, p); code == http.StatusUnauthorized {
			t.Errorf("%s: 401 (the probes stay open)", p)
		}
	}
	bearer := []string{"Authorization", "Bearer " + tok}
	for _, p := range []string{"/metrics", "/cluster", "/ui", "/ui/app.js", "/drain", "/local/channels", "/debug/pprof/"} {
		code, body, _ := adminGet(t, n, p, "Origin", "https://evil.example")
		if code != http.StatusUnauthorized || strings.Contains(body, n.cfg.Name) || strings.Contains(body, "sockmesh_") {
			t.Errorf("%s without the token: %d %q", p, code, body)
		}
	}
	for _, p := range []string{"/metrics", "/cluster", "/ui", "/drain"} {
		code, _, h := adminGet(t, n, p, append(bearer, "Origin", "https://evil.example")...)
		if code != http.StatusOK || h.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s with the token: %d, ACAO %q", p, code, h.Get("Access-Control-Allow-Origin"))
		}
	}
	if code, _, _ := adminGet(t, n, "/cluster", "X-API-Key", testAPIKey); code != http.StatusOK {
		t.Errorf("/cluster with the API key: %d", code)
	}
	if code, _, _ := adminGet(t, n, "/debug/pprof/", bearer...); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without --pprof: %d, want 404", code)
	}

	p := startAPINode(t, func(c *Config) { c.AdminToken, c.Pprof = tok, true })
	if code, _, _ := adminGet(t, p, "/debug/pprof/", bearer...); code != http.StatusOK {
		t.Errorf("/debug/pprof/ with --pprof and the token: %d", code)
	}
	if code, _, _ := adminGet(t, p, "/debug/pprof/profile?seconds=1"); code != http.StatusUnauthorized {
		t.Errorf("/debug/pprof/profile with --pprof, no token: %d", code)
	}
}

// An admin listener other hosts can reach does not start unguarded.
func TestAdminOffLoopbackNeedsACredential(t *testing.T) {
	base := Config{Name: "x", WSAddr: "127.0.0.1:0", AdminAddr: "0.0.0.0:0", MeshAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0"}
	if _, err := New(base); err == nil || !strings.Contains(err.Error(), "admin-token") {
		t.Fatalf("0.0.0.0 without a token: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"token":     func(c *Config) { c.AdminToken = "t" },
		"api key":   func(c *Config) { c.APIKey = "k" },
		"insecure":  func(c *Config) { c.AdminInsecure = true },
		"loopback":  func(c *Config) { c.AdminAddr = "127.0.0.2:0" },
		"localhost": func(c *Config) { c.AdminAddr = "localhost:0" },
	} {
		c := base
		mod(&c)
		n, err := New(c)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		_ = n.Shutdown(t.Context()) // never started: releases what New started
	}
	c := base
	c.AdminToken, c.AdminAllowOrigins = "t", []string{"*"}
	if _, err := New(c); err == nil {
		t.Error("admin-allow-origins * accepted")
	}
}

// Under --auth-profile strict a client presenting a token without exp is not authenticated:
// the handshake answers isAuthenticated false with the reason, as socketcluster-server names
// its errors; with the default profile the same token authenticates.
func TestStrictProfileRefusesTokensWithoutExp(t *testing.T) {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"username": "alice"}).SignedString([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		profile string
		authed  bool
	}{{"socketcluster", true}, {"strict", false}} {
		n := startAPINode(t, func(cfg *Config) { cfg.AuthProfile = c.profile })
		ws, _, err := websocket.DefaultDialer.Dial(n.WSURL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"#handshake","data":{"authToken":"`+tok+`"},"cid":1}`))
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, msg, err := ws.ReadMessage()
		ws.Close()
		if err != nil {
			t.Fatal(err)
		}
		var ans struct {
			Data struct {
				IsAuthenticated bool `json:"isAuthenticated"`
				AuthError       *struct {
					Name    string `json:"name"`
					Message string `json:"message"`
				} `json:"authError"`
			} `json:"data"`
		}
		if err := json.Unmarshal(msg, &ans); err != nil {
			t.Fatalf("%s: %q: %v", c.profile, msg, err)
		}
		if ans.Data.IsAuthenticated != c.authed {
			t.Errorf("%s: isAuthenticated %v: %s", c.profile, ans.Data.IsAuthenticated, msg)
		}
		if !c.authed && (ans.Data.AuthError == nil || ans.Data.AuthError.Name != "AuthTokenInvalidError" || !strings.Contains(ans.Data.AuthError.Message, "no exp")) {
			t.Errorf("%s: authError %s", c.profile, msg)
		}
	}
}
