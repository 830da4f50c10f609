package node

// Hand-off: moving a live room to its new owner when the ring changes, without losing or
// doubling a message.
//
// The old owner O pushes: on every placement change (and again every HandoffRetry until it is
// done) it freezes each room it lost (publishes wait), sends the rooms' state to the new owner G
// in one signed batch per gainer, and only when G has accepted them closes their clients with
// 4001 naming G, and their stream sources with MOVED. If G refuses (its own placement does not
// name it the owner yet) or cannot be reached, the rooms thaw and O tries again later; O keeps
// the state until someone takes it.
//
// The new owner pulls when asked first: a client for a room G owns but does not hold makes G
// ask the room's recent owners to release it, so G never starts a second copy while O holds
// one. If O still believes it owns the room, G redirects the client to O meanwhile. Only when no
// live previous owner holds the room — or O stays silent for ArriveTimeout — does G start the
// room afresh, with a new epoch, so clients resuming get a reset.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// roomState is everything about a room a client can observe, as it travels to a new owner.
type roomState struct {
	Room    string         `json:"room"`
	Epoch   string         `json:"epoch"`
	Seq     uint64         `json:"seq"`
	History []historyFrame `json:"history,omitempty"`
	IDs     []rememberedID `json:"ids,omitempty"` // oldest first
}

type historyFrame struct {
	Seq    uint64 `json:"seq"`
	Binary bool   `json:"bin,omitempty"`
	Frame  []byte `json:"frame"` // the wire frame, seq included
}

type rememberedID struct {
	ID  string `json:"id"`
	Seq uint64 `json:"seq"`
}

type handoffBatch struct {
	From string `json:"from"`
	Ring string `json:"ring"` // the sender's placement version
	// Check asks only whether the receiver owns the rooms (waiting for its ring as a real batch
	// would); the rooms carry their names alone. Senders check first, so their rooms stay
	// frozen for the transfer only, not while gossip catches up.
	Check bool        `json:"check,omitempty"`
	Rooms []roomState `json:"rooms"`
}

type handoffReply struct {
	Accepted []string `json:"accepted,omitempty"` // installed here
	Held     []string `json:"held,omitempty"`     // a copy was here already: the sender closes its own
	Refused  []string `json:"refused,omitempty"`  // this node's placement does not name it the owner
}

type releaseReply struct {
	Status string `json:"status"` // moved, absent, owner, busy
	To     string `json:"to,omitempty"`
}

// handoffChunk and handoffChunkBytes bound one hand-off call: its rooms are frozen from the
// snapshot until the receiver answers, so a call carries at most this many rooms and (past its
// first room) this much history.
const (
	handoffChunk      = 64
	handoffChunkBytes = 8 << 20
)

// historyBytes is the size of a room's history.
func (r *Room) historyBytes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hist.bytes
}

// chunks splits rooms into hand-off calls within handoffChunk and handoffChunkBytes.
func chunks(rooms []*Room) [][]*Room {
	var out [][]*Room
	start, size := 0, 0
	for i, r := range rooms {
		b := r.historyBytes()
		if i > start && (i-start == handoffChunk || size+b > handoffChunkBytes) {
			out = append(out, rooms[start:i])
			start, size = i, 0
		}
		size += b
	}
	if start < len(rooms) {
		out = append(out, rooms[start:])
	}
	return out
}

// snapshot copies the state of a frozen room.
func (r *Room) snapshot() roomState {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := roomState{Room: r.name, Epoch: r.epoch, Seq: r.seq, History: make([]historyFrame, len(r.hist.entries))}
	for i, e := range r.hist.entries {
		st.History[i] = historyFrame{Seq: e.seq, Binary: e.binary, Frame: e.frame}
	}
	for _, id := range r.ids.order {
		st.IDs = append(st.IDs, rememberedID{ID: id, Seq: r.ids.seqs[id]})
	}
	return st
}

// decodeHandoff reads a hand-off batch. A batch that does not decode, or names a room twice, is
// refused whole; each room's state is checked by validate when it is installed.
func decodeHandoff(body []byte) (handoffBatch, error) {
	var b handoffBatch
	if err := gob.NewDecoder(bytes.NewReader(body)).Decode(&b); err != nil {
		return b, fmt.Errorf("hand-off batch does not decode: %w", err)
	}
	seen := make(map[string]bool, len(b.Rooms))
	for _, st := range b.Rooms {
		if seen[st.Room] {
			return b, fmt.Errorf("hand-off batch names room %q twice", st.Room)
		}
		seen[st.Room] = true
	}
	return b, nil
}

