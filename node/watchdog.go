package node

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// A paused node may be a stale node. A process frozen (SIGSTOP, a VM stall, a starved machine)
// for longer than the cluster takes to declare it dead may have had its rooms started elsewhere
// meanwhile; if it went on serving them, two copies would take writes. The watchdog notices the
// gap on the monotonic clock. Writes check the clock themselves and wait while the node is stale,
// so none is acked between the resume and the watchdog's decision.
//
// The decision: the node asks every other node whether it took over from it since the pause
// began (declared it dead or gone, or started one of its rooms afresh after it stayed silent).
// If none did, and every one answered, nothing was started elsewhere: the rooms are kept, with
// their history, and the writes go on. Otherwise, or when a peer cannot be asked, every room is
// dropped (clients get 4001 and resume at the owner). A node alone in its ring keeps its rooms:
// nobody else could have taken them. For Quarantine after a pause, the node creates no room
// while gossip brings its view of the ring up to date.
//
// What is left: a peer that suspected the node during the pause but had not yet declared it dead
// when it answered can still do so a moment later, if the node's refutation reaches it late. The
// window is the rest of a suspicion timeout; memberlist gives no race-free way to read suspicion.

// tick records that the node ran now and wakes the writes waiting for it.
func (n *Node) tick() {
	n.lastTick.Store(int64(time.Since(n.start)))
	if old := n.ticked.Swap(newTickChan()); old != nil {
		close(*old)
	}
}

func newTickChan() *chan struct{} { ch := make(chan struct{}); return &ch }

// stale reports whether the node has not run for StaleAfter: it may have been declared dead.
func (n *Node) stale() bool {
	return time.Since(n.start)-time.Duration(n.lastTick.Load()) > n.cfg.StaleAfter
}

