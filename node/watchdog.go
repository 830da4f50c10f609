package node

import (
	"context"
	"time"

	"github.com/roost-dev/roost/protocol"
)

// A paused node is a stale node. A process frozen (SIGSTOP, a VM stall) for longer than the
// cluster takes to declare it dead has had its rooms started elsewhere meanwhile; if it went on
// serving them, two copies would take writes. The watchdog notices the gap on the monotonic
// clock, drops every room (clients get 4001 and resume at the owner) and, for Quarantine, creates
// no room until gossip has brought its view of the ring up to date. Writes check the clock
// themselves, so none slips through between the resume and the watchdog's next tick.

// tick records that the node ran now.
func (n *Node) tick() {
	n.lastTick.Store(int64(time.Since(n.start)))
}

// stale reports whether the node has not run for StaleAfter: it may have been declared dead.
func (n *Node) stale() bool {
	return time.Since(n.start)-time.Duration(n.lastTick.Load()) > n.cfg.StaleAfter
}

// quarantined reports whether the node recently woke from a pause and must not create rooms.
func (n *Node) quarantined() bool {
	return time.Since(n.start) < time.Duration(n.quarantineUntil.Load())
}

func (n *Node) watchdog(ctx context.Context) {
	defer n.wg.Done()
	t := time.NewTicker(max(n.cfg.StaleAfter/10, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Drop before recording the tick: until every room is gone, writes must still see
			// the node as stale, or one arriving just after the resume could be acked by a
			// room the watchdog is about to close.
			now := time.Since(n.start)
			if gap := now - time.Duration(n.lastTick.Load()); gap > n.cfg.StaleAfter {
				n.quarantineUntil.Store(int64(now + n.cfg.Quarantine))
				n.dropAll(gap)
			}
			n.tick()
		}
	}
}

// dropAll closes every room after a pause; their clients reconnect to the owner.
func (n *Node) dropAll(gap time.Duration) {
	rooms := n.rooms.all()
	n.log.Warn("this node was paused longer than the failure timeout; dropping every room, another node may own them now",
		"paused", gap.Round(time.Millisecond), "rooms", len(rooms))
	p := n.ring.Placement()
	for _, r := range rooms {
		o, _ := p.Owner(r.name)
		n.rooms.remove(r)
		r.closeAll(farewell{code: protocol.CloseMoved, flush: false, reason: movedReason(o.ID),
			source: func(accepted uint64) string { return movedLine(o, accepted) }})
		n.metrics.drops.WithLabelValues("stale_node").Inc()
	}
}