// validate checks a received room state before it is installed: what restoreRoom and the room
// rely on (a valid name, an epoch, contiguous history ending at most at the room's seq, binary
// frames that start with their seq, remembered ids within bounds).
func (st *roomState) validate() error {
	if err := protocol.ValidRoom(st.Room); err != nil {
		return err
	}
	if st.Epoch == "" || len(st.Epoch) > 64 {
		return errors.New("bad epoch")
	}
	for i, h := range st.History {
		if len(h.Frame) == 0 || (h.Binary && (len(h.Frame) < 8 || binary.BigEndian.Uint64(h.Frame) != h.Seq)) {
			return fmt.Errorf("history frame %d is malformed", h.Seq)
		}
		if h.Seq == 0 || h.Seq > st.Seq || (i > 0 && h.Seq != st.History[i-1].Seq+1) {
			return fmt.Errorf("history seqs are not contiguous up to %d", st.Seq)
		}
	}
	for _, id := range st.IDs {
		if id.Seq == 0 || id.Seq > st.Seq || id.ID == "" || len(id.ID) > protocol.MaxIDLen {
			return fmt.Errorf("remembered id %q is malformed", protocol.CloseReason(id.ID))
		}
	}
	return nil
}

// restoreRoom makes a room from received state; its numbering goes on where it was.
func restoreRoom(n *Node, st roomState) *Room {
	r := newRoom(n, st.Room)
	r.epoch, r.seq = st.Epoch, st.Seq
	for _, h := range st.History {
		mt := websocket.TextMessage
		if h.Binary {
			mt = websocket.BinaryMessage
		}
		pm, err := websocket.NewPreparedMessage(mt, h.Frame)
		if err != nil {
			panic(err)
		}
		r.hist.add(&entry{seq: h.Seq, binary: h.Binary, frame: h.Frame, pm: pm})
	}
	for _, id := range st.IDs {
		r.ids.remember(id.ID, id.Seq)
	}
	return r
}

// rebalance hands off every room the current placement gives to another node, one batch per
// gainer, gainers in parallel. Rooms that could not be handed off stay (thawed) for the next try.
func (n *Node) rebalance(ctx context.Context) {
	if n.stale() {
		return // no state leaves a node that may be stale; the retry comes after the decision
	}
	p := n.ring.Placement()
	groups := map[string][]*Room{}
	owners := map[string]ring.Member{}
	for _, r := range n.rooms.all() {
		o, ok := p.Owner(r.name)
		if !ok || o.ID == n.id {
			if ok && r.isParked() {
				// The ring gave it back before a hand-off settled. If the other node did take
				// it, it pushes it back here and the newer copy wins (see handleHandoff).
				r.unfreeze()
			}
			continue
		}
		groups[o.ID] = append(groups[o.ID], r)
		owners[o.ID] = o
	}
	// A chunk's rooms are frozen from the start of its hand-off to its end. A few chunks at a
	// time keep the machine busy; starting them all at once would freeze every room for the
	// whole drain (10,000 rooms: a 2.3 s write pause for each instead of one chunk's time).
	var wg sync.WaitGroup
	sem := make(chan struct{}, handoffParallel)
	for id, rooms := range groups {
		for _, chunk := range chunks(rooms) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				defer func() { <-sem }()
				n.handOff(ctx, owners[id], p.Version(), chunk)
			}()
		}
	}
	wg.Wait()
}

// handoffParallel is how many hand-off batches a node sends at once.
const handoffParallel = 4

// lost reports whether the node holds a room the current placement gives to another node.
func (n *Node) lost() bool {
	p := n.ring.Placement()
	for _, r := range n.rooms.all() {
		if o, ok := p.Owner(r.name); ok && o.ID != n.id {
			return true
		}
	}
	return false
}