// awaitFresh waits while the node is stale, until the watchdog has decided about the pause: a
// node woken from one serves nothing of any room before that (DESIGN.md: the pause rule is
// absolute). It fails with ErrStale if the decision takes longer than it can, or with ctx's
// error.
func (n *Node) awaitFresh(ctx context.Context) error {
	var t *time.Timer
	for {
		ch := n.ticked.Load()
		if !n.stale() {
			return nil
		}
		if t == nil {
			t = time.NewTimer(n.maxDecision())
			defer t.Stop()
		}
		select {
		case <-*ch:
		case <-t.C:
			return ErrStale
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// maxDecision bounds how long the watchdog takes to decide after a pause: a tick, the settling
// time, and the question to the peers.
func (n *Node) maxDecision() time.Duration {
	return n.cfg.StaleAfter + n.pauseSettle() + pauseCheckTimeout
}

// awaitQuarantine waits until a node woken from a pause may create rooms again.
func (n *Node) awaitQuarantine(ctx context.Context) error {
	left := time.Duration(n.quarantineUntil.Load()) - time.Since(n.start)
	if left <= 0 {
		return nil
	}
	t := time.NewTimer(left)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// quarantined reports whether the node recently woke from a pause and must not create rooms.
func (n *Node) quarantined() bool {
	return time.Since(n.start) < time.Duration(n.quarantineUntil.Load())
}

// pauseCheckTimeout bounds asking the peers after a pause.
const pauseCheckTimeout = 2 * time.Second

// pauseSettle is how long a node woken from a pause lets gossip run before asking its peers.
func (n *Node) pauseSettle() time.Duration { return n.cfg.StaleAfter / 2 }

func (n *Node) watchdog(ctx context.Context) {
	defer n.wg.Done()
	t := time.NewTicker(max(n.cfg.StaleAfter/10, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Decide before recording the tick: until the rooms are kept or gone, writes must
			// still see the node as stale, or one arriving just after the resume could be acked
			// by a room that is about to close.
			now := time.Since(n.start)
			if gap := now - time.Duration(n.lastTick.Load()); gap > n.cfg.StaleAfter {
				n.quarantineUntil.Store(int64(now + n.cfg.Quarantine))
				n.afterPause(ctx, gap)
			}
			n.tick()
		}
	}
}

// afterPause keeps the rooms if no peer took over from this node since the pause began, and
// drops them all otherwise.
func (n *Node) afterPause(ctx context.Context, gap time.Duration) {
	held := n.rooms.len()
	if held == 0 {
		return
	}
	woke := time.Now()
	defer func() { n.metrics.pauseDecision.Observe(time.Since(woke).Seconds()) }()
	select {
	case <-ctx.Done():
		return
	case <-time.After(n.pauseSettle()):
	}
	cctx, cancel := context.WithTimeout(ctx, pauseCheckTimeout)
	defer cancel()
	// A takeover since the pause began counts; the margin covers the answer's trip.
	window := gap + time.Since(woke) + pauseCheckTimeout
	why := n.takenOver(cctx, window)
	if why == "" {
		n.metrics.pauses.WithLabelValues("kept").Inc()
		n.log.Warn("this node was paused longer than the failure timeout; no peer took over, keeping every room",
			"paused", gap.Round(time.Millisecond), "rooms", held, "decided_in", time.Since(woke).Round(time.Millisecond))
		return
	}
	n.metrics.pauses.WithLabelValues("dropped").Inc()
	n.dropAll(gap, why)
	n.log.Info("pause decided: rooms dropped", "decided_in", time.Since(woke).Round(time.Millisecond))
}

// takeoverReply answers a node woken from a pause.
type takeoverReply struct {
	TakenOver bool     `json:"taken_over"`
	AgoMS     int64    `json:"ago_ms,omitempty"` // how long ago, when it did
	Nodes     []string `json:"nodes"`            // the nodes this peer knows, so joiners are asked too
}

// takenOver asks every other node whether it took over from this one within window. It returns
// why the rooms must go, or "" when every peer answered no.
func (n *Node) takenOver(ctx context.Context, window time.Duration) string {
	p := n.ring.Placement()
	asked := map[string]bool{n.id: true}
	var ask []ring.Member
	add := func(m ring.Member) {
		if asked[m.ID] || m.Role != ring.RoleNode {
			return
		}
		asked[m.ID] = true
		switch m.State {
		case ring.StateAlive, ring.StateDraining, ring.StateSuspect:
			ask = append(ask, m)
		default:
			// Gone in this node's view: if that happened during the pause, this node's own
			// view is what is stale, and the peer must be asked all the same.
			if ago, ok := n.ring.GoneSince(m.ID); ok && ago <= window {
				ask = append(ask, m)
			}
		}
	}
	for _, m := range p.Members() {
		add(m)
	}
	for len(ask) > 0 {
		replies := make([]takeoverReply, len(ask))
		errs := make([]error, len(ask))
		var wg sync.WaitGroup
		for i, m := range ask {
			wg.Go(func() {
				out, err := n.peers.Call(ctx, m.HTTPURL(), "/internal/v1/nodes/"+n.id+"/takeover", "application/json", nil)
				if err == nil {
					err = json.Unmarshal(out, &replies[i])
				}
				errs[i] = err
			})
		}
		wg.Wait()
		round := ask
		ask = nil
		for i, m := range round {
			switch {
			case errs[i] != nil:
				return "peer " + m.ID + " could not be asked whether it took over: " + errs[i].Error()
			case replies[i].TakenOver && time.Duration(replies[i].AgoMS)*time.Millisecond <= window:
				return "peer " + m.ID + " took over from this node during the pause"
			}
			for _, id := range replies[i].Nodes {
				if !asked[id] {
					// A node this one has not heard of yet (it joined during the pause).
					if mm, ok := n.ring.Placement().Member(id); ok {
						add(mm)
					} else {
						return "peer " + m.ID + " knows a node this one cannot reach yet: " + id
					}
				}
			}
		}
	}
	return ""
}

// handleTakeover answers a node woken from a pause: did this node take over from it, and when.
func (n *Node) handleTakeover(w http.ResponseWriter, r *http.Request) {
	if _, err := n.peers.Verify(r); err != nil {
		n.metrics.refused.WithLabelValues("peer_auth").Inc()
		protocol.WriteError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, err.Error())
		return
	}
	reply := takeoverReply{Nodes: []string{}}
	if ago, ok := n.takenOverSince(r.PathValue("node")); ok {
		reply.TakenOver, reply.AgoMS = true, max(ago.Milliseconds(), 0)
	}
	for _, m := range n.ring.Placement().Nodes() {
		reply.Nodes = append(reply.Nodes, m.ID)
	}
	protocol.WriteJSON(w, reply)
}

// noteTakeover records that this node started a room afresh while id, a previous owner, was
// silent.
func (n *Node) noteTakeover(ids []string) {
	n.takeMu.Lock()
	defer n.takeMu.Unlock()
	now := time.Now()
	for _, id := range ids {
		n.tookOver[id] = now
	}
}

// takenOverSince reports how long ago this node last took over from id: declared it dead or
// gone, or started one of its rooms afresh while it was silent.
func (n *Node) takenOverSince(id string) (time.Duration, bool) {
	ago, ok := n.ring.GoneSince(id)
	n.takeMu.Lock()
	at, took := n.tookOver[id]
	n.takeMu.Unlock()
	if took && (!ok || time.Since(at) < ago) {
		ago, ok = time.Since(at), true
	}
	return ago, ok
}

// dropAll closes every room after a pause; their clients reconnect to the owner.
func (n *Node) dropAll(gap time.Duration, why string) {
	rooms := n.rooms.all()
	n.log.Warn("this node was paused longer than the failure timeout and its rooms may be served elsewhere; dropping every room",
		"paused", gap.Round(time.Millisecond), "rooms", len(rooms), "why", why)
	p := n.ring.Placement()
	for _, r := range rooms {
		o, _ := p.Owner(r.name)
		n.rooms.remove(r)
		r.closeAll(farewell{code: protocol.CloseMoved, flush: false, reason: movedReason(o.ID),
			source: func(accepted uint64) string { return movedLine(o, accepted) }})
		n.metrics.drops.WithLabelValues("stale_node").Inc()
	}
}
