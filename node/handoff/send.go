package handoff

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/ring"
)

// chunkRooms and chunkBytes bound one hand-off call: its rooms are frozen from the snapshot
// until the receiver answers, so a call carries at most this many rooms and (past its first
// room) this much history and webhook events.
const (
	chunkRooms = 64
	chunkBytes = 8 << 20
)

// parallel is how many hand-off batches a node sends at once.
const parallel = 4

// chunks splits rooms into hand-off calls within chunkRooms and chunkBytes, size giving each
// room's history bytes.
func chunks[R any](rooms []R, size func(R) int) [][]R {
	var out [][]R
	start, sum := 0, 0
	for i, r := range rooms {
		b := size(r)
		if i > start && (i-start == chunkRooms || sum+b > chunkBytes) {
			out = append(out, rooms[start:i])
			start, sum = i, 0
		}
		sum += b
	}
	if start < len(rooms) {
		out = append(out, rooms[start:])
	}
	return out
}

// Rebalance hands off every room the current placement gives to another node, one batch per
// gainer, gainers in parallel. Rooms that could not be handed off stay (thawed, within their
// lease) for the next pass. A chunk not started when the placement changes is left to the pass
// the change brings. Parked rooms are settled with their receiver first (see settle).
func (m *Mover) Rebalance(ctx context.Context) {
	if m.cfg.Gate.Stale() {
		return // no state leaves a node that may be stale; the retry comes after the decision
	}
	p := m.cfg.Ring.Placement()
	now := time.Now()
	groups := map[string][]*room.Room{}
	owners := map[string]ring.Member{}
	var parked []*room.Room
	for _, r := range m.cfg.Rooms.All() {
		if _, _, _, ok := r.Parked(); ok {
			parked = append(parked, r)
			continue
		}
		o, ok := p.Owner(r.Name())
		if !ok || o.ID == m.self {
			r.Regain()
			continue
		}
		if r.Lease(m.leaseUntil(o.ID, r.Lost(now)), now) {
			m.cfg.Metrics.Expired.Inc()
			m.cfg.Log.Warn("room stops taking writes: its new owner has been out of reach past the lease, and may start it afresh",
				"room", r.Name(), "owner", o.ID, "lease", m.leaseOf())
		}
		groups[o.ID] = append(groups[o.ID], r)
		owners[o.ID] = o
	}
	// A chunk's rooms are frozen from the start of its hand-off to its end. A few chunks at a
	// time keep the machine busy; starting them all at once would freeze every room for the
	// whole drain (10,000 rooms: a 2.3 s write pause for each instead of one chunk's time).
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	run := func(f func()) {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			if m.cfg.Ring.Placement().Version() != p.Version() {
				return // the owners moved again: the next pass works from the new placement
			}
			f()
		})
	}
	for _, r := range parked {
		run(func() { m.settle(ctx, p, r) })
	}
	for id, rooms := range groups {
		for _, chunk := range chunks(rooms, (*room.Room).StateBytes) {
			run(func() { m.handOff(ctx, owners[id], p.Version(), chunk) })
		}
	}
	wg.Wait()
}