// handOff moves rooms to the node to: check it owns them, freeze, send, and on acceptance close
// them here.
func (n *Node) handOff(ctx context.Context, to ring.Member, version string, rooms []*Room) {
	rooms = n.ownedBy(ctx, to, version, rooms)
	var frozen []*Room
	batch := handoffBatch{From: n.id, Ring: version}
	for _, r := range rooms {
		if r.freeze() {
			frozen = append(frozen, r)
			batch.Rooms = append(batch.Rooms, r.snapshot())
		}
	}
	if len(frozen) == 0 {
		return
	}
	start := time.Now()
	reply, size, err := n.sendBatch(ctx, to, batch)
	if err != nil {
		// The receiver may have installed the rooms before the call failed: keep them frozen,
		// so a retry sends the very same state, which the receiver then accepts again.
		for _, r := range frozen {
			r.park()
		}
		n.metrics.handoffs.WithLabelValues("failed").Add(float64(len(frozen)))
		n.log.Warn("hand-off failed; its rooms stay frozen until a retry settles it", "peer", to.ID, "rooms", len(frozen), "err", err)
		return
	}
	done := map[string]bool{}
	for _, name := range reply.Accepted {
		done[name] = true
	}
	for _, name := range reply.Held {
		done[name] = true
	}
	bye := farewell{code: protocol.CloseMoved, flush: true, reason: movedReason(to.ID),
		source: func(accepted uint64) string { return movedLine(to, accepted) }}
	for _, r := range frozen {
		if !done[r.name] {
			r.unfreeze()
			continue
		}
		n.rooms.remove(r)
		r.closeAll(bye)
		n.log.Info("room handed off", "room", r.name, "to", to.ID, "ring", version)
	}
	took := time.Since(start)
	n.metrics.handoffs.WithLabelValues("ok").Add(float64(len(reply.Accepted) + len(reply.Held)))
	n.metrics.handoffs.WithLabelValues("refused").Add(float64(len(reply.Refused)))
	n.metrics.handoffBytes.Add(float64(size))
	n.metrics.handoffSeconds.Observe(took.Seconds())
	n.metrics.roomsLost.Add(float64(len(reply.Accepted) + len(reply.Held)))
	if len(reply.Refused) > 0 {
		n.log.Info("hand-off refused for now: the receiver's ring disagrees; will retry", "peer", to.ID, "rooms", len(reply.Refused))
	}
	n.log.Debug("hand-off batch", "peer", to.ID, "rooms", len(frozen), "accepted", len(reply.Accepted),
		"held", len(reply.Held), "bytes", size, "took", took)
}

// sendBatch posts a hand-off batch (or check) to a node and returns its reply and the batch's
// size in bytes.
func (n *Node) sendBatch(ctx context.Context, to ring.Member, b handoffBatch) (handoffReply, int, error) {
	var reply handoffReply
	// gob, not JSON: a batch is mostly history frames, which JSON would base64 at a fraction
	// of the speed (a 17 MB batch took seconds under -race).
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(b); err != nil {
		return reply, 0, err
	}
	body := buf.Bytes()
	ctx, cancel := context.WithTimeout(ctx, n.cfg.HandoffTimeout)
	defer cancel()
	out, err := n.peers.Call(ctx, to.HTTPURL(), "/internal/v1/handoff", "application/x-gob", body)
	if err == nil {
		err = json.Unmarshal(out, &reply)
	}
	return reply, len(body), err
}

// ownedBy returns the rooms the node to says it owns, after the wait for its ring that a batch
// would have. Nothing is frozen meanwhile.
func (n *Node) ownedBy(ctx context.Context, to ring.Member, version string, rooms []*Room) []*Room {
	check := handoffBatch{From: n.id, Ring: version, Check: true, Rooms: make([]roomState, len(rooms))}
	for i, r := range rooms {
		check.Rooms[i].Room = r.name
	}
	reply, _, err := n.sendBatch(ctx, to, check)
	if err != nil {
		n.log.Warn("hand-off check failed; will retry", "peer", to.ID, "rooms", len(rooms), "err", err)
		return nil
	}
	owned := map[string]bool{}
	for _, name := range reply.Accepted {
		owned[name] = true
	}
	var out2 []*Room
	for _, r := range rooms {
		if owned[r.name] {
			out2 = append(out2, r)
		}
	}
	return out2
}

