package access

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	"github.com/sockmesh/sockmesh/scproto"
)

// AuthConfig configures token signing and verification. Tokens are JWTs: HS256 under a
// shared key (SocketCluster's default, and how sockmesh issues tokens), or RS*/PS*/ES*/EdDSA
// tokens issued by the user's own auth service and checked against public keys from PEM
// files or a JWKS URL. Keys rotate without a restart: PEM files are re-read when they
// change, the JWKS is refreshed periodically and when a token names an unknown key id.
type AuthConfig struct {
	// HMACKey signs issued tokens (HS256) and verifies HS256/384/512 tokens.
	HMACKey string
	// PublicKeyFiles are PEM files of RSA, ECDSA or Ed25519 public keys (or certificates).
	PublicKeyFiles []string
	// JWKSURL is fetched for public keys (by "kid").
	JWKSURL string
	// JWKSRefresh is the refresh period of the JWKS; zero value 5 min.
	JWKSRefresh time.Duration
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer, Audience string
	// DefaultExpiry is added as exp to issued tokens without one; zero value 24 h.
	DefaultExpiry time.Duration
	// The token policy for presented tokens. The zero value is socketcluster-server's
	// (jsonwebtoken's defaults): a token without exp is valid for as long as the connection
	// lives, no skew is allowed, iat is not checked. RequireExp refuses tokens without exp;
	// MaxLifetime > 0 refuses tokens valid for longer (exp - iat, or exp - now without iat;
	// it implies RequireExp); ClockSkew is the leeway on exp, nbf and iat; CheckIssuedAt
	// refuses tokens issued in the future (beyond ClockSkew). See StrictPolicy.
	RequireExp    bool
	MaxLifetime   time.Duration
	ClockSkew     time.Duration
	CheckIssuedAt bool
	HTTPClient    *http.Client
	Logger        *slog.Logger
}

// Auth signs and verifies SocketCluster auth tokens.
type Auth struct {
	cfg    AuthConfig
	key    []byte
	parser *jwt.Parser
	now    func() time.Time

	keys     atomic.Pointer[keySet]
	reloadMu sync.Mutex // one reload at a time
	lastTry  time.Time  // last JWKS fetch attempt; reloadMu held
	fileMod  map[string]time.Time
	lastStat atomic.Int64 // unix nanoseconds of the last PEM check
}

type keySet struct {
	byKID   map[string]any
	all     []any // every public key, tried in turn for tokens without a kid
	fetched time.Time
}

// NewAuth returns an HS256-only Auth for key (the shorthand of the first sockmesh versions).
func NewAuth(key string, defaultExpiry time.Duration) (*Auth, error) {
	return NewAuthWith(AuthConfig{HMACKey: key, DefaultExpiry: defaultExpiry})
}