// settle resolves a parked room with the receiver of the hand-off whose reply never came. If
// the receiver holds the room, its copy is the room (it may have taken writes) and this one
// closes; if it fences the attempt, this copy goes on at a term above the fenced one (thawed
// here, or handed off by the next pass); if the receiver is gone from the ring, its copy may
// have taken writes nobody can get back, so this one goes on in a new epoch (clients that
// resume get a reset rather than a fork). A receiver that cannot be reached leaves the room
// parked for the next pass.
func (m *Mover) settle(ctx context.Context, p *ring.Placement, r *room.Room) {
	to, epoch, term, ok := r.Parked()
	if !ok {
		return
	}
	c, known := p.Member(to)
	if !known || !c.Live() {
		if m.cfg.Copied == nil {
			m.refound(r, to)
		} else {
			m.settleGone(ctx, p, r, to, epoch, term)
		}
		return
	}
	start := time.Now()
	var reply Fenced
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	body, _ := json.Marshal(Fence{Epoch: epoch, Term: term + 1})
	out, err := m.cfg.Peers.Call(ctx, c.HTTPURL(), FencePath(r.Name()), "application/json", body)
	if err == nil {
		err = json.Unmarshal(out, &reply)
	}
	if err != nil {
		m.cfg.Log.Warn("cannot settle a parked room with the node it was handed to; it stays frozen", "room", r.Name(), "peer", to, "err", err)
		return
	}
	m.reach(to, start)
	switch reply.Status {
	case Settled:
		if r.Settle(term + 2) {
			m.cfg.Metrics.Settled.WithLabelValues("fenced").Inc()
			m.cfg.Log.Info("parked room settled: the receiver never took it", "room", r.Name(), "peer", to, "term", term+2)
		}
	case Held:
		o, _ := p.Owner(r.Name())
		m.noteSent(r.Name(), to)
		m.cfg.Rooms.Remove(r)
		if reply.Epoch == epoch && reply.Term == term+1 {
			r.Handed() // it holds this very attempt, held messages and all
		}
		r.Close(room.Moved(o, true))
		m.cfg.Metrics.Settled.WithLabelValues("held").Inc()
		m.cfg.Log.Info("parked room settled: the receiver holds it, this copy closes", "room", r.Name(), "peer", to,
			"epoch", reply.Epoch, "term", reply.Term, "seq", reply.Seq)
	}
}

// settleGone settles, with replication on, a parked room whose receiver is gone: the receiver
// acked nothing its replicas did not hold (see replica.Replicator.AwaitSeeded), so every other
// live node is asked. One that holds a replica copy at a later term of this epoch (this one
// included: the receiver's heir is often the node the room came from) holds the room as the
// receiver had it, and promotes it: this copy closes. When none holds anything of it,
// nothing acked was lost with the receiver, and this copy goes on in its epoch, at a term above
// the attempt's. Otherwise (a node holds the room live, or cannot be asked), the next pass asks
// again.
func (m *Mover) settleGone(ctx context.Context, p *ring.Placement, r *room.Room, to, epoch string, term uint64) {
	var asked []ring.Member
	for _, c := range p.Members() {
		if c.Role == ring.RoleNode && c.Live() && c.ID != m.self {
			asked = append(asked, c)
		}
	}
	replies, errs := m.askAll(ctx, asked, r.Name())
	newer := ""
	if c, ok := m.cfg.Copied(r.Name()); ok && c.Epoch == epoch && c.Term > term {
		newer = m.self // this node is the receiver's heir: the room came back to where it was
	}
	for i, c := range asked {
		switch reply := replies[i]; {
		case errs[i] != nil:
			m.cfg.Log.Warn("cannot settle a parked room whose receiver is gone: a node cannot be asked; it stays frozen", "room", r.Name(), "peer", c.ID, "err", errs[i])
			return
		case reply.Status != Absent && !(reply.Status == Moved && reply.To == m.self):
			return // held live there, or on its way: settled once it is handed on
		case reply.Copy != nil && reply.Copy.Epoch == epoch && reply.Copy.Term > term:
			newer = c.ID
		}
	}
	if newer != "" {
		o, _ := p.Owner(r.Name())
		m.cfg.Rooms.Remove(r)
		r.Close(room.Moved(o, true))
		m.cfg.Metrics.Settled.WithLabelValues("replica").Inc()
		m.cfg.Log.Info("parked room settled: its receiver is gone, and a replica of the receiver's copy holds it; this copy closes",
			"room", r.Name(), "peer", to, "replica", newer)
		return
	}
	if r.Settle(term + 2) {
		m.cfg.Metrics.Settled.WithLabelValues("kept").Inc()
		m.cfg.Log.Info("parked room settled: its receiver is gone and no node holds the room; it goes on here in its epoch",
			"room", r.Name(), "peer", to, "term", term+2)
	}
}

