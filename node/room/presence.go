package room

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/protocol"
)

// presenceOut queues a presence frame to the connections that asked for presence. r.mu is held.
func (r *Room) presenceOut(p protocol.Presence) {
	b, _ := json.Marshal(p)
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, b)
	if err != nil {
		panic(err)
	}
	for s := range r.subs {
		if s.presence && !s.send(outFrame{shared: pm}) {
			r.dropSub(s)
		}
	}
}

// addMember counts a connection of client; its first one joins the room. r.mu is held.
func (r *Room) addMember(client string) {
	r.members[client]++
	if r.members[client] == 1 {
		r.memberChanged(client, true)
		r.memberEvent(client, true)
	}
}

// removeMember uncounts a connection of client; its last one leaves the room. r.mu is held.
func (r *Room) removeMember(client string) {
	r.members[client]--
	if r.members[client] <= 0 {
		delete(r.members, client)
		r.memberChanged(client, false)
		r.memberEvent(client, false)
	}
}

// memberChanged announces a join or leave: as an event in small rooms, folded into the next
// interval summary in large ones. r.mu is held.
func (r *Room) memberChanged(client string, joined bool) {
	if len(r.members) <= r.cfg.PresenceAnnounceMax && r.timer == nil {
		ev := protocol.PresenceLeave
		if joined {
			ev = protocol.PresenceJoin
		}
		r.presenceOut(protocol.Presence{Type: protocol.TypePresence, Event: ev, Client: client, Count: len(r.members)})
		return
	}
	if r.joined == nil {
		r.joined, r.left = map[string]struct{}{}, map[string]struct{}{}
	}
	if joined {
		if _, ok := r.left[client]; ok {
			delete(r.left, client)
		} else {
			r.joined[client] = struct{}{}
		}
	} else {
		if _, ok := r.joined[client]; ok {
			delete(r.joined, client)
		} else {
			r.left[client] = struct{}{}
		}
	}
	if r.timer == nil {
		r.timer = time.AfterFunc(r.cfg.PresenceInterval, r.presenceInterval)
	}
}

// presenceInterval sends the summary of what changed since the last one.
func (r *Room) presenceInterval() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timer = nil
	if r.state == closed || (len(r.joined) == 0 && len(r.left) == 0) {
		return
	}
	limit := r.cfg.PresenceAnnounceMax
	r.presenceOut(protocol.Presence{Type: protocol.TypePresence, Event: protocol.PresenceInterval,
		Count: len(r.members), Joined: sorted(r.joined, limit), Left: sorted(r.left, limit)})
	r.joined, r.left = nil, nil
}

// memberList is the presence list, capped at the announce limit. r.mu is held.
func (r *Room) memberList() []string {
	return sorted(r.members, r.cfg.PresenceAnnounceMax)
}

// sorted returns up to limit of set's keys, sorted.
func sorted[V any](set map[string]V, limit int) []string {
	out := make([]string, 0, min(len(set), limit))
	for k := range set {
		if len(out) == limit {
			break
		}
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
