package limit

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

// TestPerAddrKeysIPv6On64: every address of one IPv6 /64 shares one count (a host picks any of
// them at will), other /64s and IPv4 addresses have their own, and an IPv4-mapped address is
// its IPv4 address.
func TestPerAddrKeysIPv6On64(t *testing.T) {
	p := NewPerAddr(2)
	same := []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2:abcd::7%eth0"}
	if !p.Acquire(netip.MustParseAddr(same[0])) || !p.Acquire(netip.MustParseAddr(same[1])) {
		t.Fatal("the first two connections of a /64 were refused")
	}
	if p.Acquire(netip.MustParseAddr(same[2])) {
		t.Fatal("a third address of the same /64 was let in past the limit of 2")
	}
	for _, other := range []string{"2001:db8:1:3::1", "2001:db9:1:2::1", "192.0.2.1"} {
		if !p.Acquire(netip.MustParseAddr(other)) {
			t.Errorf("%s (another network) was refused", other)
		}
	}
	if !p.Acquire(netip.MustParseAddr("::ffff:192.0.2.1")) || p.Acquire(netip.MustParseAddr("192.0.2.1")) {
		t.Error("an IPv4-mapped address does not count as its IPv4 address")
	}
	// Releasing under any address of the /64 frees its place.
	p.Release(netip.MustParseAddr("2001:db8:1:2::99"))
	if !p.Acquire(netip.MustParseAddr(same[2])) {
		t.Error("a place released in the /64 was not freed")
	}
	for in, want := range map[string]string{
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::",
		"fe80::1%eth0":         "fe80::",
		"::ffff:10.1.2.3":      "10.1.2.3",
		"10.1.2.3":             "10.1.2.3",
	} {
		if got := Key(netip.MustParseAddr(in)); got != netip.MustParseAddr(want) {
			t.Errorf("Key(%s) = %s, want %s", in, got, want)
		}
	}
	if got := Key(netip.Addr{}); got.IsValid() {
		t.Errorf("Key of the invalid address = %s, want it invalid", got)
	}
}

// TestRate: each address (by Key) has its burst, then its rate; full buckets are forgotten.
func TestRate(t *testing.T) {
	r := NewRate(10, 5)
	a, b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2") // one /64
	for i := range 5 {
		if !r.Allow([]netip.Addr{a, b}[i%2]) {
			t.Fatalf("take %d of a burst of 5 refused", i+1)
		}
	}
	if r.Allow(b) {
		t.Fatal("a 6th take within the burst's instant was allowed")
	}
	if !r.Allow(netip.MustParseAddr("2001:db8:0:1::1")) || !r.Allow(netip.MustParseAddr("192.0.2.1")) {
		t.Fatal("other addresses share the /64's bucket")
	}
	time.Sleep(150 * time.Millisecond) // 1.5 tokens at 10/s
	if !r.Allow(a) {
		t.Fatal("the rate did not refill")
	}
	if NewRate(0, 5) != nil || !(*Rate)(nil).Allow(a) {
		t.Fatal("a rate of 0 must be no bound")
	}
	// Buckets that refilled are forgotten on the next sweep.
	r2 := NewRate(1000, 1)
	for i := range 100 {
		r2.Allow(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
	}
	time.Sleep(sweepEvery + 10*time.Millisecond)
	r2.Allow(netip.MustParseAddr("203.0.113.1"))
	if n := r2.Len(); n != 1 {
		t.Fatalf("%d buckets after a sweep, want only the one just used", n)
	}
}

// TestHopsBelieveOnlyTrusted: X-Forwarded-For counts from a peer Member says is trusted (for a
// node: a router's address), not from anyone else, a node's address included.
func TestHopsBelieveOnlyTrusted(t *testing.T) {
	router, node := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.1")
	h := Hops{Member: func(a netip.Addr) bool { return a == router }}
	for _, c := range []struct {
		peer netip.Addr
		want string
	}{{router, "203.0.113.9"}, {node, "10.0.0.1"}} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = netip.AddrPortFrom(c.peer, 40000).String()
		r.Header.Set("X-Forwarded-For", "203.0.113.9")
		if got := h.Client(r); got.String() != c.want {
			t.Errorf("from %s: client %s, want %s", c.peer, got, c.want)
		}
	}
}
