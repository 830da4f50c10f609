package node

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/protocol"
)

// Errors a room operation can end with.
var (
	// ErrRoomClosed: the room was reclaimed or moved while the caller held it; look it up again.
	ErrRoomClosed = errors.New("room closed")
	// ErrRoomFull: the room has MaxRoomConns connections.
	ErrRoomFull = errors.New("room full")
)

// Room is one room in memory at its owner. Its mutex orders everything that happens in it: a
// message is sequenced and queued to every subscriber under the lock, so every subscriber sees
// the same order, and a joining client is registered and handed its history in one step, so it
// sees neither a hole nor a duplicate between history and live messages.
type Room struct {
	name string
	n    *Node

	mu         sync.Mutex
	epoch      string
	seq        uint64
	hist       history
	ids        dedupe
	subs       map[*conn]struct{}
	sources    map[*source]struct{} // TCP stream sources
	members    map[string]int       // presence: client id → open connections
	joined     map[string]struct{}
	left       map[string]struct{}
	timer      *time.Timer // pending presence interval, for large rooms
	lastActive time.Time
	closed     bool
	frozen     bool          // leaving: a hand-off is in flight, nothing new is sequenced
	parked     bool          // frozen by a hand-off whose outcome is unknown; retried as it is
	thaw       chan struct{} // closed when the freeze ends (thawed, or the room closed)
}

func newRoom(n *Node, name string) *Room {
	return &Room{
		name:       name,
		n:          n,
		epoch:      newEpoch(),
		hist:       history{maxCount: n.cfg.HistoryCount, maxBytes: n.cfg.HistoryBytes},
		ids:        dedupe{max: n.cfg.DedupeIDs},
		subs:       map[*conn]struct{}{},
		sources:    map[*source]struct{}{},
		members:    map[string]int{},
		lastActive: time.Now(),
	}
}

// newEpoch names a new life of a room's numbering. It is opaque to clients.
func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// resume is what a client asked for on connect.
type resume struct {
	since    uint64
	hasSince bool
	epoch    string
}

// join registers c and queues, in order: welcome, a reset or gap if the resume needs one, the
// history owed, the presence state if asked for. Everything after is live.
func (r *Room) join(c *conn, res resume) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrRoomClosed
	}
	if r.n.stale() {
		return ErrStale // woken from a pause: this copy may be stale until the watchdog decides
	}
	if len(r.subs) >= r.n.cfg.MaxRoomConns {
		return ErrRoomFull
	}
	r.lastActive = time.Now()
	r.addMember(c.client) // before c is a subscriber: its own join reaches the others only
	r.subs[c] = struct{}{}
	c.room = r
	c.sendJSON(protocol.Welcome{Type: protocol.TypeWelcome, Room: r.name, Node: r.n.id, Client: c.client,
		Epoch: r.epoch, Seq: r.seq, Count: len(r.members)})

	if res.hasSince || res.epoch != "" {
		since := res.since
		if (res.epoch != "" && res.epoch != r.epoch) || since > r.seq {
			// The numbering the client knows is gone: say so, then continue as from the start
			// of this epoch.
			c.sendJSON(protocol.Reset{Type: protocol.TypeReset, Epoch: r.epoch, Seq: r.seq})
			since = 0
		}
		if first := r.hist.first(); since < r.seq && (first == 0 || since+1 < first) {
			to := r.seq
			if first != 0 {
				to = first - 1
			}
			c.sendJSON(protocol.Gap{Type: protocol.TypeGap, From: since + 1, To: to})
		}
		if owed := r.hist.after(since); len(owed) > 0 {
			c.send(outFrame{replay: slices.Clone(owed)})
		}
	}
	if c.presence {
		c.sendJSON(protocol.Presence{Type: protocol.TypePresence, Event: protocol.PresenceState,
			Clients: r.memberList(), Count: len(r.members)})
	}
	return nil
}

// leave unregisters c.
func (r *Room) leave(c *conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.subs[c]; !ok {
		return
	}
	delete(r.subs, c)
	r.removeMember(c.client)
	r.lastActive = time.Now()
}

