package router

import (
	"context"
	"sync/atomic"

	"github.com/roost-dev/roost/internal/httpapi"
	"github.com/roost-dev/roost/ring"
)

// fakeRing is the membership of scripted owners: a placement the test swaps.
type fakeRing struct {
	p atomic.Pointer[ring.Placement]
}

func (f *fakeRing) ID() string                                         { return "r1" }
func (f *fakeRing) Placement() *ring.Placement                         { return f.p.Load() }
func (f *fakeRing) Ready() bool                                        { return true }
func (f *fakeRing) UpdateMeta(context.Context, func(*ring.Meta)) error { return nil }
func (f *fakeRing) Subscribe() (<-chan *ring.Placement, func())        { return nil, func() {} }
func (f *fakeRing) place(owner *fakeOwner, others ...*fakeOwner) {
	f.p.Store(placement(owner, others...))
}
func placement(owner *fakeOwner, others ...*fakeOwner) *ring.Placement { // owner placed, others known
	ms := []ring.Member{owner.member(true)}
	for _, o := range others {
		ms = append(ms, o.member(false))
	}
	return ring.NewPlacement(ms, ring.DefaultPlacementConfig())
}

var _ Ring = (*fakeRing)(nil)
var _ httpapi.Ring = (*fakeRing)(nil)
