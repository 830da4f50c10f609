package room

import (
	"errors"
	"time"
)

// Replica copies: a node keeps a Room that it does not serve (it is in no table) for each room it
// is a replica of, built from a seed (Restore) and extended by Apply, so that promoting it is
// putting it in the table.

// Errors Apply refuses with.
var (
	// ErrGap: the append does not follow the copy (another epoch, or a seq beyond the next):
	// the owner must seed the copy again.
	ErrGap = errors.New("append does not follow the replica's copy")
	// ErrOldTerm: the append comes from an older owner than the copy has heard from.
	ErrOldTerm = errors.New("append from an older ownership term")
)

// Apply extends a replica's copy with one message from the room's owner. An append the copy has
// already is taken again as it is (a re-send after a reconnect).
func (r *Room) Apply(a Append) (err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer func() {
		if err == nil && a.Outbox != nil {
			r.applyOutbox(a.Outbox) // webhook events, in the order the owner made them
		}
	}()
	switch {
	case r.state == closed:
		return ErrClosed
	case a.Epoch != r.epoch:
		return ErrGap
	case a.Term < r.term:
		return ErrOldTerm
	case a.Msg.Seq <= r.seq:
		return nil
	case a.Msg.Seq != r.seq+1:
		return ErrGap
	}
	r.term = a.Term
	e := newEntry(a.Msg.Seq, a.Msg.Binary, a.Msg.Frame)
	r.hist.add(e)
	if a.ID != "" {
		r.ids.remember(a.Client, a.ID, e.seq)
	}
	if a.Source != "" {
		r.feed(a.Source)
	}
	r.seq, r.committed = e.seq, e.seq
	last := a
	last.Outbox = nil // applied (below); not kept
	r.lastAppend = &last
	return nil
}

// Seed runs f with the room's lock held, so that what f does with the room's state (snapshot
// gives it, with every message sequenced so far) is ordered before every append that follows:
// a Replicator seeds a new replica so.
func (r *Room) Seed(f func(snapshot func() State)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == closed {
		return
	}
	f(r.snapshot)
}

// Promote makes a replica's copy the room, at the next term, when its owner is gone: held writes
// and new ones go on in the same epoch.
func (r *Room) Promote() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.term++
	r.lastActive = time.Now()
}

// MaxSourceNames bounds the named stream sources a room counts frames of; past it, the source
// that fed the room least recently is forgotten (it starts over at 0 if it comes back).
const MaxSourceNames = 1024

// feed counts one more frame of the named source. r.mu is held.
func (r *Room) feed(source string) {
	if r.fed == nil {
		r.fed = map[string]uint64{}
	}
	if _, ok := r.fed[source]; !ok && len(r.fed) >= MaxSourceNames {
		for k := range r.fed { // any: a room with this many named sources is not a common room
			delete(r.fed, k)
			break
		}
	}
	r.fed[source]++
}

// Fed is how many frames of the named stream source source the room holds: after a crash of
// its owner, a source that comes back resends exactly those past it.
func (r *Room) Fed(source string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fed[source]
}
