package router

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/protocol"
)

// dialStatus dials through the router with header h and returns the refusal's status and JSON
// error, or 101 and an open connection.
func dialStatus(t *testing.T, f *fixture, room string, h http.Header) (int, protocol.Error, *websocket.Conn) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+f.addr+"/v1/rooms/"+room+"/ws", h)
	if err == nil {
		t.Cleanup(func() { c.Close() })
		return http.StatusSwitchingProtocols, protocol.Error{}, c
	}
	if resp == nil {
		t.Fatal(err)
	}
	var e protocol.Error
	b, _ := io.ReadAll(resp.Body)
	if json.Unmarshal(b, &e) != nil {
		t.Fatalf("refusal %d is not JSON: %q", resp.StatusCode, b)
	}
	return resp.StatusCode, e, nil
}

func TestRouterConnectionsPerAddress(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxAddrConns = 2
	f := start(t, cfg)
	for range 2 {
		if st, e, _ := dialStatus(t, f, "lobby", nil); st != 101 {
			t.Fatalf("within the limit: %d %+v", st, e)
		}
	}
	// A client cannot step around the limit by naming another address: the router trusts no hop.
	st, e, _ := dialStatus(t, f, "lobby", http.Header{"X-Forwarded-For": {"198.51.100.1"}})
	if st != http.StatusTooManyRequests || e.Code != protocol.CodeLimit {
		t.Fatalf("a 3rd connection from one address: %d %+v, want 429 %s", st, e, protocol.CodeLimit)
	}
}

func TestRouterOrigins(t *testing.T) {
	cfg := DefaultConfig()
	var err error
	if cfg.Origins, err = auth.ParseOrigins([]string{"https://app.example.com"}); err != nil {
		t.Fatal(err)
	}
	f := start(t, cfg)
	st, e, _ := dialStatus(t, f, "lobby", http.Header{"Origin": {"https://evil.example"}})
	if st != http.StatusForbidden || e.Code != protocol.CodeOrigin {
		t.Fatalf("a foreign origin: %d %+v, want 403 %s", st, e, protocol.CodeOrigin)
	}
	if st, e, _ := dialStatus(t, f, "lobby", http.Header{"Origin": {"https://app.example.com"}}); st != 101 {
		t.Fatalf("the allowed origin: %d %+v", st, e)
	}
	if st, e, _ := dialStatus(t, f, "lobby", nil); st != 101 {
		t.Fatalf("a client without Origin (not a browser): %d %+v", st, e)
	}
}

// TestUpstreamForwardedFor: the owner is told the client's address chain only as far as trusted
// hops wrote it.
func TestUpstreamForwardedFor(t *testing.T) {
	rt := &Router{door: &limit.Door{Hops: hopsFor("10.1.0.0/16")}}
	for _, c := range []struct{ remote, xff, want string }{
		{"203.0.113.5:4000", "", "203.0.113.5"},
		{"203.0.113.5:4000", "1.2.3.4", "203.0.113.5"},            // spoofed by the client: dropped
		{"10.1.0.9:4000", "203.0.113.5", "203.0.113.5, 10.1.0.9"}, // from the load balancer: kept
	} {
		r := httptest.NewRequest("GET", "/v1/rooms/x/ws", nil)
		r.RemoteAddr = c.remote
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		r.Header.Set("Authorization", "Bearer t")
		h := rt.upstreamHeader(r)
		if got := h.Get("X-Forwarded-For"); got != c.want {
			t.Errorf("from %s with %q: X-Forwarded-For %q, want %q", c.remote, c.xff, got, c.want)
		}
		if h.Get("Authorization") != "Bearer t" {
			t.Error("credentials not passed on")
		}
	}
}

func hopsFor(prefixes ...string) (h limit.Hops) {
	for _, p := range prefixes {
		h.Prefixes = append(h.Prefixes, netip.MustParsePrefix(p))
	}
	return h
}
