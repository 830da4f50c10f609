package room

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/protocol"
)

// Webhooks: a room keeps an outbox of the events a receiver must hear (API.md, "Webhooks"), in
// the room's order, each with a stable id and the room's seq and epoch. The outbox is part of the
// room's state: it moves with the room in a hand-off (State.Outbox) and is copied to the room's
// replicas with its messages (Append.Outbox, and an append of the latest message again when only
// events changed), so neither a move nor a crash of the owner loses or reorders an event. The
// node's dispatcher (package webhook) reads batches from it and trims what was delivered.
//
// Members move too: a room restored from a hand-off or promoted from its replica expects the
// members it had (they reconnect to the new owner), so their reconnections are not new joins,
// and those not back within Webhook.Grace leave.

// Event types.
const (
	EventOccupied = "room.occupied"
	EventVacated  = "room.vacated"
	EventJoin     = "member.join"
	EventLeave    = "member.leave"
	EventMessage  = "message"
)

// Webhook configures rooms' outboxes. nil in Config: no outbox is kept.
type Webhook struct {
	Types    map[string]bool   // the event types kept
	MaxBytes int               // an outbox's bound, in bytes of its events' JSON: past it (or with Config.Budget spent) the oldest are dropped (and counted)
	Grace    time.Duration     // how long a moved room waits for its members to reconnect before they leave
	Notify   func(room string) // a room's outbox has events to deliver; must not block (r.mu is held)
}

// Event is one webhook event, as the receiver gets it.
type Event struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Room    string          `json:"room"`
	Epoch   string          `json:"epoch"`
	Seq     uint64          `json:"seq"`
	Time    time.Time       `json:"time"`
	Client  string          `json:"client,omitempty"`
	Message json.RawMessage `json:"message,omitempty"`
}

// OutboxEntry is an event with its place in the room's outbox.
type OutboxEntry struct {
	N     uint64 `json:"n"`
	Event Event  `json:"event"`
}

// Outbox is a room's outbox as it travels: to a new owner (all of it), or to a replica (an
// append's Events are those made since the previous append).
type Outbox struct {
	Next    uint64        `json:"next"`              // the N of the next event
	Acked   uint64        `json:"acked"`             // every event up to N Acked was delivered
	MsgSeq  uint64        `json:"msg_seq"`           // the newest seq a message event was made for
	Dropped uint64        `json:"dropped,omitempty"` // events dropped for the bound, not yet reported
	Events  []OutboxEntry `json:"events,omitempty"`
	Members []string      `json:"members,omitempty"` // in a hand-off, the room's members: they reconnect
	// Changes, in an append to a replica, are the members that came and went since the previous
	// one, in order, so that a replica promoted after a crash knows whom to expect back (also
	// when --webhook-events names no member event).
	Changes []MemberChange `json:"changes,omitempty"`
}

// MemberChange is a member joining a room or, with Left, leaving it.
type MemberChange struct {
	Client string `json:"client"`
	Left   bool   `json:"left,omitempty"`
}

// outbox is a room's, in memory.
type outbox struct {
	Outbox
	bytes   int
	sent    int            // Events[:sent] went to the replicas already
	changes []MemberChange // not sent to the replicas yet
	// present are the members a replica copy knows of (from the changes it was sent);
	// away are the members a moved room expects back, until awayUntil.
	present   map[string]struct{}
	away      map[string]struct{}
	awayTimer *time.Timer
}

func eventSize(e *Event) int { return 160 + len(e.ID) + len(e.Room) + len(e.Client) + len(e.Message) }

// emit adds an event of type typ to the outbox, if webhooks want it. r.mu is held.
func (r *Room) emit(typ, client string, seq uint64, message json.RawMessage) {
	w := r.cfg.Webhook
	if w == nil || !w.Types[typ] {
		return
	}
	b := &r.box
	if b.Next == 0 {
		b.Next = 1
	}
	n := b.Next
	b.Next++
	// A message's event is named by its seq, so a new owner that makes it again (its previous
	// owner committed the message but crashed before its replicas had the event) gives the
	// same id. Other events are named by their place in the outbox in this ownership term.
	id := r.epoch + "-" + strconv.FormatUint(r.term, 10) + "-" + strconv.FormatUint(n, 10)
	if typ == EventMessage {
		id = r.epoch + "-m" + strconv.FormatUint(seq, 10)
	}
	e := Event{ID: id, Type: typ, Room: r.name, Epoch: r.epoch, Seq: seq, Time: time.Now().UTC(), Client: client, Message: message}
	b.Events = append(b.Events, OutboxEntry{N: n, Event: e})
	b.bytes += eventSize(&e)
	r.cfg.Budget.Charge(eventSize(&e))
	// Past the bound, or with the node's memory budget spent, the oldest go: a receiver down
	// for long costs its events, never the rooms' publishes.
	for len(b.Events) > 1 && (b.bytes > w.MaxBytes || r.cfg.Budget.Full()) {
		r.dropOldest()
	}
	w.Notify(r.name)
}

