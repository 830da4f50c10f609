package ring

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func nodes(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{ID: fmt.Sprintf("n%d", i+1), State: StateAlive, Meta: Meta{Role: RoleNode, HTTP: fmt.Sprintf("127.0.0.1:%d", 9000+i)}}
	}
	return ms
}

func rooms(n int) []string {
	rs := make([]string, n)
	for i := range rs {
		rs[i] = fmt.Sprintf("room-%d", i)
	}
	return rs
}

// moved compares two placements over a room set: the fraction of rooms whose owner changed, and
// the fraction that moved between two members present in both (churn a change did not require).
func moved(a, b *Placement, rs []string) (frac, between float64) {
	inB := map[string]bool{}
	for _, n := range b.nodes {
		inB[n.ID] = true
	}
	inA := map[string]bool{}
	for _, n := range a.nodes {
		inA[n.ID] = true
	}
	var m, bw int
	for _, r := range rs {
		oa, _ := a.Owner(r)
		ob, _ := b.Owner(r)
		if oa.ID != ob.ID {
			m++
			if inB[oa.ID] && inA[ob.ID] {
				bw++
			}
		}
	}
	return float64(m) / float64(len(rs)), float64(bw) / float64(len(rs))
}

func TestPlacementIndependentOfOrder(t *testing.T) {
	ms := append(nodes(5), Member{ID: "r1", State: StateAlive, Meta: Meta{Role: RoleRouter}})
	want := NewPlacement(ms, DefaultPlacementConfig())
	rs := rooms(5000)
	for trial := 0; trial < 10; trial++ {
		shuffled := append([]Member(nil), ms...)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got := NewPlacement(shuffled, DefaultPlacementConfig())
		if got.Version() != want.Version() {
			t.Fatalf("version %s after shuffle, want %s", got.Version(), want.Version())
		}
		for _, r := range rs {
			a, _ := got.Owner(r)
			b, _ := want.Owner(r)
			if a.ID != b.ID {
				t.Fatalf("room %s: owner %s after shuffle, want %s", r, a.ID, b.ID)
			}
		}
	}
}

func TestRoutersAndDrainingAreNotPlaced(t *testing.T) {
	ms := nodes(3)
	ms[1].Draining = true
	ms = append(ms, Member{ID: "r1", State: StateAlive, Meta: Meta{Role: RoleRouter}},
		Member{ID: "n9", State: StateDead, Meta: Meta{Role: RoleNode}})
	p := NewPlacement(ms, DefaultPlacementConfig())
	for _, r := range rooms(2000) {
		o, ok := p.Owner(r)
		if !ok || (o.ID != "n1" && o.ID != "n3") {
			t.Fatalf("room %s placed on %q", r, o.ID)
		}
	}
	if _, ok := NewPlacement(nil, DefaultPlacementConfig()).Owner("x"); ok {
		t.Fatal("an empty placement named an owner")
	}
}

func TestVersionFollowsPlacementOnly(t *testing.T) {
	a := NewPlacement(nodes(3), DefaultPlacementConfig())
	ms := nodes(3)
	ms[0].HTTP = "10.0.0.1:1"
	ms[0].Rooms = 42
	if b := NewPlacement(ms, DefaultPlacementConfig()); b.Version() != a.Version() {
		t.Fatalf("version changed with addresses only: %s vs %s", a.Version(), b.Version())
	}
	if c := NewPlacement(nodes(4), DefaultPlacementConfig()); c.Version() == a.Version() {
		t.Fatal("version did not change when a node joined")
	}
}

// TestMovedFraction checks that a change moves close to the ideal 1/N of rooms, and logs the
// exact figures for the defaults (go test -run MovedFraction -v ./ring).
func TestMovedFraction(t *testing.T) {
	rs := rooms(100_000)
	cfg := DefaultPlacementConfig()
	for _, c := range []struct{ from, to int }{{3, 4}, {4, 3}, {4, 5}, {8, 9}, {9, 8}} {
		a := NewPlacement(nodes(c.from), cfg)
		b := NewPlacement(nodes(c.to), cfg)
		frac, between := moved(a, b, rs)
		ideal := 1 / float64(max(c.from, c.to))
		t.Logf("%d→%d nodes: %.1f%% of rooms moved (ideal %.1f%%, ratio %.2f), %.1f%% between survivors",
			c.from, c.to, 100*frac, 100*ideal, frac/ideal, 100*between)
		if frac > 1.6*ideal {
			t.Errorf("%d→%d: %.1f%% moved, more than 1.6× the ideal %.1f%%", c.from, c.to, 100*frac, 100*ideal)
		}
	}
}

