package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/protocol"
)

// ServeHandoff receives a batch from the rooms' previous owner; body is the verified request
// body. It accepts a room only if its own placement names it the owner, waiting up to FenceWait
// for gossip to catch up.
func (m *Mover) ServeHandoff(w http.ResponseWriter, r *http.Request, body []byte) {
	b, err := Decode(body)
	if err != nil {
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
		return
	}
	m.awaitOwnership(r.Context(), b.Rooms)
	var reply Reply
	if b.Check {
		for _, st := range b.Rooms {
			if m.owns(st.Room) && !m.cfg.Gate.Stale() {
				reply.Accepted = append(reply.Accepted, st.Room)
			} else {
				reply.Refused = append(reply.Refused, st.Room)
			}
		}
		protocol.WriteJSON(w, reply)
		return
	}
	var arrived []*room.Room
	for _, st := range b.Rooms {
		if st.Base > 0 {
			whole, ok := st, false
			if m.cfg.Complete != nil {
				whole, ok = m.cfg.Complete(b.From, st)
			}
			if !ok {
				reply.Whole = append(reply.Whole, st.Room)
				continue
			}
			st = whole
		}
		if err := st.Validate(); err != nil {
			m.cfg.Log.Warn("refusing malformed room state", "room", st.Room, "peer", b.From, "err", err)
			reply.Refused = append(reply.Refused, st.Room)
			continue
		}
		if !m.owns(st.Room) || m.closed() || m.cfg.Gate.Stale() {
			reply.Refused = append(reply.Refused, st.Room)
			continue
		}
		installed := false
		held, err := m.cfg.Rooms.GetOrCreate(st.Room, func() (*room.Room, error) {
			if m.isFenced(st) {
				return nil, errFenced
			}
			installed = true
			return room.Restore(m.cfg.Room, promoted(st)), nil
		})
		if err == nil && !installed && m.supersede(held, st) {
			installed = true
		}
		switch {
		case errors.Is(err, errFenced):
			reply.Refused = append(reply.Refused, st.Room)
			m.cfg.Log.Info("refusing a hand-off attempt its sender settled as not taken", "room", st.Room, "from", b.From, "term", st.Term+1)
		case err != nil:
			reply.Refused = append(reply.Refused, st.Room)
		case installed:
			if m.cfg.Arrived != nil {
				m.cfg.Arrived(st.Room)
			}
			if r := m.cfg.Rooms.Get(st.Room); r != nil {
				arrived = append(arrived, r)
			}
			reply.Accepted = append(reply.Accepted, st.Room)
			m.cfg.Metrics.RoomsGained.WithLabelValues("handoff").Inc()
			m.cfg.Log.Info("room arrived", "room", st.Room, "from", b.From, "epoch", st.Epoch, "seq", st.Seq)
		default:
			reply.Held = append(reply.Held, st.Room)
			m.cfg.Log.Warn("room arrived but a copy is here already; the sender closes its own", "room", st.Room, "from", b.From)
		}
	}
	if len(arrived) > 0 && m.cfg.Seeded != nil {
		// The sender closes its copies on this answer: the rooms must be on their replicas
		// here first, or a crash of this node now would lose them. Bounded well within the
		// sender's wait for the answer.
		ctx, cancel := context.WithTimeout(r.Context(), m.cfg.Timeout/2)
		m.cfg.Seeded(ctx, arrived)
		cancel()
	}
	protocol.WriteJSON(w, reply)
}

// awaitOwnership waits until this node's placement names it the owner of every room, for up to
// FenceWait, or until ctx ends or the node closes.
func (m *Mover) awaitOwnership(ctx context.Context, rooms []room.State) {
	changes, stop := m.cfg.Ring.Subscribe() // before the first look, so no change is missed
	defer stop()
	t := time.NewTimer(m.cfg.FenceWait)
	defer t.Stop()
	for !m.ownsAll(rooms) {
		select {
		case <-changes:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		case <-m.cfg.Done:
			return
		}
	}
}

func (m *Mover) ownsAll(rooms []room.State) bool {
	for _, st := range rooms {
		if !m.owns(st.Room) {
			return false
		}
	}
	return true
}

// promoted is received state as this node installs it: one term above its sender's.
func promoted(st room.State) room.State {
	st.Term = max(st.Term, 1) + 1
	return st
}

