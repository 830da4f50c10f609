// Package peer makes and checks node-to-node calls (hand-off, release, the takeover question).
//
// When the cluster has a secret, every call is signed: an HMAC-SHA256, in the Roost-Signature
// header, of the method, the receiver's host:port, the path, a timestamp (milliseconds), a fresh
// random nonce, and the body's length and SHA-256. So the receiver checks a call from its
// headers alone, before it reads a byte of the body: a missing, forged or stale signature, one
// made for another receiver or path, or a nonce seen before (a replay) is refused at once, and
// only then is the body read — bounded by the signed length, within a deadline, and checked
// against the signed hash. During a rotation, more keys are accepted than the one signed with.
//
//	p := peer.New(key, acceptKeys, maxBody, tlsConfig)
//	out, err := p.Call(ctx, "http://10.0.0.2:9000", "/internal/v1/handoff", "application/x-gob", body)
//	mux.Handle("POST /internal/v1/handoff", p.Serve(selfHost, refused, handler)) // the receiver
package peer

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SignatureHeader carries a call's signature (see Sign for its form).
const SignatureHeader = "Roost-Signature"

// MaxClockSkew is how far a signature's timestamp may be from the receiver's clock.
const MaxClockSkew = time.Minute

// Defaults of what a receiver holds for calls being served.
const (
	// MaxInFlight is how many node-to-node calls one node serves at once; more get 503. Most
	// calls carry no body (release, takeover), so a slot costs a goroutine; bodies are bounded
	// by bytes on their own (4 × maxBody in flight).
	MaxInFlight = 256
	// ReadTimeout bounds reading one call's body, from the end of its headers.
	ReadTimeout = 10 * time.Second
	// MaxNonces bounds the nonces remembered to refuse replays (about 100 bytes each).
	MaxNonces = 1 << 16
)

// Errors a call is refused with.
var (
	// ErrBadSignature: the request is not signed with this cluster's secret, or not for this
	// receiver and path, or not recently.
	ErrBadSignature = errors.New("request not signed with this cluster's secret")
	// ErrReplay: the request's signature was seen before.
	ErrReplay = errors.New("request replayed: its signature was used before")
	// ErrTooLarge: the body is longer than the receiver takes.
	ErrTooLarge = errors.New("body too large")
	// ErrBusy: the receiver serves as many node-to-node calls as it takes at once.
	ErrBusy = errors.New("too many node-to-node calls in flight; try again shortly")
	// ErrBadBody: the body does not match its signed length and hash (so it is not signed).
	ErrBadBody = fmt.Errorf("%w: the body does not match it", ErrBadSignature)
	// ErrSlow: the body did not arrive within ReadTimeout.
	ErrSlow = errors.New("body not sent in time")
)

// Client calls peers and checks their calls.
type Client struct {
	key     []byte   // signs; nil runs unsigned
	accept  [][]byte // also accepted while the secret is rotated
	maxBody int64    // the largest body read, either way
	http    *http.Client

	seen     *nonces
	slots    chan struct{} // one per call being served
	mu       sync.Mutex    // guards budget
	budget   int64         // body bytes calls being served may still reserve
	readWait time.Duration
	now      func() time.Time
	tls      *tls.Config // a copy of the one calls use, for long-lived streams (see TLS)
}

// New makes a client that signs with key (nil: calls go unsigned and any call is accepted), also
// accepts signatures by the accept keys, and reads at most maxBody bytes of a body. tlsConfig
// configures calls to peers that serve TLS (nil: the system's roots). Calls signed before New
// are refused: a restarted node has forgotten the nonces it saw, so none from before may count.
func New(key []byte, accept [][]byte, maxBody int64, tlsConfig *tls.Config) *Client {
	c := &Client{key: key, accept: accept, maxBody: maxBody,
		http:  &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8, IdleConnTimeout: time.Minute, TLSClientConfig: tlsConfig}},
		slots: make(chan struct{}, MaxInFlight), budget: 4 * maxBody, readWait: ReadTimeout, now: time.Now}
	c.seen = newNonces(MaxNonces, c.now().UnixMilli())
	if tlsConfig != nil {
		c.tls = tlsConfig.Clone() // the transport changes its own (HTTP/2) while it runs
	}
	return c
}

// Key derives the key that signs node-to-node calls from the cluster secret; it differs from
// the gossip key so neither gives away the other.
func Key(secret string) []byte {
	sum := sha256.Sum256([]byte("roost peer key v1\x00" + secret))
	return sum[:]
}

// Close lets go of idle connections to peers.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Claim is what a call's signature binds.
type Claim struct {
	Method string
	Host   string // the receiver's host:port, as the caller dialed it (the Host header)
	URI    string // the path, and query if any
	Time   time.Time
	Nonce  string // fresh for every call; empty: Sign draws one
	Body   []byte
}

