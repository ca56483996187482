package wsfront

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Auth signs and verifies SocketCluster auth tokens: HS256 JWTs under a key that every node
// of a cluster shares, so a token issued by one node is accepted by all of them.
type Auth struct {
	key []byte
	// DefaultExpiry is added as exp to tokens that carry none (SocketCluster: 86400 s).
	DefaultExpiry time.Duration
	now           func() time.Time
}

// NewAuth returns an Auth for key. An empty key is refused: a random per-process key would
// make tokens die with the process and differ between nodes.
func NewAuth(key string, defaultExpiry time.Duration) (*Auth, error) {
	if key == "" {
		return nil, errors.New("auth key is empty")
	}
	if defaultExpiry <= 0 {
		defaultExpiry = 24 * time.Hour
	}
	return &Auth{key: []byte(key), DefaultExpiry: defaultExpiry, now: time.Now}, nil
}

// Claims are a token's payload.
type Claims = map[string]any

// Sign issues a token for claims, adding iat and, unless present, exp. expiresIn > 0
// overrides the default expiry.
func (a *Auth) Sign(claims Claims, expiresIn time.Duration) (string, Claims, error) {
	now := a.now()
	out := make(jwt.MapClaims, len(claims)+2)
	for k, v := range claims {
		out[k] = v
	}
	out["iat"] = now.Unix()
	if _, ok := out["exp"]; !ok || expiresIn > 0 {
		if expiresIn <= 0 {
			expiresIn = a.DefaultExpiry
		}
		out["exp"] = now.Add(expiresIn).Unix()
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, out).SignedString(a.key)
	if err != nil {
		return "", nil, err
	}
	// Round-trip the claims through JSON so what handlers see is what a verify would give.
	var norm Claims
	b, _ := json.Marshal(out)
	_ = json.Unmarshal(b, &norm)
	return tok, norm, nil
}

var verifyParser = jwt.NewParser(jwt.WithValidMethods([]string{"HS256", "HS384", "HS512"}))

// Verify checks a token presented by a client. The error it returns is an *Error named as
// socketcluster-server names it (AuthTokenExpiredError, AuthTokenInvalidError, ...), with
// isBadToken telling whether the client should drop the token.
func (a *Auth) Verify(raw json.RawMessage) (Claims, time.Time, *Error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, time.Time{}, NewError("AuthTokenInvalidError", "jwt must be provided", "isBadToken", true)
	}
	var tok string
	if json.Unmarshal(raw, &tok) != nil {
		return nil, time.Time{}, NewError("AuthTokenError", "Invalid token format - Token must be a string", "isBadToken", true)
	}
	claims := jwt.MapClaims{}
	_, err := verifyParser.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return a.key, nil })
	if err != nil {
		switch {
		case errors.Is(err, jwt.ErrTokenExpired):
			exp, _ := claims.GetExpirationTime()
			e := NewError("AuthTokenExpiredError", "jwt expired", "isBadToken", true)
			if exp != nil {
				e.Fields["expiry"] = exp.UTC().Format("2006-01-02T15:04:05.000Z")
			}
			return nil, time.Time{}, e
		case errors.Is(err, jwt.ErrTokenNotValidYet):
			nbf, _ := claims.GetNotBefore()
			e := NewError("AuthTokenNotBeforeError", "jwt not active", "isBadToken", false)
			if nbf != nil {
				e.Fields["date"] = nbf.UTC().Format("2006-01-02T15:04:05.000Z")
			}
			return nil, time.Time{}, e
		case errors.Is(err, jwt.ErrTokenSignatureInvalid):
			return nil, time.Time{}, NewError("AuthTokenInvalidError", "invalid signature", "isBadToken", true)
		case errors.Is(err, jwt.ErrTokenMalformed):
			return nil, time.Time{}, NewError("AuthTokenInvalidError", "jwt malformed", "isBadToken", true)
		default:
			return nil, time.Time{}, NewError("AuthTokenInvalidError", "invalid token", "isBadToken", true)
		}
	}
	var exp time.Time
	if e, _ := claims.GetExpirationTime(); e != nil {
		exp = e.Time
	}
	return Claims(claims), exp, nil
}