// handleHandoff receives rooms from their previous owner. It accepts a room only if its own
// placement names it the owner, waiting up to FenceWait for gossip to catch up.
func (n *Node) handleHandoff(w http.ResponseWriter, r *http.Request) {
	body, err := n.peers.Verify(r)
	if err != nil {
		n.metrics.refused.WithLabelValues("peer_auth").Inc()
		protocol.WriteError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, err.Error())
		return
	}
	b, err := decodeHandoff(body)
	if err != nil {
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
		return
	}
	owns := func(room string) bool { o, _, ok := n.owner(room); return ok && o.ID == n.id }
	deadline := time.Now().Add(n.cfg.FenceWait)
	for {
		all := true
		for _, st := range b.Rooms {
			all = all && owns(st.Room)
		}
		if all || time.Now().After(deadline) || n.isClosed() {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var reply handoffReply
	if b.Check {
		for _, st := range b.Rooms {
			if owns(st.Room) && !n.stale() {
				reply.Accepted = append(reply.Accepted, st.Room)
			} else {
				reply.Refused = append(reply.Refused, st.Room)
			}
		}
		protocol.WriteJSON(w, reply)
		return
	}
	for _, st := range b.Rooms {
		if err := st.validate(); err != nil {
			n.log.Warn("refusing malformed room state", "room", st.Room, "peer", b.From, "err", err)
			reply.Refused = append(reply.Refused, st.Room)
			continue
		}
		if !owns(st.Room) || n.isClosed() || n.stale() {
			reply.Refused = append(reply.Refused, st.Room)
			continue
		}
		installed := false
		held, err := n.rooms.getOrCreate(st.Room, func() (*Room, error) {
			installed = true
			return restoreRoom(n, st), nil
		})
		if err == nil && !installed && n.supersede(held, st) {
			installed = true
		}
		switch {
		case err != nil:
			reply.Refused = append(reply.Refused, st.Room)
		case installed:
			reply.Accepted = append(reply.Accepted, st.Room)
			n.metrics.roomsGained.WithLabelValues("handoff").Inc()
			n.log.Info("room arrived", "room", st.Room, "from", b.From, "epoch", st.Epoch, "seq", st.Seq)
		default:
			reply.Held = append(reply.Held, st.Room)
			n.log.Warn("room arrived but a copy is here already; the sender closes its own", "room", st.Room, "from", b.From)
		}
	}
	protocol.WriteJSON(w, reply)
}

// supersede settles a pushed room this node already holds. A copy of the same epoch that is not
// newer than the pushed state is the sender's own earlier push (a retry after a failed call) or an
// older copy: the pushed state replaces it and its clients resume on it. A newer copy, or one of
// another epoch, stays ("held"), and the sender closes its own.
func (n *Node) supersede(held *Room, st roomState) bool {
	held.mu.Lock()
	same, identical := held.epoch == st.Epoch && held.seq <= st.Seq, held.epoch == st.Epoch && held.seq == st.Seq
	held.mu.Unlock()
	if identical {
		return true // a retry of a push this node took already
	}
	if !same {
		return false
	}
	n.rooms.remove(held)
	held.closeAll(farewell{code: protocol.CloseMoved, flush: true, reason: movedReason(n.id),
		source: func(accepted uint64) string { o, _, _ := n.owner(st.Room); return movedLine(o, accepted) }})
	_, err := n.rooms.getOrCreate(st.Room, func() (*Room, error) { return restoreRoom(n, st), nil })
	return err == nil
}

// handleRelease is the pull: a node that owns a room by its placement asks this node, a recent
// owner, to hand the room over now.
func (n *Node) handleRelease(w http.ResponseWriter, r *http.Request) {
	if _, err := n.peers.Verify(r); err != nil {
		n.metrics.refused.WithLabelValues("peer_auth").Inc()
		protocol.WriteError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, err.Error())
		return
	}
	if n.awaitFresh(r.Context()) != nil {
		protocol.WriteJSON(w, releaseReply{Status: "busy"}) // still deciding after a pause: ask again
		return
	}
	name := r.PathValue("room")
	room := n.rooms.get(name)
	if room == nil {
		protocol.WriteJSON(w, releaseReply{Status: "absent"})
		return
	}
	o, p, ok := n.owner(name)
	if !ok || o.ID == n.id {
		protocol.WriteJSON(w, releaseReply{Status: "owner"})
		return
	}
	n.handOff(r.Context(), o, p.Version(), []*Room{room})
	if n.rooms.get(name) == room {
		protocol.WriteJSON(w, releaseReply{Status: "busy"})
		return
	}
	protocol.WriteJSON(w, releaseReply{Status: "moved", To: o.ID})
}

// redirectError says a client should go to another node that holds the room meanwhile.
type redirectError struct{ to ring.Member }

func (e *redirectError) Error() string { return "room held by " + e.to.ID }

// acquire returns the room if this node owns it, creating it only when no live previous owner
// holds it (see the package comment on hand-off). It may return a *redirectError.
func (n *Node) acquire(ctx context.Context, name string) (*Room, error) {
	if r := n.rooms.get(name); r != nil {
		return r, nil
	}
	v, err, _ := n.arrivals.Do(name, func() (any, error) { return n.arrive(ctx, name) })
	if err != nil {
		return nil, err
	}
	return v.(*Room), nil
}