// refound puts a parked room whose receiver is gone in a new epoch: its clients are sent to
// reconnect (4001 to the owner by this node's ring) and get a reset, and the room goes on with
// its messages here until the next pass hands it to its owner.
func (m *Mover) refound(r *room.Room, to string) {
	st := r.Snapshot().Refound()
	m.cfg.Rooms.Remove(r)
	o, _, _ := m.owner(r.Name())
	r.Close(room.Moved(o, true))
	if _, err := m.cfg.Rooms.GetOrCreate(st.Room, func() (*room.Room, error) { return room.Restore(m.cfg.Room, st), nil }); err != nil {
		m.cfg.Log.Warn("parked room lost", "room", st.Room, "err", err)
		return
	}
	m.cfg.Metrics.Settled.WithLabelValues("refounded").Inc()
	m.cfg.Log.Warn("parked room's receiver is gone; it goes on here in a new epoch (clients resuming get a reset)",
		"room", st.Room, "peer", to, "epoch", st.Epoch)
}

// Lost reports whether the node holds a room the current placement gives to another node, or a
// parked room to settle.
func (m *Mover) Lost() bool {
	p := m.cfg.Ring.Placement()
	for _, r := range m.cfg.Rooms.All() {
		if o, ok := p.Owner(r.Name()); ok && o.ID != m.self {
			return true
		}
		if _, _, _, parked := r.Parked(); parked {
			return true
		}
	}
	return false
}

// handOff moves rooms to the node to: check it owns them, freeze, send, and on acceptance close
// them here.
func (m *Mover) handOff(ctx context.Context, to ring.Member, version string, rooms []*room.Room) {
	rooms = m.ownedBy(ctx, to, version, rooms)
	var frozen []*room.Room
	batch := Batch{From: m.self, Ring: version}
	tails := map[string]bool{}
	for _, r := range rooms {
		if r.Freeze() {
			frozen = append(frozen, r)
			st := r.Snapshot()
			if m.cfg.Holds != nil {
				// A replica of the room already holds its messages up to some seq: a
				// promotion, with only the tail to send.
				if st = st.Tail(m.cfg.Holds(r, to.ID)); st.Base > 0 {
					tails[r.Name()] = true
				}
			}
			batch.Rooms = append(batch.Rooms, st)
		}
	}
	if len(frozen) == 0 {
		return
	}
	start := time.Now()
	reply, size, err := m.send(ctx, to, batch)
	if err == nil && len(reply.Whole) > 0 {
		reply, size = m.sendWhole(ctx, to, version, frozen, reply, size, tails)
	}
	if err != nil {
		// The receiver may have installed the rooms before the call failed: keep them frozen
		// until that is settled with it (see settle).
		for _, r := range frozen {
			r.Park(to.ID)
		}
		m.cfg.Metrics.Handoffs.WithLabelValues("failed").Add(float64(len(frozen)))
		m.cfg.Log.Warn("hand-off failed; its rooms stay frozen until a retry settles it", "peer", to.ID, "rooms", len(frozen), "err", err)
		return
	}
	done := map[string]bool{} // true: installed from this batch; false: a copy was there already
	for _, name := range reply.Held {
		done[name] = false
	}
	for _, name := range reply.Accepted {
		done[name] = true
	}
	bye := room.Moved(to, true)
	for _, r := range frozen {
		installed, ok := done[r.Name()]
		if !ok {
			r.Unfreeze()
			continue
		}
		m.noteSent(r.Name(), to.ID)
		m.cfg.Rooms.Remove(r)
		if installed {
			r.Handed()
		}
		r.Close(bye)
		sent := "whole"
		if tails[r.Name()] {
			sent = "tail" // the receiver held the rest as a replica
		}
		m.cfg.Log.Info("room handed off", "room", r.Name(), "to", to.ID, "ring", version, "sent", sent)
	}
	took := time.Since(start)
	for _, name := range reply.Accepted {
		if tails[name] {
			m.cfg.Metrics.Tails.Inc()
		}
	}
	moved := float64(len(reply.Accepted) + len(reply.Held))
	m.cfg.Metrics.Handoffs.WithLabelValues("ok").Add(moved)
	m.cfg.Metrics.Handoffs.WithLabelValues("refused").Add(float64(len(reply.Refused)))
	m.cfg.Metrics.Bytes.Add(float64(size))
	m.cfg.Metrics.Seconds.Observe(took.Seconds())
	m.cfg.Metrics.RoomsLost.Add(moved)
	if len(reply.Refused) > 0 {
		m.cfg.Log.Info("hand-off refused for now: the receiver's ring disagrees; will retry", "peer", to.ID, "rooms", len(reply.Refused))
	}
	m.cfg.Log.Debug("hand-off batch", "peer", to.ID, "rooms", len(frozen), "accepted", len(reply.Accepted),
		"held", len(reply.Held), "bytes", size, "took", took)
}

