package room

import (
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/protocol"
)

// Edge legs. A router holds one connection to a room's owner however many of its clients are in
// the room (see protocol.EdgePath for its frames). At the owner that connection is a leg: a
// subscriber of the room that is sent each room frame once (presence events too: the router
// gives them to the clients that asked) and is no member itself. Each client on it is a via: it
// joins the room as any client does (counted in presence by its client id, welcomed, resumed,
// acked), is no subscriber, and has no socket: what the room sends it alone goes on its leg,
// tagged with its handle, in order with the leg's room frames. A leg dropped (slow, moved,
// closed) takes its vias with it; its router re-attaches them.

// NewLeg wraps ws, a router's edge leg, for JoinLeg.
func NewLeg(cfg *Config, ws *websocket.Conn) *Conn {
	c := NewConn(cfg, ws, "", true)
	c.isLeg = true
	return c
}

// NewVia is the router's client handle on leg, as client, for Join.
func NewVia(leg *Conn, client string, handle uint32, presence bool) *Conn {
	return &Conn{cfg: leg.cfg, leg: leg, handle: handle, client: client, presence: presence}
}

// Handle is a via's handle on its leg.
func (c *Conn) Handle() uint32 { return c.handle }

// JoinLeg subscribes leg to the room and queues to it the leg's welcome (the room's epoch and
// committed seq; no client) and what its resume res is owed, for all its clients: a leg that
// moved here resumes where its last owner left it.
func (r *Room) JoinLeg(leg *Conn, res Resume) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == closed {
		return ErrClosed
	}
	if r.cfg.Gate.Stale() {
		return ErrStale
	}
	r.lastActive = time.Now()
	r.subs[leg] = struct{}{}
	r.legs++
	leg.sendJSON(protocol.Welcome{Type: protocol.TypeWelcome, Room: r.name, Node: r.cfg.Node,
		Epoch: r.epoch, Seq: r.committed, Count: len(r.members)})
	r.replay(leg, res)
	return nil
}

// dropSub unsubscribes s, which is in r.subs; a leg takes its vias out of the room. r.mu is held.
func (r *Room) dropSub(s *Conn) {
	delete(r.subs, s)
	if !s.isLeg {
		r.removeMember(s.client)
		return
	}
	r.legs--
	for v := range r.vias {
		if v.leg == s {
			delete(r.vias, v)
			r.removeMember(v.client)
		}
	}
}

// conns is how many clients the room has, directly or through legs. r.mu is held.
func (r *Room) conns() int { return len(r.subs) - r.legs + len(r.vias) }

// sendVia puts f, a frame for the via c alone, on its leg.
func (c *Conn) sendVia(f outFrame) bool {
	c.mu.Lock()
	gone := c.closing
	c.mu.Unlock()
	if gone {
		return true
	}
	f.to, f.via = c.handle, true
	return c.leg.send(f)
}

// CloseVia ends the via c alone with code and reason: its router closes that client's socket so.
func (c *Conn) CloseVia(code int, reason string) {
	c.mu.Lock()
	gone := c.closing
	c.closing = true
	c.mu.Unlock()
	if !gone {
		c.leg.send(outFrame{to: c.handle, via: true, code: code, text: []byte(protocol.CloseReason(reason))})
	}
}

// writeVia writes a frame for one client of the leg: its header, then the frame.
func (c *Conn) writeVia(f *outFrame) error {
	if f.code != 0 {
		b := protocol.AppendEdgeHeader(make([]byte, 0, protocol.EdgeHeader+2+len(f.text)), protocol.EdgeClose, f.to)
		b = append(b, byte(f.code>>8), byte(f.code))
		return c.ws.WriteMessage(websocket.BinaryMessage, append(b, f.text...))
	}
	switch {
	case f.replay != nil:
		for _, e := range f.replay {
			kind := protocol.EdgeText
			if e.binary {
				kind = protocol.EdgeBinary
			}
			if err := c.writeTagged(kind, f.to, e.frame); err != nil {
				return err
			}
		}
		return nil
	case f.msg != nil: // not queued so today; written as the room's frame would be
		return c.writeEntry(f.msg)
	default:
		return c.writeTagged(protocol.EdgeText, f.to, f.text)
	}
}

// writeTagged writes one per-client frame: kind, handle, frame, in one WebSocket message.
func (c *Conn) writeTagged(kind byte, handle uint32, frame []byte) error {
	w, err := c.ws.NextWriter(websocket.BinaryMessage)
	if err != nil {
		return err
	}
	var h [protocol.EdgeHeader]byte
	hdr := protocol.AppendEdgeHeader(h[:0], kind, handle)
	if kind == protocol.EdgeRoom {
		hdr = hdr[:1] // a room frame has no handle
	}
	_, _ = w.Write(hdr)
	if _, err := w.Write(frame); err != nil {
		return err
	}
	return w.Close()
}
