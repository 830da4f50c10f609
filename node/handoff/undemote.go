package handoff

import (
	"context"

	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/ring"
)

// Undemote settles a room demoted while this node was in a minority (see room.Demote), now that
// it is back in touch: meanwhile an heir may have promoted its replica, or the majority started
// the room afresh, and taken writes. So the room stays held until every other live node has said
// it does not hold the room (and every node it declared dead, unless gone: see below); then it
// writes again. A node that holds it hands it here (the pull
// of Acquire), where its copy supersedes the demoted one. It reports whether the room is settled:
// undemoted, or no longer this node's to settle (gone from here, or owned elsewhere by the ring,
// whose hand-off decides at the receiver). A node that cannot be asked leaves it held: it may
// hold writes nobody else has.
func (m *Mover) Undemote(ctx context.Context, r *room.Room) bool {
	name := r.Name()
	if !r.Demoted() || m.cfg.Rooms.Get(name) != r {
		return true
	}
	o, p, ok := m.owner(name)
	if !ok || o.ID != m.self {
		return true
	}
	// Nodes the ring declared dead too: back from a minority, this node's ring lags, and may call
	// dead the very heir that promoted the room. One that cannot be reached and has not answered
	// a heartbeat lately is gone.
	var asked []ring.Member
	for _, c := range p.Members() {
		if c.Role == ring.RoleNode && c.State != ring.StateLeft && c.ID != m.self {
			asked = append(asked, c)
		}
	}
	replies, errs := m.askAll(ctx, asked, name)
	for i, c := range asked {
		switch reply := replies[i]; {
		case errs[i] != nil && !c.Live() && (m.cfg.Heard == nil || !m.cfg.Heard(c.ID)):
		case errs[i] != nil:
			m.cfg.Log.Debug("demoted room stays held: a node cannot be asked whether it holds it", "room", name, "peer", c.ID, "err", errs[i])
			return false
		case reply.Status == Absent, reply.Status == Moved && reply.To == m.self:
		default:
			return false // held elsewhere, or on its way here
		}
	}
	if m.cfg.Rooms.Get(name) != r {
		return true // a copy from elsewhere superseded it meanwhile
	}
	r.Undemote()
	m.cfg.Log.Info("demoted room writes again: no other node holds it", "room", name)
	return true
}
