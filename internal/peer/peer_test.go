package peer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const self = "10.0.0.1:9000"

// request is a call to self's path carrying body and signature.
func request(path, body, signature string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "http://"+self+path, strings.NewReader(body))
	if signature != "" {
		r.Header.Set(SignatureHeader, signature)
	}
	return r
}

func TestVerify(t *testing.T) {
	key, old := []byte("current secret"), []byte("previous secret")
	p := New(key, [][]byte{old}, 64, nil)
	now := time.Now()
	claim := func(key []byte, mutate func(*Claim)) string {
		c := Claim{Method: "POST", Host: self, URI: "/internal/v1/handoff", Time: now, Body: []byte("state")}
		if mutate != nil {
			mutate(&c)
		}
		return Sign(key, c)
	}
	for _, tc := range []struct {
		name, sig string
		want      error
	}{
		{"signed with the key", claim(key, nil), nil},
		{"signed with an accepted key", claim(old, nil), nil},
		{"unsigned", "", ErrBadSignature},
		{"v1 form", "1700000000.deadbeef", ErrBadSignature},
		{"another secret", claim([]byte("x"), nil), ErrBadSignature},
		{"another body", claim(key, func(c *Claim) { c.Body = []byte("other") }), ErrBadSignature},
		{"another body of the same length", claim(key, func(c *Claim) { c.Body = []byte("stat!") }), ErrBadSignature},
		{"another path", claim(key, func(c *Claim) { c.URI = "/internal/v1/rooms/a/release" }), ErrBadSignature},
		{"another receiver", claim(key, func(c *Claim) { c.Host = "10.0.0.2:9000" }), ErrBadSignature},
		{"another method", claim(key, func(c *Claim) { c.Method = "PUT" }), ErrBadSignature},
		{"too old", claim(key, func(c *Claim) { c.Time = now.Add(-2 * MaxClockSkew) }), ErrBadSignature},
		{"too far ahead", claim(key, func(c *Claim) { c.Time = now.Add(2 * MaxClockSkew) }), ErrBadSignature},
		{"before the receiver started", claim(key, func(c *Claim) { c.Time = now.Add(-time.Second) }), ErrReplay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := p.Verify(request("/internal/v1/handoff", "state", tc.sig), self)
			if tc.want == nil && (err != nil || string(body) != "state") {
				t.Fatalf("Verify = %q, %v; want the body", body, err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %q, %v; want %v", body, err, tc.want)
			}
		})
	}
	t.Run("a replay", func(t *testing.T) {
		sig := claim(key, nil)
		if _, err := p.Verify(request("/internal/v1/handoff", "state", sig), self); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Verify(request("/internal/v1/handoff", "state", sig), self); !errors.Is(err, ErrReplay) {
			t.Fatalf("the same call again: %v, want ErrReplay", err)
		}
	})
	t.Run("signed length over the bound", func(t *testing.T) {
		big := strings.Repeat("x", 65)
		sig := Sign(key, Claim{Method: "POST", Host: self, URI: "/internal/v1/handoff", Time: now, Body: []byte(big)})
		if _, err := p.Verify(request("/internal/v1/handoff", big, sig), self); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Verify = %v, want ErrTooLarge", err)
		}
	})
	t.Run("unsigned receiver bounds the body", func(t *testing.T) {
		open := New(nil, nil, 64, nil)
		if _, err := open.Verify(request("/x", strings.Repeat("x", 65), ""), self); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Verify = %v, want ErrTooLarge", err)
		}
	})
}

// unread is a body that fails the test when read: the signature must be refused first.
type unread struct{ t *testing.T }

func (u unread) Read([]byte) (int, error) {
	u.t.Error("the body was read before the signature was checked")
	return 0, io.EOF
}

func TestRefusedBeforeTheBodyIsRead(t *testing.T) {
	p := New([]byte("k"), nil, 1<<30, nil)
	for _, sig := range []string{"", "v2.1.2.3.4.5", Sign([]byte("other"), Claim{Method: "POST", Host: self, URI: "/x", Time: time.Now(), Body: []byte("b")})} {
		r := httptest.NewRequest(http.MethodPost, "http://"+self+"/x", unread{t})
		r.Header.Set(SignatureHeader, sig)
		w := httptest.NewRecorder()
		p.Serve(func() string { return self }, nil, func(http.ResponseWriter, *http.Request, []byte) { t.Error("served") })(w, r)
		if w.Code != http.StatusUnauthorized {
			t.Errorf("signature %q: %d, want 401", sig, w.Code)
		}
	}
}

func TestBodyMustMatchItsSignature(t *testing.T) {
	key := []byte("k")
	p := New(key, nil, 1<<10, nil)
	serve := p.Serve(func() string { return self }, nil, func(w http.ResponseWriter, _ *http.Request, b []byte) { w.Write(b) })
	sig := func(body string) string {
		return Sign(key, Claim{Method: "POST", Host: self, URI: "/x", Time: time.Now(), Body: []byte(body)})
	}
	for _, tc := range []struct {
		name, signed, sent string
		want               int
	}{
		{"as signed", "hello", "hello", 200},
		{"shorter", "hello", "hell", 401},
		{"longer", "hello", "hello!", 401},
		{"same length, other bytes", "hello", "jello", 401},
	} {
		r := httptest.NewRequest(http.MethodPost, "http://"+self+"/x", io.MultiReader(strings.NewReader(tc.sent))) // no Content-Length
		r.ContentLength = -1
		r.Header.Set(SignatureHeader, sig(tc.signed))
		w := httptest.NewRecorder()
		serve(w, r)
		if w.Code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, w.Code, w.Body, tc.want)
		}
	}
}

