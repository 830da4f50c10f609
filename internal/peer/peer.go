// Package peer makes and checks node-to-node calls (hand-off, release, the takeover question).
//
// When the cluster has a secret, every call is signed: an HMAC-SHA256 of the method, path, a
// timestamp and the body's hash, in the Roost-Signature header. A request with a missing, wrong
// or stale signature is refused. During a rotation, more keys are accepted than the one signed with.
//
//	p := peer.New(key, acceptKeys, maxBody, tlsConfig)
//	out, err := p.Call(ctx, "http://10.0.0.2:9000", "/internal/v1/handoff", "application/x-gob", body)
//	body, err := p.Verify(r) // in the receiving handler
package peer

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader carries a call's signature: "<unix seconds>.<hex HMAC>".
const SignatureHeader = "Roost-Signature"

// MaxClockSkew is how far a signature's timestamp may be from the receiver's clock.
const MaxClockSkew = time.Minute

// ErrBadSignature: the request is not signed with this cluster's secret.
var ErrBadSignature = errors.New("request not signed with this cluster's secret")

// Client calls peers and checks their calls.
type Client struct {
	key     []byte   // signs; nil runs unsigned
	accept  [][]byte // also accepted while the secret is rotated
	maxBody int64    // the largest body read, either way
	http    *http.Client
}

// New makes a client that signs with key (nil: calls go unsigned and any call is accepted), also
// accepts signatures by the accept keys, and reads at most maxBody bytes of a body. tlsConfig
// configures calls to peers that serve TLS (nil: the system's roots).
func New(key []byte, accept [][]byte, maxBody int64, tlsConfig *tls.Config) *Client {
	return &Client{key: key, accept: accept, maxBody: maxBody,
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8, IdleConnTimeout: time.Minute, TLSClientConfig: tlsConfig}}}
}

// Key derives the key that signs node-to-node calls from the cluster secret; it differs from
// the gossip key so neither gives away the other.
func Key(secret string) []byte {
	sum := sha256.Sum256([]byte("roost peer key v1\x00" + secret))
	return sum[:]
}

// Close lets go of idle connections to peers.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Sign is the signature of a call made at unix time ts.
func Sign(key []byte, method, path string, ts int64, body []byte) string {
	sum := sha256.Sum256(body)
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s\n%s\n%d\n%x", method, path, ts, sum)
	return strconv.FormatInt(ts, 10) + "." + hex.EncodeToString(m.Sum(nil))
}

// Verify reads the body of a peer's request and checks its signature.
func (c *Client) Verify(r *http.Request) ([]byte, error) {
	body, err := ReadLimited(r.Body, c.maxBody)
	if err != nil {
		return nil, err
	}
	if len(c.key) == 0 {
		return body, nil
	}
	ts, _, ok := strings.Cut(r.Header.Get(SignatureHeader), ".")
	t, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || time.Since(time.Unix(t, 0)).Abs() > MaxClockSkew {
		return nil, ErrBadSignature
	}
	got := []byte(r.Header.Get(SignatureHeader))
	for _, key := range append([][]byte{c.key}, c.accept...) {
		if hmac.Equal([]byte(Sign(key, r.Method, r.URL.Path, t, body)), got) {
			return body, nil
		}
	}
	return nil, ErrBadSignature
}

// Call POSTs body to a peer's path, signed, and returns the answer's body; an answer other than
// 200 is an error that quotes it.
func (c *Client) Call(ctx context.Context, base, path, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	if len(c.key) > 0 {
		req.Header.Set(SignatureHeader, Sign(c.key, http.MethodPost, path, time.Now().Unix(), body))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := ReadLimited(resp.Body, c.maxBody)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s%s: %s: %s", base, path, resp.Status, bytes.TrimSpace(out))
	}
	return out, nil
}

// ReadLimited reads all of r, or fails if it is longer than limit.
func ReadLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err == nil && int64(len(b)) > limit {
		return nil, fmt.Errorf("body longer than %d bytes", limit)
	}
	return b, err
}