// publish sequences one text message from c and queues it to every subscriber, then acks it to
// c. A repeated id is acked with its first seq and not delivered again. data is the message's
// JSON value.
func (r *Room) publish(c *conn, id string, data []byte) error {
	_, err := r.sequence(c, c.client, id, func(seq uint64) []byte {
		b := make([]byte, 0, 64+len(data)+len(c.client)+len(id))
		return protocol.AppendMessage(b, seq, c.client, id, data)
	}, false)
	return err
}

// publishBinary sequences one binary message. frame is the whole wire frame with its first 8
// bytes free for the seq, so the payload is never copied again. from (nil for a stream source)
// gets an ack.
func (r *Room) publishBinary(from *conn, frame []byte) (uint64, error) {
	client := ""
	if from != nil {
		client = from.client
	}
	return r.sequence(from, client, "", func(seq uint64) []byte {
		binary.BigEndian.PutUint64(frame, seq)
		return frame
	}, true)
}

// sequence gives the next seq to a message, encodes it once (encode builds its wire frame),
// keeps it in history, queues it to every subscriber, and acks it to from when there is one.
func (r *Room) sequence(from *conn, client, id string, encode func(seq uint64) []byte, binary bool) (uint64, error) {
	if r.n.awaitFresh(r.n.ctx) != nil {
		return 0, ErrRoomClosed
	}
	r.mu.Lock()
	if !r.waitThawed() || r.n.stale() {
		r.mu.Unlock()
		return 0, ErrRoomClosed
	}
	if r.closed {
		r.mu.Unlock()
		return 0, ErrRoomClosed
	}
	if id != "" {
		if seq, ok := r.ids.lookup(id); ok {
			r.mu.Unlock()
			r.n.metrics.dedup.Inc()
			if from != nil {
				from.sendJSON(protocol.Ack{Type: protocol.TypeAck, ID: id, Seq: seq})
			}
			return seq, nil
		}
	}
	r.seq++
	seq := r.seq
	e := &entry{seq: seq, binary: binary, frame: encode(seq)}
	mt := websocket.TextMessage
	if binary {
		mt = websocket.BinaryMessage
	}
	pm, err := websocket.NewPreparedMessage(mt, e.frame)
	if err != nil {
		panic(err) // only fails for invalid message types
	}
	e.pm = pm
	r.hist.add(e)
	if id != "" {
		r.ids.remember(id, seq)
	}
	r.lastActive = time.Now()
	r.fanout(outFrame{msg: e})
	if from != nil {
		from.sendJSON(protocol.Ack{Type: protocol.TypeAck, ID: id, Seq: seq})
	}
	r.mu.Unlock()
	r.n.metrics.messages.Inc()
	return seq, nil
}

// waitThawed holds a write while a hand-off is in flight: it returns once the room is thawed
// (true) or closed, or after HandoffHold (false). r.mu is held, and released while waiting.
func (r *Room) waitThawed() bool {
	if !r.frozen {
		return true
	}
	t := time.NewTimer(r.n.cfg.HandoffHold)
	defer t.Stop()
	for r.frozen {
		ch := r.thaw
		r.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			r.mu.Lock()
			return false
		}
		r.mu.Lock()
	}
	return !r.closed
}

// freeze stops sequencing for a hand-off. It reports false when the room is closed or another
// hand-off holds it already. A parked room (an earlier attempt's outcome is unknown) is taken
// over as it is: still frozen, so its state is the one that may already be at the receiver.
func (r *Room) freeze() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || (r.frozen && !r.parked) {
		return false
	}
	if !r.frozen {
		r.frozen, r.thaw = true, make(chan struct{})
	}
	r.parked = false
	return true
}

// park leaves the room frozen after a hand-off whose outcome is unknown (the call failed: the
// receiver may or may not have installed it). Thawing could let two copies diverge, so the
// room stays frozen until a retry settles it or the ring gives it back to this node.
func (r *Room) park() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.frozen {
		r.parked = true
	}
}

// isParked reports whether the room waits for a hand-off to be retried.
func (r *Room) isParked() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.parked
}

// unfreeze resumes a room whose hand-off did not happen; held writes go on.
func (r *Room) unfreeze() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endFreeze()
}

// endFreeze wakes held writes. r.mu is held.
func (r *Room) endFreeze() {
	if r.frozen {
		r.frozen, r.parked = false, false
		close(r.thaw)
	}
}