// dropOldest drops the oldest undelivered event, counted for the dispatcher to report. r.mu is
// held.
func (r *Room) dropOldest() {
	b := &r.box
	size := eventSize(&b.Events[0].Event)
	b.bytes -= size
	r.cfg.Budget.Release(size)
	b.Acked = max(b.Acked, b.Events[0].N)
	b.Events[0] = OutboxEntry{}
	b.Events = b.Events[1:]
	b.Dropped++
	b.sent = max(b.sent-1, 0)
}

// shedOutbox drops the room's oldest undelivered events until n more bytes fit in the memory
// budget, for a publish the budget would refuse: the room's messages come before its webhook
// events. It reports whether n fits now. r.mu is held.
func (r *Room) shedOutbox(n int) bool {
	for len(r.box.Events) > 0 && !r.cfg.Budget.Fits(n) {
		r.dropOldest()
	}
	if r.box.Dropped > 0 && r.cfg.Webhook != nil {
		r.cfg.Webhook.Notify(r.name) // so the drops are reported
	}
	return r.cfg.Budget.Fits(n)
}

// emitMessage adds the message event of e, just committed. r.mu is held.
func (r *Room) emitMessage(e *entry) {
	w := r.cfg.Webhook
	if w == nil || !w.Types[EventMessage] || e.seq <= r.box.MsgSeq {
		return
	}
	r.box.MsgSeq = e.seq
	frame := json.RawMessage(e.frame)
	if e.binary {
		frame, _ = json.Marshal(struct {
			Type   string `json:"type"`
			Seq    uint64 `json:"seq"`
			Binary []byte `json:"binary"`
		}{protocol.TypeMessage, e.seq, e.frame[8:]})
	}
	r.emit(EventMessage, "", e.seq, frame)
}

// memberEvent emits a member's join or leave, with the room's occupied or vacated around it,
// unless the member is one a moved room expects back (a join) or is away (a leave). r.mu is held.
func (r *Room) memberEvent(client string, joined bool) {
	if r.cfg.Webhook == nil {
		return
	}
	if _, ok := r.box.away[client]; ok {
		if joined {
			delete(r.box.away, client) // it was a member all along
		}
		return
	}
	r.memberChange(client, !joined)
	if joined {
		if len(r.members) == 1 && len(r.box.away) == 0 {
			r.emit(EventOccupied, "", r.committed, nil)
		}
		r.emit(EventJoin, client, r.committed, nil)
		r.replicateOutbox()
		return
	}
	r.emit(EventLeave, client, r.committed, nil)
	if len(r.members) == 0 && len(r.box.away) == 0 {
		r.emit(EventVacated, "", r.committed, nil)
	}
	r.replicateOutbox()
}

// memberChange notes a member's join or leave for the replicas. r.mu is held.
func (r *Room) memberChange(client string, left bool) {
	if r.cfg.Replicator != nil {
		r.box.changes = append(r.box.changes, MemberChange{Client: client, Left: left})
	}
}

// Outbox returns up to max of the room's undelivered events (and about at most maxBytes of them,
// at least one), oldest first, and how many were dropped for the bound since the last call.
func (r *Room) Outbox(max, maxBytes int) ([]OutboxEntry, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	dropped := r.box.Dropped
	r.box.Dropped = 0
	size := 0
	n := 0
	for n < len(r.box.Events) && n < max {
		size += eventSize(&r.box.Events[n].Event)
		if n > 0 && size > maxBytes {
			break
		}
		n++
	}
	return append([]OutboxEntry(nil), r.box.Events[:n]...), dropped
}

// OutboxLen is the number of undelivered events.
func (r *Room) OutboxLen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.box.Events)
}

// AckOutbox forgets the events up to n: delivered. It reports whether more wait.
func (r *Room) AckOutbox(n uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.box.trim(n, r.cfg.Budget)
	r.replicateOutbox()
	return len(r.box.Events) > 0
}

// trim forgets the events up to n, releasing them from budget.
func (b *outbox) trim(n uint64, budget *limit.Budget) {
	if n <= b.Acked {
		return
	}
	b.Acked = n
	i := 0
	for i < len(b.Events) && b.Events[i].N <= n {
		size := eventSize(&b.Events[i].Event)
		b.bytes -= size
		budget.Release(size)
		i++
	}
	clear(b.Events[:i])
	b.Events = b.Events[i:]
	b.sent = max(b.sent-i, 0)
}

// replicateOutbox sends the outbox's new events and its acked mark to the replicas, with the
// room's latest message again (a replica has it already, or takes it as the append it is). r.mu
// is held.
func (r *Room) replicateOutbox() {
	if r.cfg.Replicator == nil || r.state == closed {
		return
	}
	var a Append
	switch {
	case r.lastAppend != nil && r.lastAppend.Msg.Seq == r.seq:
		a = *r.lastAppend
	case r.seq > 0 && len(r.hist.entries) > 0 && r.hist.entries[len(r.hist.entries)-1].seq == r.seq:
		e := r.hist.entries[len(r.hist.entries)-1]
		a.Msg = Message{Seq: e.seq, Binary: e.binary, Frame: e.frame}
	case r.seq > 0:
		return // the newest message is not at hand: the next one carries the outbox
	}
	a.Epoch, a.Term = r.epoch, r.term
	a.Outbox = r.box.delta()
	r.cfg.Replicator.Append(r, a, r.snapshot) // nothing waits on it: no message is new
}

