package access

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

func rawString(s string) json.RawMessage { b, _ := json.Marshal(s); return b }

func TestAuthSignVerify(t *testing.T) {
	a, err := NewAuth("secret", 0)
	if err != nil {
		t.Fatal(err)
	}
	tok, claims, err := a.Sign(Claims{"username": "alice"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if claims["exp"].(float64)-claims["iat"].(float64) != 86400 {
		t.Fatalf("default expiry not 86400 s: %v", claims)
	}
	got, exp, aerr := a.Verify(rawString(tok))
	if aerr != nil || got["username"] != "alice" || exp.IsZero() {
		t.Fatalf("verify: %v %v %v", got, exp, aerr)
	}
}

func TestAuthRejections(t *testing.T) {
	a, _ := NewAuth("secret", time.Hour)
	other, _ := NewAuth("other", time.Hour)
	wrongKey, _, _ := other.Sign(Claims{"u": 1}, 0)
	expired, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"u": 1, "exp": time.Now().Add(-time.Minute).Unix()}).SignedString([]byte("secret"))
	future, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"u": 1, "nbf": time.Now().Add(time.Hour).Unix()}).SignedString([]byte("secret"))
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims{"u": 1}).SignedString([]byte("secret"))
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"u": 1}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	tests := []struct {
		name, raw, errName string
		bad                bool
	}{
		{"wrong key", string(rawString(wrongKey)), "AuthTokenInvalidError", true},
		{"expired", string(rawString(expired)), "AuthTokenExpiredError", true},
		{"not before", string(rawString(future)), "AuthTokenNotBeforeError", false},
		{"garbage", string(rawString("garbage.token.value")), "AuthTokenInvalidError", true},
		{"number", "12345", "AuthTokenError", true},
		{"null", "null", "AuthTokenInvalidError", true},
		{"alg none", string(rawString(none)), "AuthTokenInvalidError", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, e := a.Verify(json.RawMessage(tt.raw))
			if e == nil || e.Name != tt.errName || e.IsBadToken() != tt.bad {
				t.Fatalf("got %+v, want %s bad=%v", e, tt.errName, tt.bad)
			}
		})
	}
	if _, _, e := a.Verify(rawString(hs512)); e != nil {
		t.Fatalf("HS512 token refused: %v", e)
	}
	if _, _, e := a.Verify(rawString(expired)); !strings.HasSuffix(e.Fields["expiry"].(string), "Z") {
		t.Fatalf("expiry not ISO-8601: %v", e.Fields)
	}
}

func FuzzAuthVerify(f *testing.F) {
	a, _ := NewAuth("secret", time.Hour)
	tok, _, _ := a.Sign(Claims{"u": "x"}, 0)
	for _, s := range []string{string(rawString(tok)), `"a.b.c"`, `null`, `{}`, `"eyJhbGciOiJub25lIn0.e30."`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, _, e := a.Verify(b)
		if (c == nil) == (e == nil) {
			t.Fatalf("claims %v and error %v for %q", c, e, b)
		}
	})
}

func writePEM(t *testing.T, path string, pub any) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestAsymmetricTokensFromPEMWithRotation(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	file := filepath.Join(t.TempDir(), "pub.pem")
	writePEM(t, file, &rsaKey.PublicKey)
	a, err := NewAuthWith(AuthConfig{PublicKeyFiles: []string{file}, Issuer: "https://auth.example", Audience: "chat"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a.now = func() time.Time { return now }
	claims := jwt.MapClaims{"sub": "u1", "iss": "https://auth.example", "aud": "chat", "exp": now.Add(time.Hour).Unix()}
	rs, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(rsaKey)
	if c, _, e := a.Verify(rawString(rs)); e != nil || c["sub"] != "u1" {
		t.Fatalf("RS256: %v %v", c, e)
	}
	wrongIss := jwt.MapClaims{"sub": "u1", "iss": "https://evil", "aud": "chat"}
	bad, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, wrongIss).SignedString(rsaKey)
	if _, _, e := a.Verify(rawString(bad)); e == nil || !strings.Contains(e.Message, "issuer") {
		t.Fatalf("wrong issuer accepted: %v", e)
	}
	wrongAud := jwt.MapClaims{"sub": "u1", "iss": "https://auth.example", "aud": "other"}
	bad, _ = jwt.NewWithClaims(jwt.SigningMethodRS256, wrongAud).SignedString(rsaKey)
	if _, _, e := a.Verify(rawString(bad)); e == nil || !strings.Contains(e.Message, "audience") {
		t.Fatalf("wrong audience accepted: %v", e)
	}
	// Algorithm confusion: an HS256 token "signed" with the public key bytes is refused.
	pubDER, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	hs, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(pubDER)
	if _, _, e := a.Verify(rawString(hs)); e == nil {
		t.Fatal("HS256 token accepted by an RS-only Auth")
	}
	// Rotation: the file now holds an EC key; after the re-check interval the ES256 token
	// is accepted and the old RSA one is not.
	es, _ := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(ecKey)
	writePEM(t, file, &ecKey.PublicKey)
	os.Chtimes(file, now.Add(time.Minute), now.Add(time.Minute))
	now = now.Add(11 * time.Second)
	if _, _, e := a.Verify(rawString(es)); e != nil {
		t.Fatalf("rotated ES256 key not picked up: %v", e)
	}
	if _, _, e := a.Verify(rawString(rs)); e == nil {
		t.Fatal("old RSA key still accepted after rotation")
	}
}

func TestJWKSWithKeyRotation(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := rsa.GenerateKey(rand.Reader, 2048)
	var mu sync.Mutex
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k1.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}}
	fetches := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fetches++
		json.NewEncoder(w).Encode(set)
	}))
	defer srv.Close()
	a, err := NewAuthWith(AuthConfig{JWKSURL: srv.URL, HMACKey: "also-hs"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a.now = func() time.Time { return now }
	sign := func(m jwt.SigningMethod, kid string, key any) string {
		tk := jwt.NewWithClaims(m, jwt.MapClaims{"sub": "x"})
		tk.Header["kid"] = kid
		s, _ := tk.SignedString(key)
		return s
	}
	if _, _, e := a.Verify(rawString(sign(jwt.SigningMethodES256, "k1", k1))); e != nil {
		t.Fatalf("k1: %v", e)
	}
	// The auth service rotates to k2; a token with the unknown kid triggers a fetch.
	mu.Lock()
	set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k2.PublicKey, KeyID: "k2", Algorithm: "RS256", Use: "sig"})
	mu.Unlock()
	now = now.Add(11 * time.Second)
	if _, _, e := a.Verify(rawString(sign(jwt.SigningMethodRS256, "k2", k2))); e != nil {
		t.Fatalf("rotated k2 not fetched: %v", e)
	}
	// HS256 keeps working beside it.
	tok, _, _ := a.Sign(Claims{"u": 1}, 0)
	if _, _, e := a.Verify(rawString(tok)); e != nil {
		t.Fatalf("HS256 beside JWKS: %v", e)
	}
	if fetches != 2 {
		t.Fatalf("%d JWKS fetches, want 2 (start, unknown kid)", fetches)
	}
}