// NewAuthWith builds an Auth. At least one of HMACKey, PublicKeyFiles and JWKSURL is needed.
// PEM files must load; a JWKS that cannot be fetched yet is retried on demand.
func NewAuthWith(cfg AuthConfig) (*Auth, error) {
	if cfg.HMACKey == "" && len(cfg.PublicKeyFiles) == 0 && cfg.JWKSURL == "" {
		return nil, errors.New("auth: no key: set an HMAC key, public key files or a JWKS URL")
	}
	if cfg.DefaultExpiry <= 0 {
		cfg.DefaultExpiry = 24 * time.Hour
	}
	if cfg.JWKSRefresh <= 0 {
		cfg.JWKSRefresh = 5 * time.Minute
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 3 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var methods []string
	if cfg.HMACKey != "" {
		methods = append(methods, "HS256", "HS384", "HS512")
	}
	if len(cfg.PublicKeyFiles) > 0 || cfg.JWKSURL != "" {
		methods = append(methods, "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithLeeway(cfg.ClockSkew)}
	if cfg.RequireExp || cfg.MaxLifetime > 0 {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	if cfg.CheckIssuedAt {
		opts = append(opts, jwt.WithIssuedAt())
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	a := &Auth{cfg: cfg, key: []byte(cfg.HMACKey), parser: jwt.NewParser(opts...), now: time.Now, fileMod: map[string]time.Time{}}
	a.keys.Store(&keySet{byKID: map[string]any{}})
	if err := a.reload(true, true); err != nil {
		return nil, err
	}
	return a, nil
}

// DefaultExpiry is the lifetime of issued tokens without their own exp.
func (a *Auth) DefaultExpiry() time.Duration { return a.cfg.DefaultExpiry }

// CanSign reports whether tokens can be issued (an HMAC key is configured).
func (a *Auth) CanSign() bool { return len(a.key) > 0 }

// reload re-reads changed PEM files and, when wantJWKS (at most every 10 s), the JWKS.
// Errors are logged and the previous keys kept; they fail only the first load (PEM).
func (a *Auth) reload(first, wantJWKS bool) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	now := a.now()
	changed := first
	for _, f := range a.cfg.PublicKeyFiles {
		st, err := os.Stat(f)
		if err != nil {
			if first {
				return fmt.Errorf("auth public key %s: %w", f, err)
			}
			continue
		}
		if !st.ModTime().Equal(a.fileMod[f]) {
			changed = true
		}
	}
	a.lastStat.Store(now.UnixNano())
	cur := a.keys.Load()
	fetchJWKS := a.cfg.JWKSURL != "" && wantJWKS && (first || now.Sub(a.lastTry) >= 10*time.Second)
	if !changed && !fetchJWKS {
		return nil
	}
	next := &keySet{byKID: map[string]any{}, fetched: cur.fetched}
	for _, f := range a.cfg.PublicKeyFiles {
		keys, mod, err := readPEMKeys(f)
		if err != nil {
			if first {
				return fmt.Errorf("auth public key %s: %w", f, err)
			}
			a.cfg.Logger.Warn("auth: public key file unreadable, keeping the previous keys", "file", f, "err", err)
			return nil
		}
		a.fileMod[f] = mod
		next.all = append(next.all, keys...)
	}
	if a.cfg.JWKSURL != "" {
		if fetchJWKS {
			a.lastTry = now
			set, err := a.fetchJWKS()
			if err != nil {
				a.cfg.Logger.Warn("auth: JWKS fetch failed; keeping the previous keys", "url", a.cfg.JWKSURL, "err", err)
				set = nil
			}
			if set != nil {
				next.fetched = now
				for _, k := range set.Keys {
					if !k.Valid() || !k.IsPublic() {
						continue
					}
					if k.KeyID != "" {
						next.byKID[k.KeyID] = k.Key
					}
					next.all = append(next.all, k.Key)
				}
			} else {
				next.byKID, next.all = cur.byKID, append(next.all, jwksKeys(cur)...)
			}
		} else {
			next.byKID = cur.byKID
			next.all = append(next.all, jwksKeys(cur)...)
		}
	}
	a.keys.Store(next)
	return nil
}

func (a *Auth) statTime() time.Time { return time.Unix(0, a.lastStat.Load()) }

// jwksKeys returns the keys of cur that came from the JWKS (those with a kid entry).
func jwksKeys(cur *keySet) []any {
	out := make([]any, 0, len(cur.byKID))
	for _, k := range cur.byKID {
		out = append(out, k)
	}
	return out
}

func (a *Auth) fetchJWKS() (*jose.JSONWebKeySet, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.cfg.JWKSURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS: %s", resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	return &set, nil
}

func readPEMKeys(file string) ([]any, time.Time, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, time.Time{}, err
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, time.Time{}, err
	}
	var keys []any
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(blk.Bytes)
			if err != nil {
				return nil, time.Time{}, err
			}
			keys = append(keys, k)
		case "RSA PUBLIC KEY":
			k, err := x509.ParsePKCS1PublicKey(blk.Bytes)
			if err != nil {
				return nil, time.Time{}, err
			}
			keys = append(keys, k)
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, time.Time{}, err
			}
			keys = append(keys, c.PublicKey)
		}
	}
	if len(keys) == 0 {
		return nil, time.Time{}, errors.New("no PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE block")
	}
	return keys, st.ModTime(), nil
}

// keyFor picks the verification key for a token: the HMAC key only for HS*, public keys
// only for the asymmetric algorithms (so a public key can never be used as an HMAC secret).
func (a *Auth) keyFor(t *jwt.Token) (any, error) {
	alg, _ := t.Header["alg"].(string)
	if strings.HasPrefix(alg, "HS") {
		return a.key, nil
	}
	ks := a.keys.Load()
	if kid, _ := t.Header["kid"].(string); kid != "" {
		if k, ok := ks.byKID[kid]; ok {
			return k, nil
		}
		if a.cfg.JWKSURL != "" {
			_ = a.reload(false, true) // a rotated key: fetch now (at most once per 10 s)
			if k, ok := a.keys.Load().byKID[kid]; ok {
				return k, nil
			}
		}
	}
	var set jwt.VerificationKeySet
	for _, k := range ks.all {
		if matchesAlg(k, alg) {
			set.Keys = append(set.Keys, k)
		}
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("no key for this token")
	}
	return set, nil
}

