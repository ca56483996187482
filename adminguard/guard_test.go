package adminguard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const token = "correct-horse-battery-staple"

// behind returns a guard's handler around a handler that answers "secret <path>", and a
// way to send it a request.
func behind(t *testing.T, cfg Config) (*Guard, func(method, target string, hdr ...string) *http.Response) {
	t.Helper()
	if cfg.Open == nil {
		cfg.Open = []string{"/healthz", "/readyz"}
	}
	if cfg.Page == "" {
		cfg.Page = "/ui"
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "secret "+r.URL.Path)
	}))
	return g, func(method, target string, hdr ...string) *http.Response {
		r := httptest.NewRequest(method, target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Result()
	}
}

func body(r *http.Response) string {
	b, _ := io.ReadAll(r.Body)
	return string(b)
}

// With a token, every path but the probes answers 401 without it, with one body for all
// (not even which paths exist is told), and the token in a bearer header opens them.
func TestTokenGuardsAllButTheProbes(t *testing.T) {
	_, do := behind(t, Config{Token: token})
	for _, p := range []string{"/healthz", "/readyz"} {
		if r := do("GET", p); r.StatusCode != 200 {
			t.Errorf("%s: %d, want 200 without a token", p, r.StatusCode)
		}
	}
	var first string
	for _, p := range []string{"/metrics", "/cluster", "/ui", "/ui/app.js", "/debug/pprof/", "/debug/pprof/profile?seconds=30", "/drain", "/local/channels", "/no/such/path", "/healthz/", "/HEALTHZ"} {
		for _, hdr := range [][]string{
			nil,
			{"Authorization", "Bearer wrong"},
			{"Authorization", "Bearer " + token[:len(token)-1]},
			{"Authorization", "Bearer " + token + "x"},
			{"Authorization", "Basic " + token},
			{"Authorization", token},
			{"X-API-Key", token},
			{"Cookie", CookieName + "=" + token}, // the page's cookie opens only the page
		} {
			if p == "/ui" || p == "/ui/app.js" {
				if len(hdr) == 2 && hdr[0] == "Cookie" {
					continue
				}
			}
			r := do("GET", p, hdr...)
			b := body(r)
			if r.StatusCode != 401 || strings.Contains(b, "secret") {
				t.Errorf("GET %s %v: %d %q, want 401", p, hdr, r.StatusCode, b)
			}
			if first == "" {
				first = b
			}
			if b != first || r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("GET %s %v: body %q, WWW-Authenticate %q: every refusal alike", p, hdr, b, r.Header.Get("WWW-Authenticate"))
			}
		}
		for _, auth := range []string{"Bearer " + token, "bearer " + token, "BEARER  " + token} {
			if r := do("GET", p, "Authorization", auth); r.StatusCode != 200 || body(r) != "secret "+strings.Split(p, "?")[0] {
				t.Errorf("GET %s with %q: %d", p, auth, r.StatusCode)
			}
		}
	}
	if r := do("POST", "/drain"); r.StatusCode != 401 {
		t.Errorf("POST /drain without a token: %d", r.StatusCode)
	}
}

// The status page takes the token once in its link, and sets a cookie for its own files
// only (path /ui, HttpOnly, SameSite=Strict); ?token= opens nothing else.
func TestPageTokenInTheLink(t *testing.T) {
	_, do := behind(t, Config{Token: token})
	r := do("GET", "/ui?token="+token)
	if r.StatusCode != 200 {
		t.Fatalf("/ui?token=: %d", r.StatusCode)
	}
	var c *http.Cookie
	for _, k := range r.Cookies() {
		if k.Name == CookieName {
			c = k
		}
	}
	if c == nil || c.Path != "/ui" || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || r.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("cookie %+v, Referrer-Policy %q", c, r.Header.Get("Referrer-Policy"))
	}
	if r := do("GET", "/ui/app.js", "Cookie", CookieName+"="+c.Value); r.StatusCode != 200 {
		t.Errorf("/ui/app.js with the cookie: %d", r.StatusCode)
	}
	for _, target := range []string{"/ui?token=wrong", "/ui/app.js?token=", "/metrics?token=" + token, "/cluster?token=" + token, "/uix?token=" + token} {
		if r := do("GET", target); r.StatusCode != 401 {
			t.Errorf("GET %s: %d, want 401", target, r.StatusCode)
		}
	}
	if r := do("POST", "/ui?token="+token); r.StatusCode != 401 {
		t.Errorf("POST /ui?token=: %d, want 401", r.StatusCode)
	}
}