func (n *Node) arrive(ctx context.Context, name string) (*Room, error) {
	// A previous owner that answers "busy" is alive and handing the room over: wait for it (up
	// to a hard cap). Only one that stays silent for ArriveTimeout is given up on.
	silentSince, hardCap := time.Now(), time.Now().Add(4*n.cfg.ArriveTimeout)
	for {
		// Just woken from a pause, the node lets gossip bring its ring up to date before it
		// decides anything about a room; the client waits meanwhile rather than failing.
		if err := n.awaitQuarantine(ctx); err != nil {
			return nil, err
		}
		if r := n.rooms.get(name); r != nil {
			return r, nil
		}
		o, p, ok := n.owner(name)
		if !ok || o.ID != n.id {
			return nil, ErrNotOwner
		}
		pending, heard := false, false
		var silent []string
		for _, c := range n.previousOwners(name, p) {
			reply, err := n.askRelease(ctx, c, name)
			switch {
			case err != nil:
				pending = true
				silent = append(silent, c.ID)
			case reply.Status == "busy":
				pending, heard = true, true
			case reply.Status == "owner":
				return nil, &redirectError{to: c}
			}
		}
		if heard {
			silentSince = time.Now()
		}
		if r := n.rooms.get(name); r != nil {
			return r, nil
		}
		if !pending {
			return n.create(name, "fresh")
		}
		if now := time.Now(); now.Sub(silentSince) > n.cfg.ArriveTimeout || now.After(hardCap) {
			n.log.Warn("previous owner did not hand the room over in time; starting it afresh with a new epoch", "room", name, "silent", silent)
			// Recorded first: a silent owner that wakes from a pause asks whether it was taken over.
			n.noteTakeover(silent)
			return n.create(name, "timeout")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (n *Node) create(name, how string) (*Room, error) {
	created := false
	r, err := n.rooms.getOrCreate(name, func() (*Room, error) {
		if n.isClosed() {
			return nil, ErrClosed
		}
		if n.stale() || n.quarantined() || !n.ring.Ready() {
			return nil, ErrStale // not placed with the rest of the cluster yet, or just woken
		}
		if o, _, ok := n.owner(name); !ok || o.ID != n.id {
			return nil, ErrNotOwner
		}
		if n.rooms.len() >= n.cfg.MaxRooms {
			return nil, ErrTooManyRooms
		}
		if n.memory.Over() {
			return nil, ErrMemory
		}
		created = true
		return newRoom(n, name), nil
	})
	if created {
		n.metrics.roomsGained.WithLabelValues(how).Inc()
		n.log.Debug("room created", "room", name, "how", how)
	}
	return r, err
}

// previousOwners are the live members other than this node that owned room in recent placements.
func (n *Node) previousOwners(room string, current *ring.Placement) []ring.Member {
	n.pastMu.Lock()
	past := append(append([]*ring.Placement(nil), n.past...), n.alts...)
	n.pastMu.Unlock()
	seen := map[string]bool{n.id: true}
	var out []ring.Member
	for i := len(past) - 1; i >= 0; i-- {
		o, ok := past[i].Owner(room)
		if !ok || seen[o.ID] {
			continue
		}
		seen[o.ID] = true
		if m, ok := current.Member(o.ID); ok && (m.State == ring.StateAlive || m.State == ring.StateDraining || m.State == ring.StateSuspect) {
			out = append(out, m)
		}
	}
	return out
}

func (n *Node) askRelease(ctx context.Context, from ring.Member, room string) (releaseReply, error) {
	cctx, cancel := context.WithTimeout(ctx, n.cfg.HandoffTimeout)
	defer cancel()
	var reply releaseReply
	out, err := n.peers.Call(cctx, from.HTTPURL(), "/internal/v1/rooms/"+room+"/release", "application/json", nil)
	if err == nil {
		err = json.Unmarshal(out, &reply)
	}
	return reply, err
}

// Drain hands every room off to its owner on the ring without this node: it marks the node
// draining in gossip (so every member re-places its rooms), waits until the rooms are gone or
// ctx ends, and turns the node not-ready at once. The node keeps serving what it still holds.
func (n *Node) Drain(ctx context.Context) error {
	n.draining.Store(true)
	start := time.Now()
	held := n.rooms.len()
	if err := n.ring.UpdateMeta(ctx, func(m *ring.Meta) { m.Draining = true }); err != nil {
		n.log.Warn("could not gossip draining", "err", err)
	}
	n.log.Info("draining", "rooms", held)
	for n.rooms.len() > 0 {
		if len(n.ring.Placement().Nodes()) == 0 {
			return fmt.Errorf("drain: no other node to hand %d rooms to", n.rooms.len())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain: %d of %d rooms not handed off before the deadline", n.rooms.len(), held)
		case <-time.After(20 * time.Millisecond):
		}
	}
	n.log.Info("drained", "rooms", held, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
