package router

import (
	"context"
	"time"

	"github.com/roost-dev/roost/ring"
)

// retryOwner calls try with the room's owner until it succeeds, ctx ends (its error is
// returned) or stopped reports true (errClosed). The first attempt goes to moved, the node a
// 4001 named, when the ring knows it; the others to the owner by this router's ring. accept
// filters the members it may try (nil: any). Between attempts it waits 50 ms, doubling up to
// 1 s — but tries again at once when the ring's placement changes, as an owner that crashed is
// replaced only then, and waiting out the backoff would keep the room's clients waiting for
// nothing.
func (rt *Router) retryOwner(ctx context.Context, room, moved string, accept func(ring.Member) bool, try func(ring.Member) error, stopped func() bool) error {
	for attempt := 0; ; attempt++ {
		changed := rt.nextPlacement()
		p := rt.ring.Placement()
		target, ok := p.Member(moved)
		if !ok || attempt > 0 || accept != nil && !accept(target) {
			target, ok = p.Owner(room)
		}
		if ok && (accept == nil || accept(target)) {
			err := try(target)
			if err == nil {
				return nil
			}
			rt.log.Debug("re-dialing the room's owner failed; trying again", "room", room, "peer", target.ID, "attempt", attempt, "err", err)
		}
		if stopped() {
			return errClosed
		}
		t := time.NewTimer(min(50*time.Millisecond<<min(attempt, 5), time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-changed:
			t.Stop()
		case <-t.C:
		}
	}
}

// nextPlacement is closed when the ring's placement next changes.
func (rt *Router) nextPlacement() <-chan struct{} {
	rt.placedMu.Lock()
	defer rt.placedMu.Unlock()
	return rt.placed
}

// placementChanged wakes whoever waits in nextPlacement.
func (rt *Router) placementChanged() {
	rt.placedMu.Lock()
	defer rt.placedMu.Unlock()
	close(rt.placed)
	rt.placed = make(chan struct{})
}
