package router

import (
	"bytes"

	"github.com/gorilla/websocket"

	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/protocol"
)

// pendingPublish is a frame of the client's that the owner has not answered yet. The owner
// answers every frame a client sends exactly once (ack or error) and in the order sent, so an
// answer with an id is the kept frame with that id, and one without is the oldest kept frame
// without: a binary publish, a publish the client gave no id, or a bad frame.
//
// The router gives an id-less publish no id of its own. An id would be needed only where the
// owner's answer is lost and the router cannot tell whether the owner took the publish — a leg
// that broke, not one the owner closed (see pending.settle) — and then only if the new owner
// remembers what the old one took (replication on, same epoch). Every id the router made up
// would take a place in the room's window of remembered ids (--dedupe-ids) for nothing in all
// other cases, pushing out the ids clients chose to make their own retries safe. A client that
// wants its publishes kept across such a break gives them ids (the Go and JavaScript clients
// always do); one that does not is told when the router cannot know.
type pendingPublish struct {
	id       string // the client's id; "" for one answered in order
	frame    []byte
	binary   bool
	seq      uint64 // the room's seq as the client's leg had seen it when the frame was first sent
	refused  bool   // the owner refused it as moved: it did not take it
	harmless bool   // a frame no owner takes (bad_json, ...): re-sending it only repeats the error
}

// cost is what a kept publish holds: its frame, its id and its place in pending. The overhead
// bounds how many PendingBytes can keep: there is no bound by count besides.
func (p pendingPublish) cost() int { return cap(p.frame) + len(p.id) + 96 }

// messageType is the WebSocket message type the frame came as.
func (p pendingPublish) messageType() int {
	if p.binary {
		return websocket.BinaryMessage
	}
	return websocket.TextMessage
}

// pending are one client's publishes the owner has not answered, in the order sent, kept to be
// re-sent after a move. Whoever holds it (a proxied session, a client of an edge leg) guards it
// with its own lock.
type pending struct {
	list  []pendingPublish
	bytes int  // what list holds, as the router's budget counts it
	doubt bool // the owner refused a publish as moved on this leg (see settle)
}

// keep records a frame of the client's as pending until the owner answers it, for re-sending
// after a move; the frame itself is sent as it came. seq is the room's seq as the client's leg
// has seen it. A frame the router has no memory to keep — past --pending-bytes for this client
// (one is always kept) or with the router's budget spent — is refused: it is not sent, and keep
// returns the error frame `overloaded` to answer the client with (a frame it could not re-send
// after a move could be lost). A bad frame whose error names an id is not kept: that answer
// needs no order.
func (k *pending) keep(rt *Router, seq uint64, mt int, msg []byte) *protocol.ErrorFrame {
	kept := pendingPublish{binary: mt == websocket.BinaryMessage, seq: seq}
	if !kept.binary {
		p, bad := protocol.ParsePublish(msg)
		switch {
		case bad == nil:
			kept.id = p.ID
		case bad.ID != "":
			return nil // the owner answers it with the same error frame, naming its id
		default:
			kept.harmless = true
		}
	}
	kept.frame = bytes.Clone(msg)
	cost := kept.cost()
	if len(k.list) > 0 && k.bytes+cost > rt.cfg.PendingBytes || rt.budget.Reserve(cost) != nil {
		rt.metrics.refused.WithLabelValues(limit.CodeOverloaded).Inc()
		return &protocol.ErrorFrame{Type: protocol.TypeError, Code: limit.CodeOverloaded, ID: kept.id,
			Error: "the router has too many of your publishes waiting for the room's owner to ack them (--pending-bytes), or is near its memory limit; the publish was not delivered, send it again later"}
	}
	k.list = append(k.list, kept)
	k.bytes += cost
	return nil
}

// answered takes the owner's answer to the kept frame with id (the oldest without one for "").
// It reports whether the frame stays kept: refused as moved, it is re-sent on the next leg.
func (k *pending) answered(budget *limit.Budget, id string, moved bool) bool {
	for i := range k.list {
		p := &k.list[i]
		if p.id != id || p.refused {
			continue
		}
		if moved {
			p.refused, k.doubt = true, true
			return true
		}
		budget.Release(p.cost())
		k.bytes -= p.cost()
		k.list = append(k.list[:i], k.list[i+1:]...)
		return false
	}
	return false
}

// settle splits the pending frames, in order, into those a new owner can be sent and those that
// may be lost or doubled either way. A frame is re-sent when the old owner did not take it: it
// refused it as moved, or it closed the leg (closed) without answering it — unless it had
// refused an earlier publish as moved on that leg, as it may still take the next ones when the
// room thaws in place. Otherwise a frame with an id is re-sent while the room still remembers
// the ids of what it took since the frame was sent: fewer than dedupe messages before the new
// owner's seq (or the room lost that epoch, !sameEpoch: nothing of it can be doubled). The rest
// — a binary or id-less publish on a leg that broke, or one so old that the room may have
// forgotten its id — the client is to be told of.
func (k *pending) settle(closed, sameEpoch bool, seq uint64, dedupe int) (resend, unsure []pendingPublish) {
	for _, p := range k.list {
		switch {
		case p.harmless, p.refused, closed && !k.doubt:
			resend = append(resend, p)
		case p.id != "" && (!sameEpoch || seq < p.seq+uint64(dedupe)):
			resend = append(resend, p)
		default:
			unsure = append(unsure, p)
		}
	}
	return resend, unsure
}

// settled keeps what a new leg was re-sent, awaiting its answers, and lets go of the unsure.
func (k *pending) settled(budget *limit.Budget, resend, unsure []pendingPublish) {
	for _, p := range unsure {
		budget.Release(p.cost())
		k.bytes -= p.cost()
	}
	for i := range resend {
		resend[i].refused = false
	}
	k.list, k.doubt = resend, false
}

// forget lets go of every kept frame, when the client leaves.
func (k *pending) forget(budget *limit.Budget) {
	budget.Release(k.bytes)
	k.list, k.bytes = nil, 0
}

// inDoubt is the answer to a kept frame a re-dial could not re-send: the old owner may or may
// not have taken it. The error frame carries the publish's id ("" for a binary or an id-less
// one, as the owner's own answers to those do).
func inDoubt(rt *Router, p pendingPublish) *protocol.ErrorFrame {
	rt.metrics.refused.WithLabelValues("publish_in_doubt").Inc()
	why := "the connection to the room's owner broke before it answered this publish, and the router cannot re-send it without risking a duplicate (it has no id); it may or may not have been delivered: give publishes an id to make this safe"
	if p.id != "" {
		why = "the connection to the room's owner broke before it answered this publish, and so many messages followed it that the room may no longer remember its id; the router did not re-send it: it may or may not have been delivered"
	}
	return &protocol.ErrorFrame{Type: protocol.TypeError, Code: protocol.CodeUnavailable, ID: p.id, Error: why}
}
