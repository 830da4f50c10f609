package limit

import (
	"fmt"
	"net/http"

	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/protocol"
)

// Door admits WebSocket upgrades on a node or a router: first the browser origin, then the
// connections open from the client's address.
type Door struct {
	Origins auth.Origins
	Hops    Hops
	PerAddr *PerAddr
}

// Admit checks r. It answers a refusal itself (403 or 429, JSON) and returns the reason, for a
// metric; otherwise it returns a release to call when the connection ends.
func (d *Door) Admit(w http.ResponseWriter, r *http.Request) (release func(), refused string) {
	if !d.Origins.Allow(r) {
		protocol.WriteError(w, http.StatusForbidden, protocol.CodeOrigin,
			fmt.Sprintf("origin %q may not open WebSockets here (--allowed-origins)", r.Header.Get("Origin")))
		return nil, "origin"
	}
	addr := d.Hops.Client(r)
	if !d.PerAddr.Acquire(addr) {
		protocol.WriteError(w, http.StatusTooManyRequests, protocol.CodeLimit,
			"too many connections from your address (--max-addr-conns); close some and try again")
		return nil, "addr_conns"
	}
	return func() { d.PerAddr.Release(addr) }, ""
}
