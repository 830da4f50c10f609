// Package ringtest is a membership for tests of the parts that read the ring: no gossip, only
// the placements a test sets, and every subscriber told of each. The node's parts (hand-off,
// replication, the pause watchdog, the quorum) take it where they take the real ring.
package ringtest

import (
	"sync"
	"time"

	"github.com/roost-dev/roost/ring"
)

// Ring is one member's view of the membership, as the test sets it.
type Ring struct {
	ring.Feed // Subscribe: the placements set after the call, only the newest if unread

	id string
	mu sync.Mutex
	p  *ring.Placement
}

// New is member id's ring, at placement p (nil: no placement yet).
func New(id string, p *ring.Placement) *Ring {
	return &Ring{id: id, p: p}
}

// ID is the member's id.
func (r *Ring) ID() string { return r.id }

// Ready reports true: a test's ring has always joined.
func (r *Ring) Ready() bool { return true }

// Placement is the placement last set.
func (r *Ring) Placement() *ring.Placement {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.p
}

// Set makes p the placement and tells every subscriber.
func (r *Ring) Set(p *ring.Placement) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p = p
	r.Send(p)
}

// GoneSince reports that no member has left: a test's members leave by a new placement.
func (r *Ring) GoneSince(string) (time.Duration, bool) { return 0, false }
