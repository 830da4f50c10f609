package router

import (
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/roost-dev/roost/limit"
)

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
