package ring

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// PlacementConfig shapes the consistent hash. Every member of a cluster must use the same values,
// or they will disagree about owners; the values are part of the ring version, so such a
// disagreement shows up as different "ring" strings in /v1/cluster.
type PlacementConfig struct {
	// Partitions is the number of hash partitions rooms fall into; a partition is the unit that
	// moves between nodes. More partitions spread rooms more evenly and move closer to the ideal
	// 1/N on a change, at a small cost in rebuild time. Default 1021 (a prime, like consistent's
	// own examples use).
	Partitions int
	// Replicas is the number of points each node has on the hash circle. Default 64.
	Replicas int
	// Load bounds a node's share at Load times the average. Default 1.25. Values near 1 even out
	// the load but make more partitions move between survivors on each change.
	Load float64
}

// DefaultPlacementConfig returns the defaults chosen by measuring rooms moved on 3→4 and 4→3
// nodes (see TestMovedFraction and BenchmarkRebuild).
func DefaultPlacementConfig() PlacementConfig {
	return PlacementConfig{Partitions: 1021, Replicas: 64, Load: 1.25}
}

// Validate reports the first field that cannot work.
func (c PlacementConfig) Validate() error {
	switch {
	case c.Partitions < 1:
		return fmt.Errorf("ring: Partitions must be at least 1, got %d", c.Partitions)
	case c.Replicas < 1:
		return fmt.Errorf("ring: Replicas must be at least 1, got %d", c.Replicas)
	case c.Load < 1:
		return fmt.Errorf("ring: Load must be at least 1.0, got %g", c.Load)
	}
	return nil
}

// Placement is an immutable snapshot of the cluster: its members and which node owns each room.
// It is safe for concurrent use; Owner is lock-free and does not allocate.
type Placement struct {
	version string
	cfg     PlacementConfig
	load    float64                  // the load factor actually used (raised if cfg.Load could not be met; 0 for round-robin)
	members []Member                 // everyone this snapshot knows of, sorted by ID
	nodes   []Member                 // the placed members, sorted by ID
	owners  []int32                  // partition → index into nodes
	hash    *consistent.Consistent   // nil when placement fell back to round-robin
	hosts   map[netip.Addr]hostRoles // IPs of live members' gossip and HTTP addresses

	heirsMu sync.Mutex
	heirs   map[string]*Placement // this placement without some nodes (see Heirs), by their IDs
}

type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

type ringMember string

func (m ringMember) String() string { return string(m) }

// NewPlacement builds the placement of members under cfg. Only members with role node that are
// alive and not draining are placed. The result depends only on the set of
// placed IDs and cfg, never on the order members are given in.
func NewPlacement(members []Member, cfg PlacementConfig) *Placement {
	p := &Placement{cfg: cfg, load: cfg.Load, members: slices.Clone(members)}
	slices.SortFunc(p.members, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	for _, m := range p.members {
		if m.placed() {
			p.nodes = append(p.nodes, m)
		}
	}
	p.hosts = memberHosts(p.members)
	p.version = placementVersion(p.nodes, cfg)
	if len(p.nodes) == 0 {
		return p
	}
	p.hash, p.load = buildConsistent(p.nodes, cfg)
	index := make(map[string]int32, len(p.nodes))
	for i, n := range p.nodes {
		index[n.ID] = int32(i)
	}
	p.owners = make([]int32, cfg.Partitions)
	for part := range p.owners {
		if p.hash == nil {
			p.owners[part] = int32(part % len(p.nodes))
			continue
		}
		p.owners[part] = index[p.hash.GetPartitionOwner(part).String()]
	}
	return p
}

// buildConsistent builds the hash ring. consistent panics when it cannot place every partition
// within the load bound ("not enough room to distribute partitions"); that must never reach a
// user. So the bound is relaxed step by step, then the points per node are raised; if even that
// fails (more nodes than partitions) it returns nil and the caller deals partitions round-robin.
func buildConsistent(nodes []Member, cfg PlacementConfig) (*consistent.Consistent, float64) {
	ms := make([]consistent.Member, len(nodes))
	for i, n := range nodes {
		ms[i] = ringMember(n.ID)
	}
	for load := cfg.Load; load <= cfg.Load+2; load += 0.25 {
		if c := tryConsistent(ms, cfg.Partitions, cfg.Replicas, load); c != nil {
			return c, load
		}
	}
	for reps := cfg.Replicas * 2; reps <= cfg.Replicas*16; reps *= 2 {
		if c := tryConsistent(ms, cfg.Partitions, reps, cfg.Load+2); c != nil {
			return c, cfg.Load + 2
		}
	}
	return nil, 0
}

func tryConsistent(ms []consistent.Member, partitions, replicas int, load float64) (c *consistent.Consistent) {
	defer func() {
		if recover() != nil {
			c = nil
		}
	}()
	return consistent.New(ms, consistent.Config{
		Hasher:            hasher{},
		PartitionCount:    partitions,
		ReplicationFactor: replicas,
		Load:              load,
	})
}

// hostRoles says what live members an IP is the host of.
type hostRoles uint8

const (
	hostMember hostRoles = 1 << iota // any member: node or router
	hostRouter                       // a router
)

// memberHosts collects the IPs live members gossip and serve HTTP from.
func memberHosts(members []Member) map[netip.Addr]hostRoles {
	hosts := make(map[netip.Addr]hostRoles, 2*len(members))
	for _, m := range members {
		if m.State != StateAlive {
			continue
		}
		roles := hostMember
		if m.Role == RoleRouter {
			roles |= hostRouter
		}
		for _, hp := range []string{m.Gossip, m.HTTP} {
			if ap, err := netip.ParseAddrPort(hp); err == nil {
				hosts[ap.Addr().Unmap()] |= roles
			}
		}
	}
	return hosts
}

func placementVersion(nodes []Member, cfg PlacementConfig) string {
	d := xxhash.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(cfg.Partitions)<<32|uint64(cfg.Replicas))
	d.Write(b[:])
	d.WriteString(strconv.FormatFloat(cfg.Load, 'g', -1, 64))
	for _, n := range nodes {
		d.WriteString("\x00")
		d.WriteString(n.ID)
	}
	return fmt.Sprintf("%08x", uint32(d.Sum64()))
}

