package ring

import (
	"net/netip"
	"testing"
)

// TestIsRouterHost: only routers' addresses are router hosts; a node's (or a dead router's) is
// not, also on the fast path that reuses the previous placement's hash.
func TestIsRouterHost(t *testing.T) {
	cfg := DefaultPlacementConfig()
	members := []Member{
		{ID: "n1", Gossip: "10.0.0.1:7946", State: StateAlive, Meta: Meta{Role: RoleNode, HTTP: "10.0.1.1:9000"}},
		{ID: "r1", Gossip: "10.0.0.2:7946", State: StateAlive, Meta: Meta{Role: RoleRouter, HTTP: "10.0.1.2:8080"}},
		{ID: "r2", Gossip: "10.0.0.3:7946", State: StateDead, Meta: Meta{Role: RoleRouter, HTTP: "10.0.1.3:8080"}},
		// A host running a node and a router: the router makes it a router host.
		{ID: "n4", Gossip: "10.0.0.4:7946", State: StateAlive, Meta: Meta{Role: RoleNode, HTTP: "10.0.0.4:9000"}},
		{ID: "r4", Gossip: "10.0.0.4:7947", State: StateAlive, Meta: Meta{Role: RoleRouter, HTTP: "10.0.0.4:8080"}},
	}
	want := map[string]bool{
		"10.0.0.1": false, "10.0.1.1": false, // the node's: a member, not a router
		"10.0.0.2": true, "10.0.1.2": true, "::ffff:10.0.0.2": true,
		"10.0.0.3": false, "10.0.1.3": false, // a dead router's
		"10.0.0.4": true,
		"10.9.9.9": false,
	}
	p := NewPlacement(members, cfg)
	next := newPlacementFrom(p, members, cfg)
	if next.hash != p.hash {
		t.Fatal("the placed set did not change, yet the hash was rebuilt: the test no longer covers the fast path")
	}
	for name, pl := range map[string]*Placement{"new": p, "reused": next} {
		for addr, w := range want {
			a := netip.MustParseAddr(addr)
			if got := pl.IsRouterHost(a); got != w {
				t.Errorf("%s: IsRouterHost(%s) = %v, want %v", name, addr, got, w)
			}
		}
		if !pl.IsMemberHost(netip.MustParseAddr("10.0.0.1")) {
			t.Errorf("%s: a node's address is no longer a member host", name)
		}
	}
}