func TestNeverPanics(t *testing.T) {
	for _, cfg := range []PlacementConfig{DefaultPlacementConfig(), {Partitions: 7, Replicas: 1, Load: 1}, {Partitions: 271, Replicas: 3, Load: 1}} {
		for n := 1; n <= 64; n++ {
			p := NewPlacement(nodes(n), cfg)
			if _, ok := p.Owner("x"); !ok {
				t.Fatalf("%+v with %d nodes: no owner", cfg, n)
			}
		}
	}
}

// Heirs are where a room goes when its owner leaves, and then when that heir leaves: the owner
// of each placement built without the ones before.
func TestHeirs(t *testing.T) {
	members := nodes(5)
	p := NewPlacement(members, DefaultPlacementConfig())
	for _, r := range rooms(200) {
		h := p.Heirs(r, 3)
		if len(h) != 3 {
			t.Fatalf("Heirs(%s, 3) = %v", r, h)
		}
		rest := members
		for i, heir := range h {
			want, _ := NewPlacement(rest, DefaultPlacementConfig()).Owner(r)
			if heir.ID != want.ID {
				t.Fatalf("Heirs(%s)[%d] = %s, but with %d nodes left the room goes to %s", r, i, heir.ID, len(rest), want.ID)
			}
			rest = slices.DeleteFunc(slices.Clone(rest), func(m Member) bool { return m.ID == heir.ID })
		}
	}
	// Not the owner's neighbours on the circle: the rooms of one owner go to different heirs.
	firsts := map[string]map[string]bool{}
	for _, r := range rooms(200) {
		h := p.Heirs(r, 2)
		if firsts[h[0].ID] == nil {
			firsts[h[0].ID] = map[string]bool{}
		}
		firsts[h[0].ID][h[1].ID] = true
	}
	for owner, heirs := range firsts {
		if len(heirs) < 2 {
			t.Errorf("every room of %s has the same heir %v", owner, heirs)
		}
	}
	if h := p.Heirs("x", 10); len(h) != 5 {
		t.Fatalf("Heirs(x, 10) on 5 nodes gave %d", len(h))
	}
	if h := NewPlacement(nil, DefaultPlacementConfig()).Heirs("x", 2); len(h) != 0 {
		t.Fatalf("Heirs on an empty placement: %v", h)
	}
}

func BenchmarkOwner(b *testing.B) {
	p := NewPlacement(nodes(5), DefaultPlacementConfig())
	rs := rooms(1024)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p.Owner(rs[i&1023])
		i++
	}
}

func BenchmarkRebuild(b *testing.B) {
	ms := nodes(9)
	b.ReportAllocs()
	for b.Loop() {
		NewPlacement(ms, DefaultPlacementConfig())
	}
}

func TestIsMemberHost(t *testing.T) {
	p := NewPlacement([]Member{
		{ID: "n1", Gossip: "10.0.0.1:7946", State: StateAlive, Meta: Meta{Role: RoleNode, HTTP: "10.0.1.1:9000"}},
		{ID: "r1", Gossip: "10.0.0.2:7946", State: StateAlive, Meta: Meta{Role: RoleRouter, HTTP: "router.local:8080"}},
		{ID: "n2", Gossip: "10.0.0.3:7946", State: StateDead, Meta: Meta{Role: RoleNode, HTTP: "10.0.1.3:9000"}},
	}, DefaultPlacementConfig())
	for addr, want := range map[string]bool{
		"10.0.0.1": true, "10.0.1.1": true, "10.0.0.2": true, "::ffff:10.0.0.2": true,
		"10.0.0.3": false, "10.0.1.3": false, "10.9.9.9": false,
	} {
		if got := p.IsMemberHost(netip.MustParseAddr(addr)); got != want {
			t.Errorf("IsMemberHost(%s) = %v, want %v", addr, got, want)
		}
	}
}

// The fast path (same placed set, so the hash is reused) must still know every member's hosts:
// a router that joins changes no owner but is a trusted hop from then on.
func TestIsMemberHostAfterReuse(t *testing.T) {
	cfg := DefaultPlacementConfig()
	n1 := Member{ID: "n1", Gossip: "10.0.0.1:7946", State: StateAlive, Meta: Meta{Role: RoleNode, HTTP: "10.0.1.1:9000"}}
	r1 := Member{ID: "r1", Gossip: "10.0.0.2:7946", State: StateAlive, Meta: Meta{Role: RoleRouter, HTTP: "10.0.1.2:8080"}}
	prev := NewPlacement([]Member{n1}, cfg)
	n1.Rooms = 5 // a stats update
	next := newPlacementFrom(prev, []Member{n1, r1}, cfg)
	if next.hash != prev.hash {
		t.Fatal("the placed set did not change, yet the hash was rebuilt: the test no longer covers the fast path")
	}
	for _, addr := range []string{"10.0.0.1", "10.0.1.1", "10.0.0.2", "10.0.1.2"} {
		if !next.IsMemberHost(netip.MustParseAddr(addr)) {
			t.Errorf("IsMemberHost(%s) = false after a reused placement, want true", addr)
		}
	}
}
