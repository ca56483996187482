package wsfront

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

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
			if e == nil || e.Name != tt.errName || isBadToken(e) != tt.bad {
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
