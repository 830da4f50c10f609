package limit

import (
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/protocol"
	"golang.org/x/time/rate"
)

// Door admits WebSocket upgrades on a node or a router: first the browser origin, then the
// handshakes in progress, then the connections open from the client's address.
type Door struct {
	Origins auth.Origins
	Hops    Hops
	PerAddr *PerAddr
	// Handshakes, when set, bounds the upgrades in progress at once (Admit to handshake done).
	Handshakes *InFlight
	// Rooms, when set, bounds how fast one client address may have rooms created (AdmitRoom).
	Rooms *Rate
}

// Admit checks r. It answers a refusal itself (403, 429 or 503, JSON) and returns the reason,
// for a metric; otherwise it returns handshake, to call once the connection is established (or
// has failed), and release, to call when the connection ends.
func (d *Door) Admit(w http.ResponseWriter, r *http.Request) (handshake, release func(), refused string) {
	if !d.Origins.Allow(r) {
		protocol.WriteError(w, http.StatusForbidden, protocol.CodeOrigin,
			fmt.Sprintf("origin %q may not open WebSockets here (--allowed-origins)", r.Header.Get("Origin")))
		return nil, nil, "origin"
	}
	if !d.Handshakes.Acquire() {
		// A storm of reconnects (a node died; its clients all come back at once): refusing
		// what is past the bound costs little, and the clients' jittered retries turn the storm
		// into a ramp the member can serve, where queueing them all would time them out.
		w.Header().Set("Retry-After", "1")
		protocol.WriteError(w, http.StatusServiceUnavailable, CodeOverloaded,
			"too many handshakes in progress here (--max-handshakes); try again in a moment")
		return nil, nil, "handshakes"
	}
	addr := d.Hops.Client(r)
	if !d.PerAddr.Acquire(addr) {
		d.Handshakes.Release()
		protocol.WriteError(w, http.StatusTooManyRequests, protocol.CodeLimit,
			"too many connections from your address (--max-addr-conns); close some and try again")
		return nil, nil, "addr_conns"
	}
	return d.Handshakes.Release, func() { d.PerAddr.Release(addr) }, ""
}

// InFlight bounds how many of something are in progress at once. A nil *InFlight bounds
// nothing. It is safe for concurrent use.
type InFlight struct {
	slots chan struct{}
}

// NewInFlight allows max at once; max ≤ 0 returns nil (no bound).
func NewInFlight(max int) *InFlight {
	if max <= 0 {
		return nil
	}
	return &InFlight{slots: make(chan struct{}, max)}
}

// Acquire takes a place, or reports false at once when all are taken.
func (f *InFlight) Acquire() bool {
	if f == nil {
		return true
	}
	select {
	case f.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// Release gives back a place; call it once for every Acquire that returned true.
func (f *InFlight) Release() {
	if f != nil {
		<-f.slots
	}
}

// Len is how many places are taken.
func (f *InFlight) Len() int {
	if f == nil {
		return 0
	}
	return len(f.slots)
}

// AdmitRoom takes one room creation from the rate of r's client address. Over it, it answers 429
// (JSON, with Retry-After) itself and returns the reason, for a metric.
func (d *Door) AdmitRoom(w http.ResponseWriter, r *http.Request) (refused string) {
	if d.Rooms.Allow(d.Hops.Client(r)) {
		return ""
	}
	w.Header().Set("Retry-After", "1")
	protocol.WriteError(w, http.StatusTooManyRequests, protocol.CodeRateLimited,
		"your address is creating rooms faster than this node allows (--room-create-rate); join an existing room or try again shortly")
	return "room_rate"
}

// Key is the address a client is counted under: an IPv6 address by its /64 (one subscriber's
// network: a host picks any address in it at will), an IPv4 address as it is.
func Key(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// Rate bounds how often each client address (Key) may do something: a token bucket per address,
// refilled at a rate with a burst (golang.org/x/time/rate). A bucket that is full again is
// forgotten, so memory follows the addresses active within the last burst/rate seconds. A nil
// *Rate allows everything. It is safe for concurrent use.
type Rate struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[netip.Addr]*rate.Limiter
	swept   time.Time
}

// NewRate allows perSecond per address, with bursts of burst; perSecond ≤ 0 returns nil (no bound).
func NewRate(perSecond float64, burst int) *Rate {
	if perSecond <= 0 {
		return nil
	}
	return &Rate{limit: rate.Limit(perSecond), burst: max(burst, 1), buckets: map[netip.Addr]*rate.Limiter{}}
}

// sweepEvery is how often Allow forgets the buckets that are full again.
const sweepEvery = time.Second

// Allow takes one from a's bucket, or reports false when it is empty.
func (r *Rate) Allow(a netip.Addr) bool {
	if r == nil {
		return true
	}
	a = Key(a)
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.swept) >= sweepEvery {
		r.swept = now
		for k, b := range r.buckets {
			if b.TokensAt(now) >= float64(r.burst) {
				delete(r.buckets, k) // as good as a new bucket
			}
		}
	}
	b := r.buckets[a]
	if b == nil {
		b = rate.NewLimiter(r.limit, r.burst)
		r.buckets[a] = b
	}
	return b.AllowN(now, 1)
}

// Len is the number of addresses with a bucket, for tests.
func (r *Rate) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.buckets)
}
