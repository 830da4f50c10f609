package room

import "time"

// Ownership: what keeps a room to one writer when nodes disagree about who owns it.
//
// A room's term grows on every change of owner: a room made afresh has term 1, and a receiver
// installs a handed-off room at the sender's term + 1. Copies of one epoch are compared by
// (term, seq), never by seq alone: the higher term is the later owner. A hand-off whose reply
// was lost parks the room with the receiver named; before it thaws or goes anywhere else, the
// sender settles it with that receiver: either the receiver holds the room (the sender's copy
// is the older one and closes), or the receiver fences the attempt (it will never install it)
// and the sender goes on at a term above the fenced one.
//
// A room its owner's ring gives to another node is lost: it is on its way, and its writes go on
// only for as long as its lease holds (set by the hand-off, from when the owner last reached the
// new owner). Past it, the new owner may have given up on this node and started the room
// afresh, so this copy stops sequencing rather than write beside a second one.
type ownership struct {
	parkedWith string    // parked: the receiver of the attempt whose outcome is unknown
	lostAt     time.Time // when this node's ring first gave the room to another node; zero: owned
	leaseUntil time.Time // a lost room sequences until then; zero: no bound
	expired    bool      // the lease was seen run out since the room was lost
	demoted    bool      // held since the node fell into a minority, until settled (see Demote)
}

// leasePoll is how often a held write looks again at a lease or the quorum.
const leasePoll = 50 * time.Millisecond

// writable reports whether the room may sequence now. r.mu is held.
func (r *Room) writable(now time.Time) bool {
	if r.state != live {
		return false
	}
	if !r.own.leaseUntil.IsZero() && !now.Before(r.own.leaseUntil) || r.own.demoted {
		return false
	}
	return r.cfg.Quorum == nil || r.cfg.Quorum.Writable()
}

// Term is the room's ownership term.
func (r *Room) Term() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.term
}

// Lost records that this node's ring gives the room to another node (from now, unless it did
// already) and returns since when.
func (r *Room) Lost(now time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.own.lostAt.IsZero() {
		r.own.lostAt = now
	}
	return r.own.lostAt
}

// Lease bounds how long a lost room goes on sequencing: until until. It reports true the first
// time it finds the lease run out (at now) since the room was lost.
func (r *Room) Lease(until, now time.Time) (expiredNow bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.own.lostAt.IsZero() {
		return false
	}
	r.own.leaseUntil = until
	if !now.Before(until) && !r.own.expired {
		r.own.expired = true
		return true
	}
	return false
}

// LeaseExpired reports whether the room is lost and its lease has run out.
func (r *Room) LeaseExpired(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.own.leaseUntil.IsZero() && !now.Before(r.own.leaseUntil)
}

// Regain records that this node's ring names it the owner again: no lease bounds the room.
func (r *Room) Regain() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.own.lostAt, r.own.leaseUntil, r.own.expired = time.Time{}, time.Time{}, false
}

// Parked reports whether the room waits to be settled with the receiver of a hand-off whose
// outcome is unknown, and names it with the room's epoch and term.
func (r *Room) Parked() (to, epoch string, term uint64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != parked {
		return "", "", 0, false
	}
	return r.own.parkedWith, r.epoch, r.term, true
}

// Settle thaws a parked room whose receiver fenced the attempt, at term (above the fenced
// one), so that its next hand-off is not mistaken for the fenced one. Held writes go on.
func (r *Room) Settle(term uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != parked {
		return false
	}
	r.state, r.term, r.own.parkedWith = live, term, ""
	close(r.thaw)
	return true
}

// Demote marks the room as written last before the node fell into a minority: if another copy
// turns up when the partition heals (a replica promoted, or the room started afresh), that one
// took the writes meanwhile and wins (see handoff's supersede). A demoted room takes no write
// until Undemote: back in touch, its node first makes sure no other node holds the room.
func (r *Room) Demote() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.own.demoted = true
}

// Undemote lets a demoted room write again: no other node holds it.
func (r *Room) Undemote() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.own.demoted = false
}

// Demoted reports whether the room is demoted (see Demote).
func (r *Room) Demoted() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.own.demoted
}

// Refound is st as the first state of a new epoch: the same messages, the same seqs, but a
// numbering clients must not take for the one they knew (they get a reset). A parked room whose
// receiver is gone may have been written there meanwhile, so it cannot go on in its epoch.
func (st State) Refound() State {
	st.Epoch, st.Term = newEpoch(), 1
	return st
}