// delta is what the replicas have not had of the outbox.
func (b *outbox) delta() *Outbox {
	d := &Outbox{Next: b.Next, Acked: b.Acked, MsgSeq: b.MsgSeq, Events: append([]OutboxEntry(nil), b.Events[b.sent:]...), Changes: b.changes}
	b.sent = len(b.Events)
	b.changes = nil
	return d
}

// applyOutbox extends a replica's copy of the outbox with an append's. r.mu is held.
func (r *Room) applyOutbox(d *Outbox) {
	b := &r.box
	last := b.Acked
	if n := len(b.Events); n > 0 {
		last = b.Events[n-1].N
	}
	for _, e := range d.Events {
		if e.N <= last {
			continue
		}
		b.Events = append(b.Events, e)
		b.bytes += eventSize(&e.Event)
		r.cfg.Budget.Charge(eventSize(&e.Event))
	}
	for _, c := range d.Changes {
		switch {
		case c.Left:
			delete(b.present, c.Client)
		case b.present == nil:
			b.present = map[string]struct{}{c.Client: {}}
		default:
			b.present[c.Client] = struct{}{}
		}
	}
	b.Next, b.MsgSeq = max(b.Next, d.Next), max(b.MsgSeq, d.MsgSeq)
	b.trim(d.Acked, r.cfg.Budget)
	b.sent = len(b.Events)
}

// outboxState is the outbox as a State carries it. r.mu is held.
func (r *Room) outboxState() *Outbox {
	if r.cfg.Webhook == nil && len(r.box.Events) == 0 && r.box.Next == 0 {
		return nil
	}
	o := r.box.Outbox
	o.Events = append([]OutboxEntry(nil), r.box.Events...)
	o.Members = sorted(r.members, len(r.members))
	for c := range r.box.present {
		o.Members = append(o.Members, c)
	}
	for c := range r.box.away {
		o.Members = append(o.Members, c)
	}
	return &o
}

// restoreOutbox takes a State's outbox into a room being restored.
func (r *Room) restoreOutbox(o *Outbox) {
	if o == nil {
		return
	}
	r.box.Outbox = *o
	r.box.Events = append([]OutboxEntry(nil), o.Events...)
	r.box.Members, r.box.Changes = nil, nil
	r.box.sent = len(r.box.Events)
	for _, e := range r.box.Events {
		r.box.bytes += eventSize(&e.Event)
	}
	r.cfg.Budget.Charge(r.box.bytes)
	if len(o.Members) > 0 {
		r.box.present = map[string]struct{}{}
		for _, c := range o.Members {
			r.box.present[c] = struct{}{}
		}
	}
}

// Owned tells a room restored from a hand-off or promoted from its replica copy that it serves
// its clients here now: the members it had are expected back for Webhook.Grace (their
// reconnections are no new joins; those not back leave then), and its outbox is delivered from
// here.
func (r *Room) Owned() {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.cfg.Webhook
	if w == nil || r.state == closed {
		return
	}
	// Messages its previous owner committed (or was committing) without making their events yet.
	for _, e := range r.hist.between(r.box.MsgSeq, r.committed) {
		r.emitMessage(e)
	}
	for c := range r.box.present {
		if _, in := r.members[c]; in {
			continue
		}
		if r.box.away == nil {
			r.box.away = map[string]struct{}{}
		}
		r.box.away[c] = struct{}{}
	}
	r.box.present = nil
	if len(r.box.away) > 0 && r.box.awayTimer == nil {
		r.box.awayTimer = time.AfterFunc(w.Grace, r.awayGone)
	}
	if len(r.box.Events) > 0 {
		w.Notify(r.name)
	}
}

// awayGone makes the members a moved room expected back and did not see again leave.
func (r *Room) awayGone() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.box.awayTimer = nil
	if r.state == closed || len(r.box.away) == 0 {
		return
	}
	gone := sorted(r.box.away, len(r.box.away))
	r.box.away = nil
	for _, c := range gone {
		r.memberChange(c, true)
		r.emit(EventLeave, c, r.committed, nil)
	}
	if len(r.members) == 0 {
		r.emit(EventVacated, "", r.committed, nil)
	}
	r.replicateOutbox()
}

// forgetOutbox lets go of the outbox's events, for a room that closes or is reclaimed: its next
// owner (a hand-off's snapshot was taken already), or no one, delivers them. r.mu is held.
func (r *Room) forgetOutbox() {
	r.cfg.Budget.Release(r.box.bytes)
	clear(r.box.Events)
	r.box.Events, r.box.bytes, r.box.sent, r.box.changes = nil, 0, 0, nil
}

// stopOutbox stops the outbox's timer, for a room that closes. r.mu is held.
func (r *Room) stopOutbox() {
	if r.box.awayTimer != nil {
		r.box.awayTimer.Stop()
		r.box.awayTimer = nil
	}
}