func TestServeBoundsCallsInFlight(t *testing.T) {
	key := []byte("k")
	p := New(key, nil, 1<<20, nil)
	var reasons sync.Map
	release := make(chan struct{})
	var served atomic.Int32
	h := p.Serve(func() string { return self }, func(r string) { reasons.Store(r, true) }, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		served.Add(1)
		<-release
	})
	call := func() *httptest.ResponseRecorder {
		r := request("/x", "", Sign(key, Claim{Method: "POST", Host: self, URI: "/x", Time: time.Now()}))
		w := httptest.NewRecorder()
		h(w, r)
		return w
	}
	var wg sync.WaitGroup
	for range MaxInFlight {
		wg.Go(func() { call() })
	}
	for served.Load() < MaxInFlight {
		time.Sleep(time.Millisecond)
	}
	if w := call(); w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("call %d in flight: %d, want 503 with Retry-After", MaxInFlight+1, w.Code)
	}
	if _, ok := reasons.Load("peer_busy"); !ok {
		t.Fatal("the refusal was not counted as peer_busy")
	}
	close(release)
	wg.Wait()
	if w := call(); w.Code != http.StatusOK {
		t.Fatalf("after the others ended: %d, want 200", w.Code)
	}
}

func TestServeBoundsBodyBytesInFlight(t *testing.T) {
	key := []byte("k")
	p := New(key, nil, 1000, nil) // 4000 bytes of bodies at once
	gate := make(chan struct{})
	h := p.Serve(func() string { return self }, nil, func(http.ResponseWriter, *http.Request, []byte) { <-gate })
	body := strings.Repeat("x", 1000)
	var wg sync.WaitGroup
	started := make(chan struct{}, 4)
	for range 4 {
		wg.Go(func() {
			r := request("/x", body, Sign(key, Claim{Method: "POST", Host: self, URI: "/x", Time: time.Now(), Body: []byte(body)}))
			started <- struct{}{}
			h(httptest.NewRecorder(), r)
		})
	}
	for range 4 {
		<-started
	}
	time.Sleep(50 * time.Millisecond)
	r := request("/x", body, Sign(key, Claim{Method: "POST", Host: self, URI: "/x", Time: time.Now(), Body: []byte(body)}))
	w := httptest.NewRecorder()
	h(w, r)
	close(gate)
	wg.Wait()
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("a fifth body of 1000 bytes: %d, want 503", w.Code)
	}
}

// slowBody sends its bytes one by one, slowly.
type slowBody struct{ n int }

func (s *slowBody) Read(b []byte) (int, error) {
	if s.n == 0 {
		return 0, io.EOF
	}
	time.Sleep(20 * time.Millisecond)
	s.n--
	b[0] = 'x'
	return 1, nil
}

func TestServeBoundsReadTime(t *testing.T) {
	key := []byte("k")
	p := New(key, nil, 1<<20, nil)
	p.readWait = 200 * time.Millisecond
	var self string
	ts := httptest.NewServer(p.Serve(func() string { return self }, nil, func(w http.ResponseWriter, _ *http.Request, b []byte) {
		fmt.Fprintf(w, "%d", len(b))
	}))
	defer ts.Close()
	self = strings.TrimPrefix(ts.URL, "http://")
	body := bytes.Repeat([]byte("x"), 100)
	req, _ := http.NewRequest("POST", ts.URL+"/x", &slowBody{n: 100}) // 2 s of trickle
	req.ContentLength = 100
	req.Header.Set(SignatureHeader, Sign(key, Claim{Method: "POST", Host: self, URI: "/x", Time: time.Now(), Body: body}))
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("a body trickled for 2 s was served")
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a trickled body held the call %s; the read deadline is 200ms", d)
	}
}

func TestCallIsVerified(t *testing.T) {
	key := []byte("secret")
	srv := New(key, nil, 1<<10, nil)
	var self string
	ts := httptest.NewServer(srv.Serve(func() string { return self }, nil, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Write(append([]byte("got "), body...))
	}))
	defer ts.Close()
	self = strings.TrimPrefix(ts.URL, "http://")
	for _, tc := range []struct {
		name string
		key  []byte
		ok   bool
	}{{"same secret", key, true}, {"other secret", []byte("other"), false}, {"no secret", nil, false}} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(tc.key, nil, 1<<10, nil)
			defer c.Close()
			for range 3 { // each call is signed afresh: none is a replay of the last
				out, err := c.Call(t.Context(), ts.URL, "/internal/v1/x", "text/plain", []byte("hi"))
				if tc.ok && (err != nil || string(out) != "got hi") {
					t.Fatalf("Call = %q, %v", out, err)
				}
				if !tc.ok && (err == nil || !strings.Contains(err.Error(), "401")) {
					t.Fatalf("Call = %q, %v; want a 401 error", out, err)
				}
			}
		})
	}
}

func TestNoncesStayBounded(t *testing.T) {
	n := newNonces(100, 0)
	for i := range 1000 {
		if !n.add(fmt.Sprint(i), int64(1000+i), 0) {
			t.Fatalf("nonce %d refused", i)
		}
	}
	if n.len() > 100 {
		t.Fatalf("%d nonces remembered, bound 100", n.len())
	}
	// Forgotten early, the oldest are refused by the floor, never accepted again.
	for i := range 1000 {
		if n.add(fmt.Sprint(i), int64(1000+i), 0) {
			t.Fatalf("nonce %d accepted twice", i)
		}
	}
	// Out of the window, nonces are let go.
	n.add("late", 5000, 4000)
	if n.len() != 1 {
		t.Fatalf("%d nonces remembered once all but one left the window", n.len())
	}
}
