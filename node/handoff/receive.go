package handoff

import (
	"context"
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
	for _, st := range b.Rooms {
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
			installed = true
			return room.Restore(m.cfg.Room, st), nil
		})
		if err == nil && !installed && m.supersede(held, st) {
			installed = true
		}
		switch {
		case err != nil:
			reply.Refused = append(reply.Refused, st.Room)
		case installed:
			reply.Accepted = append(reply.Accepted, st.Room)
			m.cfg.Metrics.RoomsGained.WithLabelValues("handoff").Inc()
			m.cfg.Log.Info("room arrived", "room", st.Room, "from", b.From, "epoch", st.Epoch, "seq", st.Seq)
		default:
			reply.Held = append(reply.Held, st.Room)
			m.cfg.Log.Warn("room arrived but a copy is here already; the sender closes its own", "room", st.Room, "from", b.From)
		}
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

// supersede settles a pushed room this node already holds. A copy of the same epoch that is not
// newer than the pushed state is the sender's own earlier push (a retry after a failed call) or
// an older copy: the pushed state replaces it and its clients resume on it. A newer copy, or one
// of another epoch, stays ("held"), and the sender closes its own.
func (m *Mover) supersede(held *room.Room, st room.State) bool {
	epoch, seq := held.Position()
	if epoch == st.Epoch && seq == st.Seq {
		return true // a retry of a push this node took already
	}
	if epoch != st.Epoch || seq > st.Seq {
		return false
	}
	m.cfg.Rooms.Remove(held)
	o, _, _ := m.owner(st.Room)
	held.Close(room.Moved(o, true))
	_, err := m.cfg.Rooms.GetOrCreate(st.Room, func() (*room.Room, error) { return room.Restore(m.cfg.Room, st), nil })
	return err == nil
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
		protocol.WriteJSON(w, Release{Status: Absent})
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
