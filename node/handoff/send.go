package handoff

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/ring"
)

// chunkRooms and chunkBytes bound one hand-off call: its rooms are frozen from the snapshot
// until the receiver answers, so a call carries at most this many rooms and (past its first
// room) this much history.
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
// gainer, gainers in parallel. Rooms that could not be handed off stay (thawed) for the next
// pass. A chunk not started when the placement changes is left to the pass the change brings.
func (m *Mover) Rebalance(ctx context.Context) {
	if m.cfg.Gate.Stale() {
		return // no state leaves a node that may be stale; the retry comes after the decision
	}
	p := m.cfg.Ring.Placement()
	groups := map[string][]*room.Room{}
	owners := map[string]ring.Member{}
	for _, r := range m.cfg.Rooms.All() {
		o, ok := p.Owner(r.Name())
		if !ok || o.ID == m.self {
			if ok && r.Parked() {
				// The ring gave it back before a hand-off settled. If the other node did take
				// it, it pushes it back here and the newer copy wins (see supersede).
				r.Unfreeze()
			}
			continue
		}
		groups[o.ID] = append(groups[o.ID], r)
		owners[o.ID] = o
	}
	// A chunk's rooms are frozen from the start of its hand-off to its end. A few chunks at a
	// time keep the machine busy; starting them all at once would freeze every room for the
	// whole drain (10,000 rooms: a 2.3 s write pause for each instead of one chunk's time).
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for id, rooms := range groups {
		for _, chunk := range chunks(rooms, (*room.Room).HistoryBytes) {
			wg.Go(func() {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				defer func() { <-sem }()
				if m.cfg.Ring.Placement().Version() != p.Version() {
					return // the owners moved again: the next pass sends these where they go now
				}
				m.handOff(ctx, owners[id], p.Version(), chunk)
			})
		}
	}
	wg.Wait()
}

// Lost reports whether the node holds a room the current placement gives to another node.
func (m *Mover) Lost() bool {
	p := m.cfg.Ring.Placement()
	for _, r := range m.cfg.Rooms.All() {
		if o, ok := p.Owner(r.Name()); ok && o.ID != m.self {
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
	for _, r := range rooms {
		if r.Freeze() {
			frozen = append(frozen, r)
			batch.Rooms = append(batch.Rooms, r.Snapshot())
		}
	}
	if len(frozen) == 0 {
		return
	}
	start := time.Now()
	reply, size, err := m.send(ctx, to, batch)
	if err != nil {
		// The receiver may have installed the rooms before the call failed: keep them frozen,
		// so a retry sends the very same state, which the receiver then accepts again.
		for _, r := range frozen {
			r.Park()
		}
		m.cfg.Metrics.Handoffs.WithLabelValues("failed").Add(float64(len(frozen)))
		m.cfg.Log.Warn("hand-off failed; its rooms stay frozen until a retry settles it", "peer", to.ID, "rooms", len(frozen), "err", err)
		return
	}
	done := map[string]bool{}
	for _, name := range reply.Accepted {
		done[name] = true
	}
	for _, name := range reply.Held {
		done[name] = true
	}
	bye := room.Moved(to, true)
	for _, r := range frozen {
		if !done[r.Name()] {
			r.Unfreeze()
			continue
		}
		m.cfg.Rooms.Remove(r)
		r.Close(bye)
		m.cfg.Log.Info("room handed off", "room", r.Name(), "to", to.ID, "ring", version)
	}
	took := time.Since(start)
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

// send posts a batch (or check) to a node and returns its reply and the batch's size in bytes.
func (m *Mover) send(ctx context.Context, to ring.Member, b Batch) (Reply, int, error) {
	var reply Reply
	body, err := Encode(b)
	if err != nil {
		return reply, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	out, err := m.cfg.Peers.Call(ctx, to.HTTPURL(), Path, ContentType, body)
	if err == nil {
		err = json.Unmarshal(out, &reply)
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