// Sign is the signature of a call: "v2.<unix ms>.<nonce>.<body length>.<body SHA-256>.<HMAC>",
// the HMAC-SHA256 with key of every field of c.
func Sign(key []byte, c Claim) string {
	if c.Nonce == "" {
		c.Nonce = NewNonce()
	}
	sum := sha256.Sum256(c.Body)
	s := sig{ms: c.Time.UnixMilli(), nonce: c.Nonce, length: int64(len(c.Body)), hash: hex.EncodeToString(sum[:])}
	s.mac = hex.EncodeToString(s.compute(key, c.Method, c.Host, c.URI))
	return s.String()
}

// NewNonce is a fresh random nonce.
func NewNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sig is a parsed signature header.
type sig struct {
	ms     int64
	nonce  string
	length int64
	hash   string // hex SHA-256 of the body
	mac    string // hex
}

func (s sig) String() string {
	return fmt.Sprintf("v2.%d.%s.%d.%s.%s", s.ms, s.nonce, s.length, s.hash, s.mac)
}

func (s sig) compute(key []byte, method, host, uri string) []byte {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "roost peer call v2\n%s\n%s\n%s\n%d\n%s\n%d\n%s", method, strings.ToLower(host), uri, s.ms, s.nonce, s.length, s.hash)
	return m.Sum(nil)
}

// parseSig reads a signature header; ok is false for anything not of Sign's form.
func parseSig(h string) (s sig, ok bool) {
	if len(h) > 256 {
		return s, false
	}
	f := strings.Split(h, ".")
	if len(f) != 6 || f[0] != "v2" {
		return s, false
	}
	var err1, err2 error
	s.ms, err1 = parseDecimal(f[1])
	s.length, err2 = parseDecimal(f[3])
	s.nonce, s.hash, s.mac = f[2], f[4], f[5]
	if err1 != nil || err2 != nil || len(s.nonce) < 16 || len(s.nonce) > 64 || !isHex(s.nonce) ||
		len(s.hash) != 64 || !isHex(s.hash) || len(s.mac) != 64 || !isHex(s.mac) {
		return sig{}, false
	}
	return s, true
}

// parseDecimal parses a non-negative decimal of at most 18 digits, with no sign or leading zero.
func parseDecimal(s string) (int64, error) {
	if s == "" || len(s) > 18 || (len(s) > 1 && s[0] == '0') || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errors.New("not a decimal")
	}
	return strconv.ParseInt(s, 10, 64)
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// check checks r's signature from its headers alone, for the receiver self (its host:port as
// peers dial it), and remembers its nonce. It reads nothing of the body.
func (c *Client) check(r *http.Request, self string) (sig, error) {
	s, ok := parseSig(r.Header.Get(SignatureHeader))
	if !ok {
		return s, ErrBadSignature
	}
	if s.length > c.maxBody {
		return s, ErrTooLarge
	}
	now := c.now()
	if d := now.Sub(time.UnixMilli(s.ms)); d > MaxClockSkew || d < -MaxClockSkew {
		return s, ErrBadSignature
	}
	if self == "" || !strings.EqualFold(r.Host, self) {
		return s, ErrBadSignature // made for another receiver: never valid here
	}
	got, err := hex.DecodeString(s.mac)
	if err != nil {
		return s, ErrBadSignature
	}
	valid := false
	for _, key := range append([][]byte{c.key}, c.accept...) {
		if hmac.Equal(s.compute(key, r.Method, r.Host, r.URL.RequestURI()), got) {
			valid = true
			break
		}
	}
	if !valid {
		return s, ErrBadSignature
	}
	if r.ContentLength >= 0 && r.ContentLength != s.length {
		return s, ErrBadBody
	}
	if !c.seen.add(s.nonce, s.ms, now.Add(-MaxClockSkew).UnixMilli()) {
		return s, ErrReplay
	}
	return s, nil
}

// read reads the body of a call whose signature holds: exactly its signed length, matching its
// signed hash. Unsigned (no key), it reads at most maxBody bytes.
func (c *Client) read(r *http.Request, s sig) ([]byte, error) {
	if len(c.key) == 0 {
		if r.ContentLength > c.maxBody {
			return nil, ErrTooLarge
		}
		b, err := ReadLimited(r.Body, c.maxBody)
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return nil, ErrSlow
		}
		if err != nil && strings.Contains(err.Error(), "longer than") {
			return nil, ErrTooLarge
		}
		return b, err
	}
	// Grown as the bytes arrive, so a call that announces a body and stalls pins little.
	var buf bytes.Buffer
	buf.Grow(int(min(s.length, 64<<10)))
	if _, err := io.CopyN(&buf, r.Body, s.length); err != nil {
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return nil, ErrSlow
		}
		return nil, ErrBadBody
	}
	if n, _ := r.Body.Read(make([]byte, 1)); n > 0 {
		return nil, ErrBadBody
	}
	body := buf.Bytes()
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != s.hash {
		return nil, ErrBadBody
	}
	return body, nil
}