// IsMemberHost reports whether a is the IP of a live member's gossip or HTTP address, a node's
// or a router's: a host inside the cluster.
func (p *Placement) IsMemberHost(a netip.Addr) bool { return p.hosts[a.Unmap()] != 0 }

// IsRouterHost reports whether a is the IP of a live router's gossip or HTTP address. A node
// believes X-Forwarded-For only from routers: they are the members that proxy clients to it, and
// another node never does (it redirects), so a node's address vouches for no client's.
func (p *Placement) IsRouterHost(a netip.Addr) bool { return p.hosts[a.Unmap()]&hostRouter != 0 }

// Version is a short string naming this placement: two members reporting the same version name the
// same owner for every room. It changes only when placement does.
func (p *Placement) Version() string { return p.version }

// Partitions is the number of hash partitions.
func (p *Placement) Partitions() int { return p.cfg.Partitions }

// Load is the load factor in use; higher than configured when the configured bound could not be met.
func (p *Placement) Load() float64 { return p.load }

// Partition is the partition room falls into.
func (p *Placement) Partition(room string) int {
	return int(xxhash.Sum64String(room) % uint64(p.cfg.Partitions))
}

// Owner is the node that owns room, or false when no node is placed.
func (p *Placement) Owner(room string) (Member, bool) {
	if len(p.nodes) == 0 {
		return Member{}, false
	}
	return p.nodes[p.owners[xxhash.Sum64String(room)%uint64(len(p.owners))]], true
}

// Heirs is the owner of room followed by the node the room would go to if its owner left, then
// the one it would go to if that one left too, and so on: at most n distinct nodes. Every member
// computes the same heirs from the same placement. (Not the next nodes on the hash circle: those
// are the owner's neighbours, the same for all its rooms, not where a room goes.) The placements
// without the first heirs are built once per placement and kept.
func (p *Placement) Heirs(room string, n int) []Member {
	out := make([]Member, 0, min(n, len(p.nodes)))
	for cur := p; len(out) < n; {
		o, ok := cur.Owner(room)
		if !ok {
			break
		}
		out = append(out, o)
		cur = p.without(out)
	}
	return out
}

// without is this placement's members less gone, placed as NewPlacement would place them.
func (p *Placement) without(gone []Member) *Placement {
	ids := make([]string, len(gone))
	for i, m := range gone {
		ids[i] = m.ID
	}
	slices.Sort(ids)
	key := strings.Join(ids, "\x00")
	p.heirsMu.Lock()
	defer p.heirsMu.Unlock()
	if q, ok := p.heirs[key]; ok {
		return q
	}
	rest := slices.DeleteFunc(slices.Clone(p.members), func(m Member) bool { return slices.Contains(ids, m.ID) })
	q := NewPlacement(rest, p.cfg)
	if p.heirs == nil {
		p.heirs = map[string]*Placement{}
	}
	p.heirs[key] = q
	return q
}

// Nodes are the placed members, sorted by ID.
func (p *Placement) Nodes() []Member { return slices.Clone(p.nodes) }

// Members are all members this snapshot knows of (nodes, routers, draining, recently gone), sorted by ID.
func (p *Placement) Members() []Member { return slices.Clone(p.members) }

// Member looks a member up by ID.
func (p *Placement) Member(id string) (Member, bool) {
	i, ok := slices.BinarySearchFunc(p.members, id, func(a Member, id string) int { return cmp.Compare(a.ID, id) })
	if !ok {
		return Member{}, false
	}
	return p.members[i], true
}

// Config is the placement configuration this snapshot was built with.
func (p *Placement) Config() PlacementConfig { return p.cfg }

// Counterfactuals are the placements of this snapshot's live members as if self were not a
// member, and as if no member were draining: where a room was just before self joined or a
// draining node left. A node that gains a room looks there for its previous owner.
func (p *Placement) Counterfactuals(self string) []*Placement {
	var without, undrained []Member
	for _, m := range p.members {
		if m.State == StateLeft || m.State == StateDead {
			continue
		}
		m.Draining, m.Leaving, m.State = false, false, StateAlive
		undrained = append(undrained, m)
		if m.ID != self {
			without = append(without, m)
		}
	}
	return []*Placement{NewPlacement(without, p.cfg), NewPlacement(undrained, p.cfg)}
}
