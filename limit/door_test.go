package limit

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
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

// TestDoorBoundsHandshakes: past the handshakes in progress, a client is refused with 503
// overloaded and a Retry-After before anything else is spent on it; a finished handshake gives
// its place back, and a refused one takes none (of the handshakes or of its address's count).
func TestDoorBoundsHandshakes(t *testing.T) {
	d := &Door{PerAddr: NewPerAddr(10), Handshakes: NewInFlight(2)}
	admit := func() (*httptest.ResponseRecorder, func(), func(), string) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/v1/rooms/a/ws", nil)
		r.RemoteAddr = "192.0.2.7:4000"
		done, release, refused := d.Admit(w, r)
		return w, done, release, refused
	}
	_, done1, release1, _ := admit()
	_, done2, release2, _ := admit()
	w, _, _, refused := admit()
	if refused != "handshakes" || w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" ||
		!strings.Contains(w.Body.String(), `"code":"`+CodeOverloaded+`"`) {
		t.Fatalf("a third handshake with 2 in progress: %q %d %v %s, want handshakes 503 overloaded with Retry-After",
			refused, w.Code, w.Header(), w.Body)
	}
	if got := d.Handshakes.Len(); got != 2 {
		t.Fatalf("%d handshakes counted in progress, want 2 (the refused one takes no place)", got)
	}
	done1()
	_, done3, release3, refused := admit()
	if refused != "" {
		t.Fatalf("a handshake after one finished was refused: %q", refused)
	}
	done2()
	done3()
	if got := d.Handshakes.Len(); got != 0 {
		t.Fatalf("%d handshakes in progress after all finished, want 0", got)
	}
	// The connections are still open: they keep their places in the address's count (10), and
	// the refused one took none: 7 more fit, the 8th does not.
	for i := range 8 {
		w, done, _, refused := admit()
		if i < 7 && refused != "" || i == 7 && (refused != "addr_conns" || w.Code != http.StatusTooManyRequests) {
			t.Fatalf("connection %d of the address: refused %q (%d)", 4+i, refused, w.Code)
		}
		if done != nil {
			done()
		}
	}
	release1()
	release2()
	release3()
	if NewInFlight(0) != nil || !NewInFlight(0).Acquire() {
		t.Error("an InFlight of 0 bounds something")
	}
}
