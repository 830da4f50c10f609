// Package limit holds the guards a member puts in front of its doors: connections per client
// address, a memory guard that refuses new rooms before the process runs out, and finding a
// client's address behind trusted hops (a load balancer, a roost router).
package limit

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// PerAddr counts open connections per client address and refuses one beyond its maximum.
// It is safe for concurrent use.
type PerAddr struct {
	max int
	mu  sync.Mutex
	n   map[netip.Addr]int
}

// NewPerAddr returns a counter allowing max connections per address.
func NewPerAddr(max int) *PerAddr {
	return &PerAddr{max: max, n: make(map[netip.Addr]int)}
}

// Acquire counts a connection from a in, or reports false when a has its maximum already.
// Addresses count by Key: an IPv6 address by its /64. An invalid address (one that could not be
// parsed) shares one count.
func (p *PerAddr) Acquire(a netip.Addr) bool {
	a = Key(a)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[a] >= p.max {
		return false
	}
	p.n[a]++
	return true
}

// Release counts a connection from a out; call it once for every Acquire that returned true.
func (p *PerAddr) Release(a netip.Addr) {
	a = Key(a)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[a] <= 1 {
		delete(p.n, a)
		return
	}
	p.n[a]--
}

// Hops finds a client's address. X-Forwarded-For is believed only as far as it was written by
// trusted hops: the connection's peer must be trusted for its header to count, and the client is
// the rightmost address in the chain that is not trusted. Anyone else's X-Forwarded-For is
// ignored, so a client cannot pick the address it is counted under.
type Hops struct {
	// Prefixes are trusted hops given by the operator (--trusted-proxies).
	Prefixes []netip.Prefix
	// Member, when set, reports whether an address belongs to a member of the cluster (a router
	// proxying to a node); members are trusted hops too.
	Member func(netip.Addr) bool
}

// Trusted reports whether a is a trusted hop.
func (h Hops) Trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range h.Prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return h.Member != nil && h.Member(a)
}

// Client returns the address of the client that made r.
func (h Hops) Client(r *http.Request) netip.Addr {
	a := RemoteAddr(r)
	if !h.Trusted(a) {
		return a
	}
	chain := forwarded(r)
	for i := len(chain) - 1; i >= 0; i-- {
		p, ok := parseAddr(chain[i])
		if !ok {
			return a // a hop wrote something we cannot read: stop at the last one we trust
		}
		a = p
		if !h.Trusted(a) {
			return a
		}
	}
	return a
}

// ForwardedFor is the X-Forwarded-For to send upstream for r: the chain so far when r's peer is
// a trusted hop, then r's peer.
func (h Hops) ForwardedFor(r *http.Request) string {
	a := RemoteAddr(r)
	if chain := forwarded(r); len(chain) > 0 && h.Trusted(a) {
		return strings.Join(chain, ", ") + ", " + a.String()
	}
	return a.String()
}

// RemoteAddr is the address of r's peer (the zero Addr if it cannot be parsed).
func RemoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		a, _ := parseAddr(r.RemoteAddr)
		return a
	}
	return ap.Addr().Unmap()
}

// forwarded returns every entry of r's X-Forwarded-For headers, in order.
func forwarded(r *http.Request) []string {
	var out []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				out = append(out, e)
			}
		}
	}
	return out
}

// parseAddr reads an IP, with or without a port or brackets.
func parseAddr(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// ParsePrefixes reads a list of CIDR prefixes or bare addresses (a single host).
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR prefix", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// HostAddr returns the IP of a host:port, if the host is an IP literal.
func HostAddr(hostport string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.Addr{}, false
	}
	return parseAddr(host)
}

// Memory refuses growth when the Go runtime holds more than a limit. It samples the runtime's
// own accounting (runtime/metrics: memory mapped minus memory returned to the OS) at most every
// sampleEvery, so checking it on every new room costs next to nothing and needs no goroutine.
type Memory struct {
	limit   uint64
	sampled atomic.Int64 // unix nanoseconds of the last sample
	used    atomic.Uint64
	mu      sync.Mutex
	samples []metrics.Sample
}

const sampleEvery = 100 * time.Millisecond

// NewMemory returns a guard for limit bytes; 0 turns it off.
func NewMemory(limit uint64) *Memory {
	return &Memory{limit: limit, samples: []metrics.Sample{
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}}
}

// Over reports whether the process holds more memory than the limit.
func (m *Memory) Over() bool {
	return m != nil && m.limit > 0 && m.Used() > m.limit
}

// Used returns the memory the process holds, sampled at most sampleEvery ago.
func (m *Memory) Used() uint64 {
	now := time.Now().UnixNano()
	if last := m.sampled.Load(); now-last < int64(sampleEvery) || !m.sampled.CompareAndSwap(last, now) {
		return m.used.Load()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	metrics.Read(m.samples)
	total, released := m.samples[0].Value.Uint64(), m.samples[1].Value.Uint64()
	m.used.Store(total - min(released, total))
	return m.used.Load()
}

// DefaultMemoryLimit is 80% of the memory the process may use: its cgroup's limit (a container's)
// when there is one, otherwise the machine's. It returns 0 (off) when neither can be read.
func DefaultMemoryLimit() uint64 {
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil { // cgroup v2
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			return v / 5 * 4
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				if err == nil {
					return kb * 1024 / 5 * 4
				}
			}
		}
	}
	return 0
}

// SoftLimit gives the Go runtime limit as its soft memory limit (runtime/debug.SetMemoryLimit),
// unless GOMEMLIMIT says otherwise or a lower one is set already: the collector then works
// harder as the process nears the limit, rather than letting garbage grow the heap to twice
// what is live (GOGC=100) past it. 0 does nothing. Call it once, from the command, with
// the --max-memory-mib a member runs with.
func SoftLimit(limit uint64) {
	if limit == 0 || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	if cur := debug.SetMemoryLimit(-1); cur > 0 && uint64(cur) <= limit {
		return
	}
	debug.SetMemoryLimit(int64(min(limit, math.MaxInt64)))
}