// supersede settles a pushed room this node already holds, comparing (epoch, term, seq), never
// seq alone. In one epoch, the higher term is the later owner and wins; at the pushed state's
// own term (this node installed that push already, the sender retries), the held copy stays
// unless it is behind. Of copies in two epochs, the held one stays ("held": the sender closes
// its own), unless it cannot have taken writes since the other started: it is parked here (a
// hand-off of it is unsettled), or demoted (this node was cut off in a minority since its last
// write, while the other side went on).
func (m *Mover) supersede(held *room.Room, st room.State) bool {
	epoch, seq := held.Position()
	term, next := held.Term(), promoted(st).Term
	_, _, _, parked := held.Parked()
	switch {
	case epoch == st.Epoch && term == next && seq == st.Seq:
		return true // a retry of a push this node took already
	case epoch == st.Epoch && term == next && seq > st.Seq:
		return false // took writes since; the retry is stale
	case epoch == st.Epoch && term > next:
		return false // a later owner's copy
	case epoch == st.Epoch && term < next && seq > st.Seq && !parked:
		// Written here beyond the newer owner's state in an older term: two writers in one
		// epoch. The later owner's copy wins; this one's clients get a reset on resume.
		m.cfg.Log.Error("two copies of a room diverged in one epoch; the later owner's copy wins",
			"room", st.Room, "epoch", epoch, "held_term", term, "held_seq", seq, "pushed_term", next, "pushed_seq", st.Seq)
	case epoch != st.Epoch && !parked && !held.Demoted():
		return false
	}
	m.cfg.Rooms.Remove(held)
	o, _, _ := m.owner(st.Room)
	held.Close(room.Moved(o, true))
	_, err := m.cfg.Rooms.GetOrCreate(st.Room, func() (*room.Room, error) {
		if m.isFenced(st) {
			return nil, errFenced
		}
		return room.Restore(m.cfg.Room, promoted(st)), nil
	})
	return err == nil
}

// errFenced: the hand-off attempt was settled with its sender as never to be installed.
var errFenced = errors.New("hand-off attempt fenced")

// isFenced reports whether st is an attempt this node promised its sender never to install.
func (m *Mover) isFenced(st room.State) bool {
	m.fenceMu.Lock()
	defer m.fenceMu.Unlock()
	f, ok := m.fences[st.Room]
	return ok && f.epoch == st.Epoch && promoted(st).Term <= f.term
}

// ServeFence settles, for its sender, a hand-off whose reply it never heard (see settle): if
// this node holds the room, it says which copy; if not, it promises never to install the attempt
// (nor an older one of that epoch), and the sender goes on with its copy. The promise and the
// install of a delayed attempt are ordered by the room table's lock, so no attempt is installed
// after its sender heard "fenced".
func (m *Mover) ServeFence(w http.ResponseWriter, r *http.Request, body []byte) {
	var f Fence
	if err := json.Unmarshal(body, &f); err != nil || f.Epoch == "" || f.Term == 0 {
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, "a fence needs the room's epoch and the term it would have been installed at")
		return
	}
	name := r.PathValue("room")
	if err := protocol.ValidRoom(name); err != nil {
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
		return
	}
	if m.cfg.Gate.AwaitFresh(r.Context()) != nil {
		protocol.WriteJSON(w, Fenced{Status: Busy})
		return
	}
	held, err := m.cfg.Rooms.GetOrCreate(name, func() (*room.Room, error) {
		m.fence(name, f)
		return nil, errFenced
	})
	if err == nil {
		epoch, seq := held.Position()
		protocol.WriteJSON(w, Fenced{Status: Held, Epoch: epoch, Term: held.Term(), Seq: seq})
		return
	}
	m.cfg.Metrics.Fences.Inc()
	m.cfg.Log.Info("fenced a hand-off attempt whose reply its sender lost", "room", name, "epoch", f.Epoch, "term", f.Term)
	protocol.WriteJSON(w, Fenced{Status: Settled})
}

// fence records f for room. Past maxFences it drops those older than fenceFor, then the oldest.
func (m *Mover) fence(name string, f Fence) {
	now := time.Now()
	m.fenceMu.Lock()
	defer m.fenceMu.Unlock()
	if old, ok := m.fences[name]; ok && old.epoch == f.Epoch && old.term > f.Term {
		f.Term = old.term
	}
	m.fences[name] = fence{epoch: f.Epoch, term: f.Term, at: now}
	bound(m.fences, maxFences, fenceFor, now, func(f fence) time.Time { return f.at })
}

// ServeRelease is the pull: a node that owns a room by its placement asks this node, a recent
// owner, to hand the room over now. The request is already verified as a peer's.
func (m *Mover) ServeRelease(w http.ResponseWriter, r *http.Request) {
	if m.cfg.Gate.AwaitFresh(r.Context()) != nil {
		protocol.WriteJSON(w, Release{Status: Busy}) // still deciding after a pause: ask again
		return
	}
	name := r.PathValue("room")
	held := m.cfg.Rooms.Get(name)
	if held == nil {
		reply := Release{Status: Absent}
		if to, ok := m.sentTo(name); ok {
			reply = Release{Status: Moved, To: to} // the asker may not know the receiver yet
		}
		if m.cfg.Copied != nil {
			if c, ok := m.cfg.Copied(name); ok {
				reply.Copy = &c
			}
		}
		protocol.WriteJSON(w, reply)
		return
	}
	o, p, ok := m.owner(name)
	if !ok || o.ID == m.self {
		protocol.WriteJSON(w, Release{Status: Owner})
		return
	}
	m.handOff(r.Context(), o, p.Version(), []*room.Room{held})
	if m.cfg.Rooms.Get(name) == held {
		protocol.WriteJSON(w, Release{Status: Busy})
		return
	}
	protocol.WriteJSON(w, Release{Status: Moved, To: o.ID})
}
