package room

import "github.com/roost-dev/roost/protocol"

// Replication: with a Replicator, a message is sequenced (its seq and its place in history are
// the room's at once) but committed — delivered to subscribers and acked to its publisher — only
// once every replica holds it (Replicator.Append, then Commit). Messages are committed in seq
// order; a client that joins meanwhile is welcomed at the committed seq and sees the rest as
// they commit, so nothing reaches a client that a crash of the owner could take back.

// Replicator copies a room's messages to its replicas (see package replica).
type Replicator interface {
	// Append hands the message just sequenced in r to r's replicas. It reports false when r has
	// no replica to wait for: the message commits at once. Otherwise the replicator calls
	// r.Commit once the replicas hold it. It must not block: r's lock is held. snapshot gives
	// r's state (this message included), to seed a replica that needs it.
	Append(r *Room, a Append, snapshot func() State) bool
}

// Append is one message on its way to a room's replicas, with what a new owner needs of it.
type Append struct {
	Epoch  string
	Term   uint64
	Msg    Message
	ID     string // the publish id, if any
	Client string // its publisher
	Source string // the named stream source that sent it, if one did
	// Outbox, when set, extends the replica's copy of the room's webhook outbox (see outbox.go).
	Outbox *Outbox
}

// pending is a message sequenced but not committed, or an ack owed once a seq commits.
type pending struct {
	e      *entry // nil: an ack alone (a retried id whose message is not committed yet)
	seq    uint64
	from   *Conn
	id     string
	source string // the named stream source that sent it
}

// commitOrHold delivers e and acks it now, or, when a replicator waits for the replicas, keeps
// it for Commit. r.mu is held.
func (r *Room) commitOrHold(e *entry, from *Conn, client, id, source string) {
	a := Append{Epoch: r.epoch, Term: r.term, Msg: Message{Seq: e.seq, Binary: e.binary, Frame: e.frame}, ID: id, Client: client, Source: source}
	r.lastAppend = &a
	if r.cfg.Replicator != nil && r.cfg.Replicator.Append(r, a, r.snapshot) {
		r.held = append(r.held, pending{e: e, seq: e.seq, from: from, id: id, source: source})
		return
	}
	if len(r.held) > 0 {
		// Earlier messages still wait for replicas that are gone now: this one commits them.
		r.held = append(r.held, pending{e: e, seq: e.seq, from: from, id: id, source: source})
		r.commit(e.seq)
		return
	}
	r.committed = e.seq
	r.committedMore()
	r.fanout(outFrame{msg: e})
	r.emitMessage(e)
	if from != nil {
		from.sendJSON(protocol.Ack{Type: protocol.TypeAck, ID: id, Seq: e.seq})
	}
}

// ackWhenCommitted acks a retried id now if its message is committed, or when it is. r.mu is
// held.
func (r *Room) ackWhenCommitted(from *Conn, id string, seq uint64) {
	if seq <= r.committed {
		from.sendJSON(protocol.Ack{Type: protocol.TypeAck, ID: id, Seq: seq})
		return
	}
	r.held = append(r.held, pending{seq: seq, from: from, id: id})
}

// Commit delivers and acks, in seq order, every held message up to seq: the replicas hold them.
// Not while the node is in a minority, nor while the room is demoted since (see Demote): cut
// off, it cannot know whether an heir has taken the room over, and numbered messages of its own
// under the seqs of these (the replicator tries again). Settled, a demoted room either commits
// them (nobody took it over) or gives way to the copy that did, and they go with it.
func (r *Room) Commit(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != closed && !r.own.demoted && (r.cfg.Quorum == nil || r.cfg.Quorum.Writable()) {
		r.commit(seq)
	}
}

// commit is Commit with r.mu held.
func (r *Room) commit(seq uint64) {
	seq = min(seq, r.seq)
	if seq <= r.committed {
		return
	}
	var waiting []pending
	n := 0
	for _, p := range r.held {
		if p.seq > seq {
			if p.e != nil {
				r.held[n] = p
				n++
			} else {
				waiting = append(waiting, p)
			}
			continue
		}
		if p.e != nil {
			if len(r.subs) > 1 {
				p.e.prepared() // framed once here, not raced for by every subscriber's writer
			}
			r.fanout(outFrame{msg: p.e})
			r.emitMessage(p.e)
		}
		if p.from != nil {
			p.from.sendJSON(protocol.Ack{Type: protocol.TypeAck, ID: p.id, Seq: p.seq})
		}
	}
	clear(r.held[n:])
	r.held = append(r.held[:n], waiting...)
	r.committed = seq
	r.committedMore()
}

// Handed commits every held message of a room just handed off: they went in its state, so the
// receiver holds them (and, once it has answered, its replicas do too). Their publishers get
// their acks before the room closes, rather than send them again to the new owner, which would
// take a retry without an id as a new message.
func (r *Room) Handed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != closed {
		r.commit(r.seq)
	}
}

// Committed is the newest seq delivered to the room's clients.
func (r *Room) Committed() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.committed
}
