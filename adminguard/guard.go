// Package adminguard is the door of a node's operator HTTP surface (the admin listener): which
// paths answer anyone (the health probes), which need a credential (the admin token as a
// bearer token, or another credential the caller accepts, such as the HTTP API's key), and
// which browser origins may read the answers (an allow-list, empty by default: no wildcard).
//
// What is behind the door reveals the cluster (members, addresses, channel counts, traffic),
// costs CPU on demand (profiles) or acts on it (drain, kick): a request without a credential
// gets 401 and a body that says only what to send, for every guarded path alike, so that not
// even which paths exist is told.
package adminguard

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Config describes a Guard.
type Config struct {
	// Token is the admin token, sent as "Authorization: Bearer <token>". Empty: no token.
	Token string
	// Also reports whether a request carries another credential that opens the door (the
	// HTTP API key); nil: none.
	Also func(*http.Request) bool
	// Open are the paths served to anyone (exact match), e.g. /healthz and /readyz.
	Open []string
	// AllowOrigins are the browser origins ("http://host:port") whose pages may read the
	// answers (CORS). Empty: none; "*" is refused.
	AllowOrigins []string
	// Page is the path of the browser status page (e.g. "/ui"). A browser cannot send a
	// header when the operator opens a link, so there, and only there, the token may come as
	// ?token=; the guard then sets a cookie scoped to Page so that the page's own files
	// load. The cookie opens nothing else: the page reads the data with the token in a header.
	//
	// With neither Token nor Also the guard lets every request through (a loopback listener
	// on a developer's machine); node refuses that on a listener other hosts can reach.
	Page string
}

// Guard wraps the admin handler; see Config.
type Guard struct {
	cfg     Config
	token   atomic.Pointer[[sha256.Size]byte] // nil: no token
	origins map[string]bool
}

// refusal is the body of every 401, in the shape of the HTTP API's errors (the API's
// cluster-wide calls between nodes go through this door too).
const refusal = `{"error":{"code":"unauthorized","message":"send the admin token (Authorization: Bearer TOKEN) or the API key"}}` + "\n"

// CookieName is the cookie that carries the token for the status page's files.
const CookieName = "sockmesh_admin"

// New checks cfg and returns its Guard.
func New(cfg Config) (*Guard, error) {
	g := &Guard{cfg: cfg, origins: map[string]bool{}}
	for _, o := range cfg.AllowOrigins {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		norm, err := NormalizeOrigin(o)
		if err != nil {
			return nil, err
		}
		g.origins[norm] = true
	}
	g.SetToken(cfg.Token)
	return g, nil
}

// NormalizeOrigin checks that o is an origin (scheme://host[:port], nothing else) and
// returns it lower-cased, as browsers send it.
func NormalizeOrigin(o string) (string, error) {
	if o == "*" {
		return "", errors.New("admin-allow-origins: \"*\" would let any web page an operator visits read the cluster; list the origins")
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("admin-allow-origins: %q is not an origin (scheme://host[:port])", o)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// SetToken replaces the admin token (empty: none) for the requests that follow.
func (g *Guard) SetToken(token string) {
	if token == "" {
		g.token.Store(nil)
		return
	}
	sum := sha256.Sum256([]byte(token))
	g.token.Store(&sum)
}

// matches compares a presented token with the admin token in constant time (hashes of both:
// neither the length nor a prefix of the token shows in the timing).
func (g *Guard) matches(presented string) bool {
	want := g.token.Load()
	if want == nil || presented == "" {
		return false
	}
	got := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// Authorized reports whether r carries a credential that opens guarded paths (the token in
// the Authorization header, or the Also credential). The page cookie and ?token= are not
// credentials here; see Config.Page.
func (g *Guard) Authorized(r *http.Request) bool {
	if g.matches(bearer(r)) {
		return true
	}
	return g.cfg.Also != nil && g.cfg.Also(r)
}

// guarding: a credential is configured.
func (g *Guard) guarding() bool { return g.token.Load() != nil || g.cfg.Also != nil }

func (g *Guard) isOpen(path string) bool { return slices.Contains(g.cfg.Open, path) }

func (g *Guard) onPage(path string) bool {
	p := g.cfg.Page
	return p != "" && (path == p || strings.HasPrefix(path, p+"/"))
}

// Handler returns next behind the guard.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		allowed := origin != "" && g.origins[strings.ToLower(origin)]
		if allowed {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			// A preflight carries no credential; it is answered for allowed origins only.
			if !allowed {
				http.Error(w, "origin not allowed", http.StatusForbidden)
				return
			}
			h := w.Header()
			h.Set("Access-Control-Allow-Methods", "GET, HEAD")
			h.Set("Access-Control-Allow-Headers", "Authorization, X-API-Key")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if g.isOpen(r.URL.Path) || !g.guarding() || g.Authorized(r) {
			next.ServeHTTP(w, r)
			return
		}
		if g.onPage(r.URL.Path) && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			if t := r.URL.Query().Get("token"); g.matches(t) {
				http.SetCookie(w, &http.Cookie{Name: CookieName, Value: t, Path: g.cfg.Page, HttpOnly: true,
					SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: int((12 * time.Hour).Seconds())})
				w.Header().Set("Referrer-Policy", "no-referrer")
				next.ServeHTTP(w, r)
				return
			}
			if c, err := r.Cookie(CookieName); err == nil && g.matches(c.Value) {
				next.ServeHTTP(w, r)
				return
			}
		}
		h := w.Header()
		h.Set("WWW-Authenticate", `Bearer realm="sockmesh admin"`)
		h.Set("Content-Type", "application/json")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, refusal)
	})
}