// sendWhole sends whole the rooms of a hand-off to to that went as tails its replica copies
// could not complete (reply.Whole), and returns the two replies and sizes merged. On an error
// those rooms are parked, as after any failed call: the receiver may have installed them.
func (m *Mover) sendWhole(ctx context.Context, to ring.Member, version string, frozen []*room.Room, reply Reply, size int, tails map[string]bool) (Reply, int) {
	whole := Batch{From: m.self, Ring: version}
	var again []*room.Room
	for _, r := range frozen {
		if slices.Contains(reply.Whole, r.Name()) {
			again = append(again, r)
			whole.Rooms = append(whole.Rooms, r.Snapshot())
			delete(tails, r.Name())
		}
	}
	more, n, err := m.send(ctx, to, whole)
	if err != nil {
		for _, r := range again {
			r.Park(to.ID)
		}
		m.cfg.Metrics.Handoffs.WithLabelValues("failed").Add(float64(len(again)))
		m.cfg.Log.Warn("hand-off failed; its rooms stay frozen until a retry settles it", "peer", to.ID, "rooms", len(again), "err", err)
		reply.Whole = nil
		return reply, size // the rest of the first reply stands
	}
	reply.Accepted = append(reply.Accepted, more.Accepted...)
	reply.Held = append(reply.Held, more.Held...)
	reply.Refused = append(reply.Refused, more.Refused...)
	reply.Whole = nil
	return reply, size + n
}

// send posts a batch (or check) to a node and returns its reply and the batch's size in bytes.
func (m *Mover) send(ctx context.Context, to ring.Member, b Batch) (Reply, int, error) {
	var reply Reply
	body, err := Encode(b)
	if err != nil {
		return reply, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	start := time.Now()
	out, err := m.cfg.Peers.Call(ctx, to.HTTPURL(), Path, ContentType, body)
	if err == nil {
		err = json.Unmarshal(out, &reply)
	}
	if err == nil {
		m.reach(to.ID, start)
	}
	return reply, len(body), err
}

// ownedBy returns the rooms the node to says it owns, after the wait for its ring that a batch
// would have. Nothing is frozen meanwhile.
func (m *Mover) ownedBy(ctx context.Context, to ring.Member, version string, rooms []*room.Room) []*room.Room {
	check := Batch{From: m.self, Ring: version, Check: true, Rooms: make([]room.State, len(rooms))}
	for i, r := range rooms {
		check.Rooms[i].Room = r.Name()
	}
	reply, _, err := m.send(ctx, to, check)
	if err != nil {
		m.cfg.Log.Warn("hand-off check failed; will retry", "peer", to.ID, "rooms", len(rooms), "err", err)
		return nil
	}
	owned := map[string]bool{}
	for _, name := range reply.Accepted {
		owned[name] = true
	}
	var out []*room.Room
	for _, r := range rooms {
		if owned[r.Name()] {
			out = append(out, r)
		}
	}
	return out
}
