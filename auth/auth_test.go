package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func sign(t *testing.T, method jwt.SigningMethod, key any, kid string, c Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(sub string, ttl time.Duration, pub bool, rooms ...string) Claims {
	c := Claims{Rooms: rooms, Pub: pub}
	c.Subject = sub
	if ttl != 0 {
		c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(ttl))
	}
	return c
}

func TestHS256(t *testing.T) {
	v, err := NewVerifier(Config{HMACSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	good := sign(t, jwt.SigningMethodHS256, secret, "", claims("ann", time.Hour, false, "lobby", "team-*"))
	for _, c := range []struct {
		name, token, room string
		publish           bool
		want              error
	}{
		{"exact room", good, "lobby", false, nil},
		{"prefix", good, "team-blue", false, nil},
		{"prefix is not a substring", good, "my-team-blue", false, ErrForbidden},
		{"other room", good, "lobby2", false, ErrForbidden},
		{"read-only publishing", good, "lobby", true, ErrForbidden},
		{"missing", "", "lobby", false, ErrUnauthorized},
		{"garbage", "not.a.jwt", "lobby", false, ErrUnauthorized},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another secret, also 32 bytes...."), "", claims("ann", time.Hour, true, "*")), "lobby", false, ErrUnauthorized},
		{"expired", sign(t, jwt.SigningMethodHS256, secret, "", claims("ann", -time.Minute, true, "*")), "lobby", false, ErrUnauthorized},
		{"no exp", sign(t, jwt.SigningMethodHS256, secret, "", claims("ann", 0, true, "*")), "lobby", false, ErrUnauthorized},
		{"no sub", sign(t, jwt.SigningMethodHS256, secret, "", claims("", time.Hour, true, "*")), "lobby", false, ErrUnauthorized},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", claims("ann", time.Hour, true, "*")), "lobby", false, ErrUnauthorized},
		{"HS384 is not on the list", sign(t, jwt.SigningMethodHS384, secret, "", claims("ann", time.Hour, true, "*")), "lobby", false, ErrUnauthorized},
		{"star allows all, pub publishes", sign(t, jwt.SigningMethodHS256, secret, "", claims("ann", time.Hour, true, "*")), "anything", true, nil},
	} {
		c2, err := v.Check(c.token, c.room, c.publish)
		if !errors.Is(err, c.want) || (c.want == nil && c2.Subject != "ann") {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// An RS256 token is refused when only a secret is configured (no algorithm confusion).
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	if _, err := v.Verify(sign(t, jwt.SigningMethodRS256, rk, "", claims("ann", time.Hour, true, "*"))); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("RS256 with only an HS256 secret: %v", err)
	}
}

func pemOf(t *testing.T, pub any) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestRS256AndES256PublicKeys(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, c := range []struct {
		name   string
		method jwt.SigningMethod
		key    any
		pub    any
	}{{"RS256", jwt.SigningMethodRS256, rk, &rk.PublicKey}, {"ES256", jwt.SigningMethodES256, ek, &ek.PublicKey}} {
		v, err := NewVerifier(Config{PublicKeyPEM: pemOf(t, c.pub)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Check(sign(t, c.method, c.key, "", claims("bo", time.Hour, true, "r")), "r", true); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		// An HS256 token "signed" with the public key's bytes must not pass (the classic confusion).
		if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, pemOf(t, c.pub), "", claims("bo", time.Hour, true, "r"))); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("%s: HS256 signed with the public key passed: %v", c.name, err)
		}
	}
	if _, err := NewVerifier(Config{PublicKeyPEM: []byte("not pem")}); err == nil {
		t.Fatal("a file without PEM was taken as a key")
	}
}

func TestJWKSPicksTheKeyByKid(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := rsa.GenerateKey(rand.Reader, 2048)
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	set, _ := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "EC", "kid": "ec1", "crv": "P-256", "alg": "ES256", "use": "sig", "x": b64(k1.X.FillBytes(make([]byte, 32))), "y": b64(k1.Y.FillBytes(make([]byte, 32)))},
		{"kty": "RSA", "kid": "rsa1", "alg": "RS256", "use": "sig", "n": b64(k2.N.Bytes()), "e": b64(big.NewInt(int64(k2.E)).Bytes())},
	}})
	v, err := NewVerifier(Config{JWKS: set})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Check(sign(t, jwt.SigningMethodES256, k1, "ec1", claims("cy", time.Hour, false, "r")), "r", false); err != nil {
		t.Fatalf("ES256 by kid: %v", err)
	}
	if _, err := v.Check(sign(t, jwt.SigningMethodRS256, k2, "rsa1", claims("cy", time.Hour, false, "r")), "r", false); err != nil {
		t.Fatalf("RS256 by kid: %v", err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, other, "ec1", claims("cy", time.Hour, false, "r"))); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("a key not in the set passed: %v", err)
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, k1, "nope", claims("cy", time.Hour, false, "r"))); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("an unknown kid passed: %v", err)
	}
}

func TestMintAndFromRequest(t *testing.T) {
	tok, err := Mint(secret, "dee", []string{"a", "b*"}, true, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := NewVerifier(Config{HMACSecret: secret})
	c, err := v.Check(tok, "bx", true)
	if err != nil || c.Subject != "dee" {
		t.Fatalf("minted token: %v %+v", err, c)
	}
	r := httptest.NewRequest("GET", "/v1/rooms/a/ws?token="+tok, nil)
	if FromRequest(r) != tok {
		t.Fatal("token= not read")
	}
	r = httptest.NewRequest("GET", "/v1/rooms/a/ws", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	if FromRequest(r) != tok {
		t.Fatal("Authorization: Bearer not read")
	}
	var off *Verifier
	if c, err := off.Check("", "any", true); err != nil || !c.Pub {
		t.Fatalf("auth off: %v %+v", err, c)
	}
	if _, err := Mint(nil, "x", []string{"a"}, false, time.Minute); err == nil || !strings.Contains(err.Error(), "secret") {
		t.Fatalf("mint without a secret: %v", err)
	}
}

// FuzzVerify: no token, however malformed, panics the verifier or passes it.
func FuzzVerify(f *testing.F) {
	good, _ := Mint(secret, "ann", []string{"*"}, true, time.Hour)
	for _, s := range []string{good, "", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", good[:len(good)-3], strings.Replace(good, ".", "..", 1)} {
		f.Add(s)
	}
	v, _ := NewVerifier(Config{HMACSecret: secret})
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token)
		if err == nil && (c.Subject != "ann" || !c.Pub) {
			t.Fatalf("token %q verified as %+v", token, c)
		}
	})
}