// fanout queues f to every subscriber, dropping those that fell behind. r.mu is held.
func (r *Room) fanout(f outFrame) {
	for s := range r.subs {
		if !s.send(f) {
			delete(r.subs, s)
			r.removeMember(s.client)
		}
	}
}

// presenceOut queues a presence frame to the connections that asked for presence. r.mu is held.
func (r *Room) presenceOut(p protocol.Presence) {
	b, _ := json.Marshal(p)
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, b)
	if err != nil {
		panic(err)
	}
	for s := range r.subs {
		if s.presence && !s.send(outFrame{shared: pm}) {
			delete(r.subs, s)
			r.removeMember(s.client)
		}
	}
}

// addMember counts a connection of client; its first one joins the room. r.mu is held.
func (r *Room) addMember(client string) {
	r.members[client]++
	if r.members[client] == 1 {
		r.memberChanged(client, true)
	}
}

// removeMember uncounts a connection of client; its last one leaves the room. r.mu is held.
func (r *Room) removeMember(client string) {
	r.members[client]--
	if r.members[client] <= 0 {
		delete(r.members, client)
		r.memberChanged(client, false)
	}
}

// memberChanged announces a join or leave: as an event in small rooms, folded into the next
// interval summary in large ones. r.mu is held.
func (r *Room) memberChanged(client string, joined bool) {
	if len(r.members) <= r.n.cfg.PresenceAnnounceMax && r.timer == nil {
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
		r.timer = time.AfterFunc(r.n.cfg.PresenceInterval, r.presenceInterval)
	}
}

// presenceInterval sends the summary of what changed since the last one.
func (r *Room) presenceInterval() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timer = nil
	if r.closed || (len(r.joined) == 0 && len(r.left) == 0) {
		return
	}
	limit := r.n.cfg.PresenceAnnounceMax
	r.presenceOut(protocol.Presence{Type: protocol.TypePresence, Event: protocol.PresenceInterval,
		Count: len(r.members), Joined: capped(r.joined, limit), Left: capped(r.left, limit)})
	r.joined, r.left = nil, nil
}

func capped(set map[string]struct{}, limit int) []string {
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

// memberList is the presence list, capped at the announce limit. r.mu is held.
func (r *Room) memberList() []string {
	out := make([]string, 0, min(len(r.members), r.n.cfg.PresenceAnnounceMax))
	for k := range r.members {
		if len(out) == r.n.cfg.PresenceAnnounceMax {
			break
		}
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// farewell says how a closing room parts with its clients.
type farewell struct {
	code   int  // close code for WebSocket clients
	flush  bool // send what is queued before the close frame
	reason func(epoch string) closeReason
	source func(accepted uint64) string // the last line for TCP sources, given their accepted count
}

// closeAll closes the room: it takes no more joins or publishes, and every connection and source
// is sent on its way as f says.
func (r *Room) closeAll(f farewell) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	r.endFreeze() // held writes see the room closed and are refused as moved
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	for s := range r.subs {
		s.close(f.code, f.flush, f.reason(r.epoch))
	}
	for s := range r.sources {
		s.stop(f.source)
	}
	r.subs, r.sources = nil, nil
}

// addSource registers a TCP stream source and returns the room's seq.
func (r *Room) addSource(s *source) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, ErrRoomClosed
	}
	if r.n.stale() {
		return 0, ErrStale
	}
	if len(r.sources) >= r.n.cfg.MaxRoomSources {
		return 0, ErrRoomFull
	}
	r.sources[s] = struct{}{}
	r.lastActive = time.Now()
	return r.seq, nil
}

func (r *Room) removeSource(s *source) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.sources, s)
	r.lastActive = time.Now()
}

// idleSince reports whether the room has had no connection since before t, and if so closes it.
func (r *Room) reclaimIfIdle(before time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || len(r.subs) > 0 || len(r.sources) > 0 || r.lastActive.After(before) {
		return false
	}
	r.closed = true
	return true
}

// Stats are a room's counters for operators.
type Stats struct {
	Name  string `json:"room"`
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
	Conns int    `json:"conns"`
	Count int    `json:"count"`
}

func (r *Room) stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Name: r.name, Epoch: r.epoch, Seq: r.seq, Conns: len(r.subs), Count: len(r.members)}
}
