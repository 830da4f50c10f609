package limit

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestPerAddr(t *testing.T) {
	p := NewPerAddr(2)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	if !p.Acquire(a) || !p.Acquire(a) {
		t.Fatal("the first two connections were refused")
	}
	if p.Acquire(a) {
		t.Fatal("a third connection from one address was let in")
	}
	if !p.Acquire(b) {
		t.Fatal("another address was refused")
	}
	p.Release(a)
	if !p.Acquire(a) {
		t.Fatal("a connection after a release was refused")
	}
	p.Release(a)
	p.Release(a)
	p.Release(b)
	if len(p.n) != 0 {
		t.Fatalf("counts left after every release: %v", p.n)
	}
}

func TestHopsClient(t *testing.T) {
	lb := netip.MustParsePrefix("10.1.0.0/16")
	router := netip.MustParseAddr("10.2.0.7")
	h := Hops{Prefixes: []netip.Prefix{lb}, Member: func(a netip.Addr) bool { return a == router }}
	for _, c := range []struct {
		name, remote, xff, want, forward string
	}{
		{"direct, no header", "203.0.113.5:4000", "", "203.0.113.5", "203.0.113.5"},
		{"direct client lying in the header", "203.0.113.5:4000", "1.2.3.4", "203.0.113.5", "203.0.113.5"},
		{"through the load balancer", "10.1.0.3:4000", "203.0.113.5", "203.0.113.5", "203.0.113.5, 10.1.0.3"},
		{"client lies, the balancer appends", "10.1.0.3:4000", "1.2.3.4, 203.0.113.5", "203.0.113.5", "1.2.3.4, 203.0.113.5, 10.1.0.3"},
		{"balancer then router", "10.2.0.7:5000", "203.0.113.5, 10.1.0.3", "203.0.113.5", "203.0.113.5, 10.1.0.3, 10.2.0.7"},
		{"ipv6 client", "10.2.0.7:5000", "2001:db8::1", "2001:db8::1", "2001:db8::1, 10.2.0.7"},
		{"garbage in the chain stops at the hop", "10.1.0.3:4000", "203.0.113.5, not-an-ip", "10.1.0.3", "203.0.113.5, not-an-ip, 10.1.0.3"},
		{"all trusted", "10.2.0.7:5000", "10.1.0.3", "10.1.0.3", "10.1.0.3, 10.2.0.7"},
		{"mapped ipv4 peer", "[::ffff:203.0.113.5]:4000", "", "203.0.113.5", "203.0.113.5"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = c.remote
			if c.xff != "" {
				r.Header.Set("X-Forwarded-For", c.xff)
			}
			if got := h.Client(r); got.String() != c.want {
				t.Errorf("Client = %s, want %s", got, c.want)
			}
			if got := h.ForwardedFor(r); got != c.forward {
				t.Errorf("ForwardedFor = %q, want %q", got, c.forward)
			}
		})
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes([]string{"10.0.0.0/8", "192.168.1.1", "::1", "10.1.2.3/16"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.168.1.1/32", "::1/128", "10.1.0.0/16"}
	for i, p := range got {
		if p.String() != want[i] {
			t.Errorf("prefix %d = %s, want %s", i, p, want[i])
		}
	}
	if _, err := ParsePrefixes([]string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad prefix was accepted")
	}
	if _, err := ParsePrefixes([]string{"example.com"}); err == nil {
		t.Error("a host name was accepted")
	}
}

func TestMemory(t *testing.T) {
	if NewMemory(0).Over() {
		t.Error("a guard with no limit refused")
	}
	if !NewMemory(1 << 10).Over() {
		t.Error("a 1 KiB limit did not refuse: the runtime holds more than that")
	}
	if NewMemory(1 << 50).Over() {
		t.Error("a 1 PiB limit refused")
	}
	if used := NewMemory(1).Used(); used < 1<<20 {
		t.Errorf("the runtime holds %d bytes? expected at least 1 MiB", used)
	}
	if DefaultMemoryLimit() == 0 {
		t.Error("no default memory limit on this machine (neither cgroup nor /proc/meminfo readable)")
	}
}
