package peer

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	key, old := []byte("current secret"), []byte("previous secret")
	p := New(key, [][]byte{old}, 64, nil)
	now := time.Now().Unix()
	for _, tc := range []struct {
		name, sig, body string
		ok              bool
	}{
		{"signed with the key", Sign(key, "POST", "/internal/v1/handoff", now, []byte("state")), "state", true},
		{"signed with an accepted key", Sign(old, "POST", "/internal/v1/handoff", now, []byte("state")), "state", true},
		{"unsigned", "", "state", false},
		{"another secret", Sign([]byte("x"), "POST", "/internal/v1/handoff", now, []byte("state")), "state", false},
		{"another body", Sign(key, "POST", "/internal/v1/handoff", now, []byte("other")), "state", false},
		{"another path", Sign(key, "POST", "/internal/v1/rooms/a/release", now, []byte("state")), "state", false},
		{"too old", Sign(key, "POST", "/internal/v1/handoff", now-int64(2*MaxClockSkew/time.Second), []byte("state")), "state", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/internal/v1/handoff", strings.NewReader(tc.body))
			r.Header.Set(SignatureHeader, tc.sig)
			body, err := p.Verify(r)
			if tc.ok && (err != nil || string(body) != tc.body) {
				t.Fatalf("Verify = %q, %v; want the body", body, err)
			}
			if !tc.ok && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("Verify = %q, %v; want ErrBadSignature", body, err)
			}
		})
	}
	t.Run("body over the bound", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, "/internal/v1/handoff", strings.NewReader(strings.Repeat("x", 65)))
		if _, err := p.Verify(r); err == nil {
			t.Fatal("Verify read a body longer than its bound")
		}
	})
}

func TestCallIsVerified(t *testing.T) {
	key := []byte("secret")
	srv := New(key, nil, 1<<10, nil)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := srv.Verify(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		w.Write(append([]byte("got "), body...))
	}))
	defer ts.Close()
	for _, tc := range []struct {
		name string
		key  []byte
		ok   bool
	}{{"same secret", key, true}, {"other secret", []byte("other"), false}, {"no secret", nil, false}} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(tc.key, nil, 1<<10, nil)
			defer c.Close()
			out, err := c.Call(t.Context(), ts.URL, "/internal/v1/x", "text/plain", []byte("hi"))
			if tc.ok && (err != nil || string(out) != "got hi") {
				t.Fatalf("Call = %q, %v", out, err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "401")) {
				t.Fatalf("Call = %q, %v; want a 401 error", out, err)
			}
		})
	}
}