func matchesAlg(k any, alg string) bool {
	switch k.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		return strings.HasPrefix(alg, "ES")
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// Claims are a token's payload.
type Claims = map[string]any

// Sign issues a token for claims, adding iat and, unless present, exp. expiresIn > 0
// overrides the default expiry.
func (a *Auth) Sign(claims Claims, expiresIn time.Duration) (string, Claims, error) {
	if len(a.key) == 0 {
		return "", nil, errors.New("no HMAC key to sign tokens with")
	}
	now := a.now()
	out := make(jwt.MapClaims, len(claims)+2)
	for k, v := range claims {
		out[k] = v
	}
	out["iat"] = now.Unix()
	if _, ok := out["exp"]; !ok || expiresIn > 0 {
		if expiresIn <= 0 {
			expiresIn = a.cfg.DefaultExpiry
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

// Verify checks a token presented by a client. The error it returns is an *scproto.Error named as
// socketcluster-server names it (AuthTokenExpiredError, AuthTokenInvalidError, ...), with
// isBadToken telling whether the client should drop the token.
func (a *Auth) Verify(raw json.RawMessage) (Claims, time.Time, *scproto.Error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, time.Time{}, scproto.NewError("AuthTokenInvalidError", "jwt must be provided", "isBadToken", true)
	}
	var tok string
	if json.Unmarshal(raw, &tok) != nil {
		return nil, time.Time{}, scproto.NewError("AuthTokenError", "Invalid token format - Token must be a string", "isBadToken", true)
	}
	pemDue := len(a.cfg.PublicKeyFiles) > 0 && a.now().Sub(a.statTime()) > 10*time.Second
	jwksDue := a.cfg.JWKSURL != "" && a.now().Sub(a.keys.Load().fetched) > a.cfg.JWKSRefresh
	if pemDue || jwksDue {
		_ = a.reload(false, jwksDue)
	}
	claims := jwt.MapClaims{}
	_, err := a.parser.ParseWithClaims(tok, claims, a.keyFor)
	if err != nil {
		return nil, time.Time{}, tokenError(err, claims, a.cfg)
	}
	var exp time.Time
	if e, _ := claims.GetExpirationTime(); e != nil {
		exp = e.Time
	}
	if max := a.cfg.MaxLifetime; max > 0 {
		from := a.now()
		if iat, _ := claims.GetIssuedAt(); iat != nil {
			from = iat.Time
		}
		if exp.Sub(from) > max+a.cfg.ClockSkew {
			return nil, time.Time{}, scproto.NewError("AuthTokenInvalidError", "jwt lifetime exceeds the maximum of "+max.String(), "isBadToken", true)
		}
	}
	return Claims(claims), exp, nil
}

// StrictPolicy is the "strict" token profile (--auth-profile strict): exp required, a
// lifetime of at most maxLifetime (24 h when 0), iat not in the future, skew (5 s when 0)
// allowed on each check. It returns cfg with the policy fields set.
func StrictPolicy(cfg AuthConfig, maxLifetime, skew time.Duration) AuthConfig {
	if maxLifetime <= 0 {
		maxLifetime = 24 * time.Hour
	}
	if skew <= 0 {
		skew = 5 * time.Second
	}
	cfg.RequireExp, cfg.CheckIssuedAt, cfg.MaxLifetime, cfg.ClockSkew = true, true, maxLifetime, skew
	return cfg
}

// tokenError maps a verification failure to the error jsonwebtoken/socketcluster would give.
func tokenError(err error, claims jwt.MapClaims, cfg AuthConfig) *scproto.Error {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		exp, _ := claims.GetExpirationTime()
		e := scproto.NewError("AuthTokenExpiredError", "jwt expired", "isBadToken", true)
		if exp != nil {
			e.Fields["expiry"] = exp.UTC().Format("2006-01-02T15:04:05.000Z")
		}
		return e
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		nbf, _ := claims.GetNotBefore()
		e := scproto.NewError("AuthTokenNotBeforeError", "jwt not active", "isBadToken", false)
		if nbf != nil {
			e.Fields["date"] = nbf.UTC().Format("2006-01-02T15:04:05.000Z")
		}
		return e
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return scproto.NewError("AuthTokenInvalidError", "jwt has no exp: this server requires one", "isBadToken", true)
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return scproto.NewError("AuthTokenInvalidError", "jwt issued in the future (iat)", "isBadToken", true)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return scproto.NewError("AuthTokenInvalidError", "jwt issuer invalid. expected: "+cfg.Issuer, "isBadToken", true)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return scproto.NewError("AuthTokenInvalidError", "jwt audience invalid. expected: "+cfg.Audience, "isBadToken", true)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return scproto.NewError("AuthTokenInvalidError", "invalid signature", "isBadToken", true)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return scproto.NewError("AuthTokenInvalidError", "jwt malformed", "isBadToken", true)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return scproto.NewError("AuthTokenInvalidError", "invalid signature", "isBadToken", true)
	}
	return scproto.NewError("AuthTokenInvalidError", "invalid token", "isBadToken", true)
}
