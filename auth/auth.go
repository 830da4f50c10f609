// Package auth checks the JSON Web Tokens clients and stream sources present, and mints them
// for testing.
//
// A token names who the client is (sub), when it expires (exp, required), which rooms it may
// use (rooms: exact names, or prefixes ending in "*"), and whether it may publish (pub). It is
// signed with HS256 (a shared secret), or RS256/ES256 (a public key, or a JWKS whose keys are
// picked by kid). Verification is golang-jwt's; JWKS parsing is keyfunc's.
package auth

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/roost-dev/roost/protocol"
)

// Errors a check ends in. ErrUnauthorized covers a missing, malformed, wrongly signed or
// expired token (401, close 4401, ERR unauthorized); ErrForbidden a valid token that does not
// allow what was asked (403, close 4403, ERR forbidden).
var (
	ErrUnauthorized = errors.New("unauthorized")
	ErrForbidden    = errors.New("forbidden")
)

// MinSecret is the shortest HS256 secret that is not weak (RFC 7518 §3.2); shorter ones work,
// with a warning at start.
const MinSecret = 32

// Leeway is the clock skew allowed on exp, nbf and iat.
const Leeway = 5 * time.Second

// Config says which keys verify tokens. Any key turns auth on; the zero Config leaves it off.
type Config struct {
	HMACSecret   []byte // HS256
	PublicKeyPEM []byte // RS256 or ES256: a PEM public key (or certificate)
	JWKS         []byte // RS256 or ES256: a JSON Web Key Set, keys picked by the token's kid
}

// Enabled reports whether any key is set.
func (c Config) Enabled() bool {
	return len(c.HMACSecret) > 0 || len(c.PublicKeyPEM) > 0 || len(c.JWKS) > 0
}

// Claims are roost's token claims.
type Claims struct {
	jwt.RegisteredClaims
	// Rooms the token allows: exact names, or prefixes ending in "*" ("team-*"; "*" is every room).
	Rooms []string `json:"rooms"`
	// Pub allows publishing (and streaming); without it the token only reads.
	Pub bool `json:"pub,omitempty"`
}

// Allows reports whether the claims cover room.
func (c *Claims) Allows(room string) bool {
	for _, r := range c.Rooms {
		if prefix, ok := strings.CutSuffix(r, "*"); ok {
			if strings.HasPrefix(room, prefix) {
				return true
			}
		} else if r == room {
			return true
		}
	}
	return false
}

// Verifier checks tokens. A nil *Verifier is auth turned off: it lets everyone in.
type Verifier struct {
	hmac   []byte
	pub    any // *rsa.PublicKey or *ecdsa.PublicKey
	jwks   keyfunc.Keyfunc
	parser *jwt.Parser
}

// NewVerifier builds a verifier from cfg; it returns nil (auth off) when cfg has no key.
func NewVerifier(cfg Config) (*Verifier, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	v := &Verifier{hmac: cfg.HMACSecret}
	if len(cfg.PublicKeyPEM) > 0 {
		k, err := parsePublicKey(cfg.PublicKeyPEM)
		if err != nil {
			return nil, err
		}
		v.pub = k
	}
	if len(cfg.JWKS) > 0 {
		k, err := keyfunc.NewJWKSetJSON(cfg.JWKS)
		if err != nil {
			return nil, fmt.Errorf("auth: JWKS: %w", err)
		}
		v.jwks = k
	}
	v.parser = jwt.NewParser(jwt.WithValidMethods([]string{"HS256", "RS256", "ES256"}),
		jwt.WithExpirationRequired(), jwt.WithLeeway(Leeway))
	return v, nil
}

// parsePublicKey reads an RSA or ECDSA public key from PEM: PKIX, PKCS#1 or a certificate.
func parsePublicKey(b []byte) (any, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("auth: the public key file holds no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: public key: %w", err)
	}
	switch key.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
		return key, nil
	}
	return nil, fmt.Errorf("auth: public key of type %T: use RSA (RS256) or ECDSA P-256 (ES256)", key)
}

// key picks the key that verifies t, by its algorithm.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if len(v.hmac) == 0 {
			return nil, errors.New("HS256 tokens are not accepted here")
		}
		return v.hmac, nil
	case *jwt.SigningMethodRSA, *jwt.SigningMethodECDSA:
		if v.jwks != nil {
			if k, err := v.jwks.Keyfunc(t); err == nil || v.pub == nil {
				return k, err
			}
		}
		if v.pub == nil {
			return nil, fmt.Errorf("%s tokens are not accepted here", t.Method.Alg())
		}
		return v.pub, nil
	}
	return nil, fmt.Errorf("%s tokens are not accepted here", t.Method.Alg())
}

// Verify checks a token's signature and times and returns its claims. Every failure wraps
// ErrUnauthorized, with the reason in the message.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if v == nil {
		return &Claims{Rooms: []string{"*"}, Pub: true}, nil
	}
	if token == "" {
		return nil, fmt.Errorf("%w: a token is required (token= or Authorization: Bearer)", ErrUnauthorized)
	}
	var c Claims
	if _, err := v.parser.ParseWithClaims(token, &c, v.key); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrUnauthorized, reason(err))
	}
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: the token has no sub", ErrUnauthorized)
	}
	return &c, nil
}

// reason shortens golang-jwt's errors to what a client can act on.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "the token has expired"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "the token has no exp"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "the token is malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "the token's signature does not verify"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "the token is not valid yet"
	}
	return err.Error()
}

// Check verifies token and that it allows room, and publishing when publish is set.
func (v *Verifier) Check(token, room string, publish bool) (*Claims, error) {
	c, err := v.Verify(token)
	if err != nil {
		return nil, err
	}
	if !c.Allows(room) {
		return nil, fmt.Errorf("%w: the token does not cover room %q", ErrForbidden, room)
	}
	if publish && !c.Pub {
		return nil, fmt.Errorf("%w: the token is read-only (no pub claim)", ErrForbidden)
	}
	return c, nil
}

// FromRequest returns the token of a request: the token query parameter, or an
// Authorization: Bearer header.
func FromRequest(r *http.Request) string {
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	if h, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(h)
	}
	return ""
}

// Mint signs an HS256 token for sub, allowing rooms (and publishing when pub), valid for ttl.
func Mint(secret []byte, sub string, rooms []string, pub bool, ttl time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("auth: no HS256 secret (--auth-hmac-secret or ROOST_AUTH_HMAC_SECRET)")
	}
	if sub == "" || len(rooms) == 0 || ttl <= 0 {
		return "", errors.New("auth: a token needs a sub, at least one room and a positive ttl")
	}
	now := time.Now()
	c := Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: sub, IssuedAt: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl))}, Rooms: rooms, Pub: pub}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}

// Refusal is how each door answers a failed check: the WebSocket close code, the HTTP status
// and the error code (also the TCP ERR code).
func Refusal(err error) (closeCode, status int, code string) {
	if errors.Is(err, ErrForbidden) {
		return protocol.CloseForbidden, http.StatusForbidden, protocol.CodeForbidden
	}
	return protocol.CloseUnauthorized, http.StatusUnauthorized, protocol.CodeUnauthorized
}