// The token policy: by default (socketcluster-server's) a token without exp is accepted; the
// flags and the strict profile refuse it, refuse lifetimes over the maximum and iat in the
// future, and allow the configured clock skew, each with an error a client can read.
func TestTokenPolicy(t *testing.T) {
	now := time.Now()
	sign := func(c jwt.MapClaims) json.RawMessage {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte("secret"))
		if err != nil {
			t.Fatal(err)
		}
		return rawString(s)
	}
	noExp := sign(jwt.MapClaims{"u": 1})
	day := sign(jwt.MapClaims{"u": 1, "iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix()})
	week := sign(jwt.MapClaims{"u": 1, "iat": now.Unix(), "exp": now.Add(7 * 24 * time.Hour).Unix()})
	weekNoIat := sign(jwt.MapClaims{"u": 1, "exp": now.Add(7 * 24 * time.Hour).Unix()})
	oldIatLongExp := sign(jwt.MapClaims{"u": 1, "iat": now.Add(-30 * 24 * time.Hour).Unix(), "exp": now.Add(time.Hour).Unix()})
	expired3s := sign(jwt.MapClaims{"u": 1, "exp": now.Add(-3 * time.Second).Unix()})
	issuedLater := sign(jwt.MapClaims{"u": 1, "iat": now.Add(time.Minute).Unix(), "exp": now.Add(time.Hour).Unix()})
	base := AuthConfig{HMACKey: "secret"}
	for _, c := range []struct {
		name string
		cfg  AuthConfig
		tok  json.RawMessage
		want string // "" accepted, else the message's start
	}{
		{"default: no exp", base, noExp, ""},
		{"default: a week", base, week, ""},
		{"default: iat in the future", base, issuedLater, ""},
		{"default: expired 3 s ago", base, expired3s, "jwt expired"},
		{"require exp: no exp", AuthConfig{HMACKey: "secret", RequireExp: true}, noExp, "jwt has no exp"},
		{"require exp: with exp", AuthConfig{HMACKey: "secret", RequireExp: true}, day, ""},
		{"max lifetime: no exp", AuthConfig{HMACKey: "secret", MaxLifetime: time.Hour}, noExp, "jwt has no exp"},
		{"skew 5 s: expired 3 s ago", AuthConfig{HMACKey: "secret", ClockSkew: 5 * time.Second}, expired3s, ""},
		{"strict: no exp", StrictPolicy(base, 0, 0), noExp, "jwt has no exp"},
		{"strict: a day", StrictPolicy(base, 0, 0), day, ""},
		{"strict: a week", StrictPolicy(base, 0, 0), week, "jwt lifetime exceeds the maximum of 24h0m0s"},
		{"strict: a week, no iat", StrictPolicy(base, 0, 0), weekNoIat, "jwt lifetime exceeds"},
		{"strict: issued 30 days ago, exp in an hour", StrictPolicy(base, 0, 0), oldIatLongExp, "jwt lifetime exceeds"},
		{"strict: iat a minute ahead", StrictPolicy(base, 0, 0), issuedLater, "jwt issued in the future"},
		{"strict: expired 3 s ago (5 s skew)", StrictPolicy(base, 0, 0), expired3s, ""},
		{"strict, 1 h max: a day", StrictPolicy(base, time.Hour, 0), day, "jwt lifetime exceeds the maximum of 1h0m0s"},
	} {
		a, err := NewAuthWith(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, _, e := a.Verify(c.tok)
		switch {
		case c.want == "" && e != nil:
			t.Errorf("%s: refused: %v", c.name, e.Message)
		case c.want != "" && (e == nil || !strings.HasPrefix(e.Message, c.want) || e.Name != "AuthTokenInvalidError" && e.Name != "AuthTokenExpiredError"):
			t.Errorf("%s: %+v, want %q", c.name, e, c.want)
		}
	}
}
