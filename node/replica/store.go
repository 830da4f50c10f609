package replica

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// copyOf is a room this node holds as a replica: a Room no client reaches, its owner named.
type copyOf struct {
	r    *room.Room
	from string // the owner that seeded and extends it
}

// Store holds the replica copies of a node. Its methods are safe for concurrent use.
type Store struct {
	cfg *Config

	mu     sync.Mutex
	copies map[string]*copyOf
}

// Len is the number of replica copies held.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.copies)
}

// ServeStream serves one owner's replication stream (the request is signed: see
// peer.CheckStream): it applies each batch and acks it.
func (s *Store) ServeStream(w http.ResponseWriter, r *http.Request) {
	from := r.URL.Query().Get("from")
	if from == "" {
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, "a replication stream names its owner (from)")
		return
	}
	up := websocket.Upgrader{ReadBufferSize: 64 << 10, WriteBufferSize: 16 << 10}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	ws.SetReadLimit(s.cfg.MaxFrame)
	stop := context.AfterFunc(s.cfg.ctx, func() { ws.Close() })
	defer stop()
	c := newConn(ws)
	for {
		var batch Batch
		if err := c.read(&batch); err != nil {
			if errors.Is(err, errBadFrame) {
				s.cfg.Log.Warn("closing a replication stream that sent a bad frame", "peer", from, "err", err)
			}
			return
		}
		ack := Ack{ID: batch.ID, Status: make([]Status, len(batch.Items))}
		for i, it := range batch.Items {
			ack.Status[i] = s.apply(from, it)
		}
		if c.write(ack, time.Now().Add(s.cfg.WriteTimeout)) != nil {
			return
		}
	}
}

// apply takes one item from the owner from. A copy is only ever extended by the node this
// node's own ring names the room's owner, and never from an older term (fencing).
func (s *Store) apply(from string, it Item) Status {
	name := it.room()
	if s.cfg.Gate.Stale() {
		return Refused // woken from a pause: this node decides nothing until its watchdog has
	}
	p := s.cfg.Ring.Placement()
	o, ok := p.Owner(name)
	owner := ok && o.ID == from
	if it.Seed != nil {
		if !owner {
			return Refused
		}
		return s.seed(from, *it.Seed)
	}
	s.mu.Lock()
	c := s.copies[name]
	s.mu.Unlock()
	if c == nil || c.from != from {
		if !owner {
			return Refused
		}
		return Reseed
	}
	// The writer of this copy may go on extending it after the ring has named another owner,
	// as long as it lives: it still holds the room until its hand-off (a drain, a join) moves
	// it, and its writes until then are acked only once replicated. Refusing them would make
	// it ack them unreplicated — and re-seed every room it holds, for nothing, while it drains.
	// A new owner's copy comes with a later term (ErrOldTerm below refuses the old writer then),
	// and a writer the ring declared dead is refused here.
	if m, known := p.Member(from); !owner && (!known || !m.Live()) {
		return Refused
	}
	switch err := c.r.Apply(it.Append.Append); err {
	case nil:
		s.cfg.Metrics.Appends.Inc()
		return Held
	case room.ErrOldTerm:
		return Refused
	default:
		return Reseed
	}
}

func (s *Store) seed(from string, st room.State) Status {
	if err := st.Validate(); err != nil {
		s.cfg.Log.Warn("refusing a malformed replica seed", "room", st.Room, "peer", from, "err", err)
		return Refused
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.copies[st.Room]; old != nil {
		epoch, _ := old.r.Position()
		if epoch == st.Epoch && old.r.Term() > st.Term {
			return Refused
		}
		old.r.Close(room.Farewell{})
	}
	s.copies[st.Room] = &copyOf{r: room.Restore(s.cfg.Room, st), from: from}
	s.cfg.Metrics.Seeds.Inc()
	return Held
}

// Complete fills in a hand-off's tail (see room.State.Tail) from this node's copy of the room,
// which from, the sender, must have extended. It reports false when the copy cannot: the sender
// then sends the whole state.
func (s *Store) Complete(from string, st room.State) (room.State, bool) {
	if st.Base == 0 {
		return st, true
	}
	s.mu.Lock()
	c := s.copies[st.Room]
	s.mu.Unlock()
	if c == nil || c.from != from {
		return st, false
	}
	return st.Complete(c.r.Snapshot())
}

// Position is where this node's copy of room is, if it holds one.
func (s *Store) Position(name string) (epoch string, term, seq uint64, ok bool) {
	s.mu.Lock()
	c := s.copies[name]
	s.mu.Unlock()
	if c == nil {
		return "", 0, 0, false
	}
	epoch, seq = c.r.Position()
	return epoch, c.r.Term(), seq, true
}

// Take removes and returns the copy of room when the ring declared the node that extended it
// dead and this node is the room's owner: the caller promotes it. nil otherwise.
func (s *Store) Take(name string) *room.Room {
	p := s.cfg.Ring.Placement()
	if o, ok := p.Owner(name); !ok || o.ID != s.cfg.Ring.ID() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.copies[name]
	if c == nil {
		return nil
	}
	if m, ok := p.Member(c.from); !ok || m.State != ring.StateDead {
		return nil // its owner lives, or left and handed the room over itself
	}
	delete(s.copies, name)
	return c.r
}

// orphan reports whether this node holds a copy of room whose owner the ring declared dead
// while the placement names this node the owner, and which node that owner was. A copy whose
// owner left gracefully is no orphan: that owner handed the room to someone, and the copy is
// stale.
func (s *Store) orphan(name string) (from string, ok bool) {
	p := s.cfg.Ring.Placement()
	if o, ok := p.Owner(name); !ok || o.ID != s.cfg.Ring.ID() {
		return "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.copies[name]
	if c == nil {
		return "", false
	}
	if m, ok := p.Member(c.from); !ok || m.State != ring.StateDead {
		return "", false
	}
	return c.from, true
}

// Orphans are the rooms whose copies Take would give now.
func (s *Store) Orphans() []string {
	p := s.cfg.Ring.Placement()
	self := s.cfg.Ring.ID()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name, c := range s.copies {
		if o, ok := p.Owner(name); ok && o.ID == self {
			if m, ok := p.Member(c.from); ok && m.State == ring.StateDead {
				out = append(out, name)
			}
		}
	}
	return out
}

// Drop forgets the copy of room: the room itself arrived here, or this node no longer replicates
// it.
func (s *Store) Drop(name string) {
	s.mu.Lock()
	c := s.copies[name]
	delete(s.copies, name)
	s.mu.Unlock()
	if c != nil {
		c.r.Close(room.Farewell{})
	}
}

// prune drops the copies this node is no longer a replica of by the current placement, and those
// whose owner left (it handed the room over: the copy is stale).
func (s *Store) prune() {
	p := s.cfg.Ring.Placement()
	self := s.cfg.Ring.ID()
	s.mu.Lock()
	var gone []*copyOf
	for name, c := range s.copies {
		keep := false
		for _, h := range p.Heirs(name, s.cfg.Replicas+1) {
			if h.ID == self {
				keep = true
			}
		}
		if m, ok := p.Member(c.from); !ok || m.State == ring.StateLeft {
			keep = false
		}
		if !keep {
			gone = append(gone, c)
			delete(s.copies, name)
		}
	}
	s.mu.Unlock()
	for _, c := range gone {
		c.r.Close(room.Farewell{})
	}
}
