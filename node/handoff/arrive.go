package handoff

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/roost-dev/roost/internal/loop"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/ring"
)

// Acquire returns the room if this node owns it, creating it only when no live previous owner
// holds it (see the package comment). It fails with ErrNotOwner, a *HeldError, room.ErrStale,
// Admit's error, or ctx's.
func (m *Mover) Acquire(ctx context.Context, name string) (*room.Room, error) {
	if r := m.cfg.Rooms.Get(name); r != nil {
		return r, nil
	}
	v, err, _ := m.arrivals.Do(name, func() (any, error) { return m.arrive(ctx, name) })
	if err != nil {
		return nil, err
	}
	return v.(*room.Room), nil
}

func (m *Mover) arrive(ctx context.Context, name string) (*room.Room, error) {
	// A previous owner that answers "busy" is alive and handing the room over: wait for it (up
	// to a hard cap). Only one that stays silent for ArriveTimeout is given up on.
	silentSince, hardCap := time.Now(), time.Now().Add(4*m.cfg.ArriveTimeout)
	var chase chase
	for {
		// Just woken from a pause, the node lets gossip bring its ring up to date before it
		// decides anything about a room; the client waits meanwhile rather than failing.
		if err := m.cfg.Gate.AwaitQuarantine(ctx); err != nil {
			return nil, err
		}
		if r := m.cfg.Rooms.Get(name); r != nil {
			return r, nil
		}
		o, p, ok := m.owner(name)
		if !ok || o.ID != m.self {
			return nil, ErrNotOwner
		}
		pending, heard := false, false
		var silent []string
		asked := m.holders(name, p)
		asked = append(asked, chase.targets(p, asked)...)
		replies, errs := m.askAll(ctx, asked, name)
		absent := map[string]bool{}
		for i, c := range asked {
			if errs[i] == nil && replies[i].Status == Absent {
				absent[c.ID] = true
			}
		}
		for i, c := range asked {
			reply, err := replies[i], errs[i]
			switch {
			case err != nil:
				pending = true
				silent = append(silent, c.ID)
			case reply.Status == Busy:
				pending, heard = true, true
			case reply.Status == Owner:
				return nil, &HeldError{To: c}
			case reply.Status == Moved:
				// Handed on, maybe to a node this one's ring does not list yet: not "nobody
				// holds it" until that node too says it does not.
				if chase.follow(m, name, p, reply.To, absent) {
					pending, heard = true, true
				}
			}
		}
		chase.round++
		if heard {
			silentSince = time.Now()
		}
		if r := m.cfg.Rooms.Get(name); r != nil {
			return r, nil
		}
		if !pending {
			if err := m.awaitSilence(ctx, name, p); err != nil {
				return nil, err
			}
			if m.cfg.Promote != nil {
				// Nobody live holds it: the copy its dead owner replicated here, if there is
				// one, is the room, in its epoch, with every acknowledged message.
				r, err := m.cfg.Promote(ctx, name)
				if err != nil {
					return nil, err
				}
				if r != nil {
					return r, nil
				}
			}
			return m.create(name, "fresh")
		}
		if now := time.Now(); now.Sub(silentSince) > m.cfg.ArriveTimeout || now.After(hardCap) {
			m.cfg.Log.Warn("previous owner did not hand the room over in time; starting it afresh with a new epoch", "room", name, "silent", silent)
			// Recorded first: a silent owner that wakes from a pause asks whether it was taken over.
			m.cfg.Gate.NoteTakeover(silent)
			return m.create(name, "timeout")
		}
		if err := loop.Sleep(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// chase follows "moved" answers during one arrival: the nodes they named, and the round each was
// first named in.
type chase struct {
	round int
	named map[string]int
}

// targets are the nodes named so far that current lists alive and asked does not include.
func (c *chase) targets(current *ring.Placement, asked []ring.Member) []ring.Member {
	var out []ring.Member
	for id := range c.named {
		if slices.ContainsFunc(asked, func(a ring.Member) bool { return a.ID == id }) {
			continue
		}
		if mem, ok := current.Member(id); ok && mem.Live() {
			out = append(out, mem)
		}
	}
	return out
}

// follow takes in an answer that room moved to node to, and reports whether the room may still be
// held there (or further on). It may not when to is gone from the ring, or when to itself, asked
// in this round after it was first named (so after it had installed the room), answered "absent":
// the copy it took was lost with it (an idle room reclaimed, a restart). to is this node: the
// room is not here, so it is where this node handed it, if anywhere.
func (c *chase) follow(m *Mover, name string, current *ring.Placement, to string, absent map[string]bool) bool {
	if to == m.self {
		next, ok := m.sentTo(name)
		if !ok || next == m.self {
			return false
		}
		to = next
	}
	if mem, ok := current.Member(to); ok && !mem.Live() {
		return false
	}
	first, seen := c.named[to]
	if !seen {
		if c.named == nil {
			c.named = map[string]int{}
		}
		c.named[to] = c.round
		return true
	}
	return !(first < c.round && absent[to])
}

func (m *Mover) create(name, how string) (*room.Room, error) {
	created := false
	r, err := m.cfg.Rooms.GetOrCreate(name, func() (*room.Room, error) {
		if m.cfg.Gate.Stale() || m.cfg.Gate.Quarantined() || !m.cfg.Ring.Ready() {
			return nil, room.ErrStale // not placed with the rest of the cluster yet, or just woken
		}
		if !m.owns(name) {
			return nil, ErrNotOwner
		}
		if err := m.cfg.Admit(); err != nil {
			return nil, err
		}
		created = true
		return room.New(m.cfg.Room, name), nil
	})
	if created {
		m.cfg.Metrics.RoomsGained.WithLabelValues(how).Inc()
		m.cfg.Log.Debug("room created", "room", name, "how", how)
	}
	return r, err
}

// awaitSilence waits, before room is started afresh, until every recent owner of it that the
// ring no longer lists alive has stopped writing for sure, were it cut off rather than dead (see
// Config.Silent). Detection usually takes longer than that, so this rarely waits at all.
func (m *Mover) awaitSilence(ctx context.Context, name string, current *ring.Placement) error {
	if m.cfg.Silent == nil {
		return nil
	}
	m.mu.Lock()
	past := append(append([]*ring.Placement(nil), m.past...), m.alts...)
	m.mu.Unlock()
	var until time.Time
	for _, p := range past {
		o, ok := p.Owner(name)
		if !ok || o.ID == m.self {
			continue
		}
		if c, ok := current.Member(o.ID); ok && c.Live() {
			continue
		}
		if s := m.cfg.Silent(o.ID); s.After(until) {
			until = s
		}
	}
	d := time.Until(until)
	if d <= 0 {
		return nil
	}
	m.cfg.Log.Info("waiting for the room's dead owner to have stopped writing before starting it afresh", "room", name, "wait", d)
	return loop.Sleep(ctx, d)
}

// settleWindow is how long after a placement change the ring counts as unsettled: views may
// still disagree, and a room may be held by a node no placement this one saw names.
const settleWindow = time.Minute

// holders are the nodes to ask whether they hold room before it is started afresh here: its
// previous owners by the placements this node saw; and, while the ring is unsettled (a member
// drains, or the placement changed within settleWindow), every other live node. A join racing
// drains is the normal shape of a rollout, and a drainer stuck on an old ring can hold a room no
// placement seen here ever gave it.
func (m *Mover) holders(name string, current *ring.Placement) []ring.Member {
	out := m.previousOwners(name, current)
	if !m.unsettled(current) {
		return out
	}
	seen := map[string]bool{m.self: true}
	for _, c := range out {
		seen[c.ID] = true
	}
	for _, c := range current.Members() {
		if c.Role == ring.RoleNode && c.Live() && !seen[c.ID] {
			seen[c.ID] = true
			out = append(out, c)
		}
	}
	return out
}

// unsettled reports whether a member of current drains or the placement changed lately.
func (m *Mover) unsettled(current *ring.Placement) bool {
	m.mu.Lock()
	changed := m.changed
	m.mu.Unlock()
	if time.Since(changed) < settleWindow {
		return true
	}
	for _, c := range current.Members() {
		if c.Role == ring.RoleNode && c.Live() && (c.Draining || c.Leaving) {
			return true
		}
	}
	return false
}

// askAll asks every node in from, at once, to release room.
func (m *Mover) askAll(ctx context.Context, from []ring.Member, name string) ([]Release, []error) {
	replies, errs := make([]Release, len(from)), make([]error, len(from))
	var wg sync.WaitGroup
	for i, c := range from {
		wg.Go(func() { replies[i], errs[i] = m.askRelease(ctx, c, name) })
	}
	wg.Wait()
	return replies, errs
}

// previousOwners are the live members other than this node that owned room in recent placements.
func (m *Mover) previousOwners(name string, current *ring.Placement) []ring.Member {
	m.mu.Lock()
	past := append(append([]*ring.Placement(nil), m.past...), m.alts...)
	m.mu.Unlock()
	seen := map[string]bool{m.self: true}
	var out []ring.Member
	for i := len(past) - 1; i >= 0; i-- {
		o, ok := past[i].Owner(name)
		if !ok || seen[o.ID] {
			continue
		}
		seen[o.ID] = true
		if c, ok := current.Member(o.ID); ok && c.Live() {
			out = append(out, c)
		}
	}
	return out
}

func (m *Mover) askRelease(ctx context.Context, from ring.Member, name string) (Release, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	var reply Release
	out, err := m.cfg.Peers.Call(ctx, from.HTTPURL(), ReleasePath(name), "application/json", nil)
	if err == nil {
		err = json.Unmarshal(out, &reply)
	}
	return reply, err
}