// Verify checks a peer's request for the receiver self (its host:port as peers dial it) from its
// headers, then reads its body. Serve does so within bounds; Verify alone bounds only the size.
func (c *Client) Verify(r *http.Request, self string) ([]byte, error) {
	var s sig
	if len(c.key) > 0 {
		var err error
		if s, err = c.check(r, self); err != nil {
			return nil, err
		}
	}
	return c.read(r, s)
}

// reserve takes a slot and n bytes of the body budget for a call being served; release gives
// them back. It fails with ErrBusy past either.
func (c *Client) reserve(n int64) (release func(), err error) {
	select {
	case c.slots <- struct{}{}:
	default:
		return nil, ErrBusy
	}
	c.mu.Lock()
	if n > c.budget {
		c.mu.Unlock()
		<-c.slots
		return nil, ErrBusy
	}
	c.budget -= n
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.budget += n
		c.mu.Unlock()
		<-c.slots
	}, nil
}

// Serve serves node-to-node calls with h, given the verified body. In order: the signature is
// checked from the headers (refused: 401 before a byte of the body is read); a slot and the
// body's bytes are reserved (at most MaxInFlight calls and 4 × maxBody bytes at once; past
// either: 503); the body is read within ReadTimeout and checked against its signed length and
// hash. self is the receiver's host:port as peers dial it; refused is told the reason of every
// refusal: peer_auth (unsigned, forged, stale, for another receiver, or a body not as signed),
// peer_replay, peer_busy, peer_too_large, peer_slow, peer_bad_body (unreadable, unsigned only).
func (c *Client) Serve(self func() string, refused func(reason string), h func(w http.ResponseWriter, r *http.Request, body []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var s sig
		var err error
		want := c.maxBody // unsigned: the most it may read
		if len(c.key) > 0 {
			if s, err = c.check(r, self()); err != nil {
				c.refuse(w, refused, err)
				return
			}
			want = s.length
		} else if r.ContentLength >= 0 {
			want = min(r.ContentLength, c.maxBody)
		}
		release, err := c.reserve(want)
		if err != nil {
			c.refuse(w, refused, err)
			return
		}
		defer release()
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(c.now().Add(c.readWait))
		body, err := c.read(r, s)
		if err != nil {
			c.refuse(w, refused, err)
			return
		}
		_ = rc.SetReadDeadline(time.Time{})
		h(w, r, body)
	}
}

// refuse answers a refused call with the error JSON the API uses everywhere.
func (c *Client) refuse(w http.ResponseWriter, refused func(string), err error) {
	status, code, reason := http.StatusUnauthorized, "unauthorized", "peer_auth"
	switch {
	case errors.Is(err, ErrReplay):
		reason = "peer_replay"
	case errors.Is(err, ErrBusy):
		status, code, reason = http.StatusServiceUnavailable, "not_ready", "peer_busy"
		w.Header().Set("Retry-After", "1")
	case errors.Is(err, ErrTooLarge):
		status, code, reason = http.StatusRequestEntityTooLarge, "too_large", "peer_too_large"
	case errors.Is(err, ErrSlow):
		status, code, reason = http.StatusRequestTimeout, "bad_request", "peer_slow"
	case !errors.Is(err, ErrBadSignature):
		status, code, reason = http.StatusBadRequest, "bad_request", "peer_bad_body"
	}
	if refused != nil {
		refused(reason)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Connection", "close") // the body is left unread: do not wait for it
	w.WriteHeader(status)
	fmt.Fprintf(w, "{\"error\":%q,\"code\":%q}\n", err.Error(), code)
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
		req.Header.Set(SignatureHeader, Sign(c.key, Claim{Method: http.MethodPost, Host: req.URL.Host,
			URI: req.URL.RequestURI(), Time: c.now(), Body: body}))
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

// Stream is the signature header of a long-lived call (a WebSocket a peer keeps open, without a
// body) to uri at host, for the receiver to check with CheckStream. Empty when calls go unsigned.
func (c *Client) Stream(host, uri string) http.Header {
	h := http.Header{}
	if len(c.key) > 0 {
		h.Set(SignatureHeader, Sign(c.key, Claim{Method: http.MethodGet, Host: host, URI: uri, Time: c.now()}))
	}
	return h
}

// CheckStream checks the signature of a long-lived call from its headers, for the receiver self;
// such a call has no body, and takes no slot of Serve's (it is bounded by the peers there are).
func (c *Client) CheckStream(r *http.Request, self string) error {
	if len(c.key) == 0 {
		return nil
	}
	s, err := c.check(r, self)
	if err == nil && s.length != 0 {
		err = ErrBadBody
	}
	return err
}

// TLS is the configuration for streams to peers that serve TLS: the one calls use, as New got it.
func (c *Client) TLS() *tls.Config {
	if c.tls == nil {
		return nil
	}
	return c.tls.Clone()
}