// Another credential (the API key) opens the door too; a new token replaces the old one.
func TestAlsoAndTokenRotation(t *testing.T) {
	g, do := behind(t, Config{Token: token, Also: func(r *http.Request) bool { return r.Header.Get("X-API-Key") == "k" }})
	if r := do("GET", "/metrics", "X-API-Key", "k"); r.StatusCode != 200 {
		t.Errorf("with the other credential: %d", r.StatusCode)
	}
	g.SetToken("next")
	if r := do("GET", "/metrics", "Authorization", "Bearer "+token); r.StatusCode != 401 {
		t.Errorf("old token after rotation: %d", r.StatusCode)
	}
	if r := do("GET", "/metrics", "Authorization", "Bearer next"); r.StatusCode != 200 {
		t.Errorf("new token: %d", r.StatusCode)
	}
	g.SetToken("")
	if r := do("GET", "/metrics", "Authorization", "Bearer "); r.StatusCode != 401 {
		t.Errorf("no token but the other credential configured: an empty bearer got %d", r.StatusCode)
	}
}

// With no credential configured (a loopback listener) everything answers, and still no
// origin reads it unless listed.
func TestNoCredentialAndCORS(t *testing.T) {
	_, do := behind(t, Config{AllowOrigins: []string{"http://127.0.0.1:8011", " HTTPS://Ops.Example.com "}})
	if r := do("GET", "/metrics"); r.StatusCode != 200 {
		t.Fatalf("no credential configured: %d", r.StatusCode)
	}
	if r := do("GET", "/cluster", "Origin", "https://evil.example"); r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("an unlisted origin got ACAO %q", r.Header.Get("Access-Control-Allow-Origin"))
	}
	for _, o := range []string{"http://127.0.0.1:8011", "https://ops.example.com"} {
		r := do("GET", "/cluster", "Origin", o)
		if r.Header.Get("Access-Control-Allow-Origin") != o || !strings.Contains(r.Header.Get("Vary"), "Origin") {
			t.Errorf("%s: ACAO %q Vary %q", o, r.Header.Get("Access-Control-Allow-Origin"), r.Header.Get("Vary"))
		}
	}
	r := do("OPTIONS", "/metrics", "Origin", "http://127.0.0.1:8011", "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "authorization")
	if r.StatusCode != 204 || !strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "Authorization") || r.Header.Get("Access-Control-Allow-Origin") != "http://127.0.0.1:8011" {
		t.Errorf("preflight of a listed origin: %d %v", r.StatusCode, r.Header)
	}
	for _, o := range []string{"https://evil.example", "http://127.0.0.1:8012", "null", ""} {
		r := do("OPTIONS", "/metrics", "Origin", o, "Access-Control-Request-Method", "GET")
		if r.StatusCode != 403 || r.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight of %q: %d ACAO %q", o, r.StatusCode, r.Header.Get("Access-Control-Allow-Origin"))
		}
	}
}

func TestOriginsAreChecked(t *testing.T) {
	for _, o := range []string{"*", "http://x.example/path", "ftp://x.example", "x.example", "http://", "http://u:p@x.example", "http://x.example?q"} {
		if _, err := New(Config{AllowOrigins: []string{o}}); err == nil {
			t.Errorf("origin %q accepted", o)
		}
	}
}

// Whatever the request, the guarded handler is reached only on an open path or with the
// token (header, or the page's link and cookie on the page).
func FuzzGuard(f *testing.F) {
	f.Add("GET", "/metrics", "Bearer "+token, "", "")
	f.Add("GET", "/ui?token="+token, "", "", "")
	f.Add("OPTIONS", "/cluster", "", CookieName+"="+token, "http://a")
	f.Fuzz(func(t *testing.T, method, target, auth, cookie, origin string) {
		g, err := New(Config{Token: token, Open: []string{"/healthz"}, Page: "/ui", AllowOrigins: []string{"http://a"}})
		if err != nil {
			t.Fatal(err)
		}
		reached := false
		h := g.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
		r, err := http.NewRequest(method, "http://h"+target, nil)
		if err != nil || r.URL.Host != "h" {
			return
		}
		r.Header.Set("Authorization", auth)
		r.Header.Set("Cookie", cookie)
		r.Header.Set("Origin", origin)
		h.ServeHTTP(httptest.NewRecorder(), r)
		if !reached {
			return
		}
		path := r.URL.Path
		has := strings.Contains(auth, token) || (path == "/ui" || strings.HasPrefix(path, "/ui/")) && (strings.Contains(r.URL.RawQuery, token) || strings.Contains(r.URL.RawQuery, "token=") || strings.Contains(cookie, token))
		if path != "/healthz" && !has {
			t.Fatalf("%s %q reached the handler without the token (auth %q cookie %q)", method, target, auth, cookie)
		}
	})
}

// The guard's cost per request: a bearer check (two SHA-256 and a constant-time compare).
func BenchmarkGuard(b *testing.B) {
	g, err := New(Config{Token: token, Open: []string{"/healthz"}})
	if err != nil {
		b.Fatal(err)
	}
	h := g.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for _, c := range []struct{ name, auth string }{{"authorized", "Bearer " + token}, {"refused", "Bearer nope"}} {
		r := httptest.NewRequest("GET", "/metrics", nil)
		r.Header.Set("Authorization", c.auth)
		w := httptest.NewRecorder()
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
		})
	}
}
