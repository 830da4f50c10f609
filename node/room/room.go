// Package room is one room in memory at its owner, and the connections it writes to: the
// sequencing of messages, the bounded history and remembered publish ids, presence, the freeze a
// hand-off puts a room in, and each connection's queue and writer. It knows nothing of the ring,
// HTTP or other nodes: the node decides which rooms exist and where their clients come from.
package room

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/protocol"
)

// Errors a room operation can end with.
var (
	// ErrClosed: the room was reclaimed or moved while the caller held it; look it up again.
	ErrClosed = errors.New("room closed")
	// ErrFull: the room has as many connections (or stream sources) as Config allows.
	ErrFull = errors.New("room full")
	// ErrStale: the node was paused and has not decided yet whether this copy is still the room.
	ErrStale = errors.New("node catching up with the ring")
	// ErrOverloaded: the node's memory budget has no room for the message (see Config.Budget);
	// it was not sequenced, and nothing sequenced before is dropped.
	ErrOverloaded = limit.ErrOverloaded
)

// Config is what a node's rooms and connections share. Every field is set by the node.
type Config struct {
	Node                string // the node's id, named in welcomes
	HistoryCount        int    // retained messages per room, at most
	HistoryBytes        int    // retained bytes per room, at most (the newest message always stays)
	DedupeIDs           int    // remembered publish ids per room
	DedupeClientIDs     int    // and per recent publisher of a room (see dedupe)
	MaxConns            int    // WebSocket connections per room
	MaxSources          int    // TCP stream sources per room
	PresenceAnnounceMax int    // presence is sent as events up to this many members, as summaries above
	PresenceInterval    time.Duration
	HoldWrites          time.Duration // how long a write waits while a hand-off holds the room
	SendQueue           int           // frames queued to one connection before it is closed with 4008
	SendQueueBytes      int           // memory queued to one connection (see entry.cost) before it is closed with 4008
	LegSendQueue        int           // SendQueue for a router's edge leg (see edge.go); 0: SendQueue
	LegSendQueueBytes   int           // SendQueueBytes for an edge leg; 0: SendQueueBytes
	// Budget counts the memory rooms keep for clients (history, queued messages, remembered ids)
	// node-wide, and refuses a publish that would grow it past its limit. nil: unbounded.
	Budget       *limit.Budget
	WriteTimeout time.Duration
	PingInterval time.Duration
	Gate         Gate
	// Webhook, when set, keeps an outbox of webhook events in every room (see outbox.go).
	Webhook *Webhook
	// Quorum says whether the node may sequence anything now (see Quorum). nil: always.
	Quorum Quorum
	// Replicator holds each message until the room's replicas have it (see commit.go). nil:
	// messages commit as they are sequenced.
	Replicator Replicator
	Metrics    Metrics
}

// Quorum tells rooms whether the node may take writes: not while it has lost touch with most of
// the cluster at once, when it is more likely cut off than its peers dead (see ring.Minority).
type Quorum interface {
	Writable() bool
}

// Gate tells rooms whether the node may serve: after a pause it may hold stale copies until its
// watchdog decides (see package pause).
type Gate interface {
	Stale() bool
	AwaitFresh(ctx context.Context) error
}

// Metrics are the counters rooms and connections update.
type Metrics struct {
	Messages      prometheus.Counter // messages sequenced
	Duplicates    prometheus.Counter // publishes acked again for a remembered id
	Deliveries    prometheus.Counter // messages written to connections
	SlowConsumers prometheus.Counter // connections closed with 4008
	Overloaded    prometheus.Counter // publishes refused by the budget; nil: not counted
}

// state is where a room is in its life.
type state int

const (
	live   state = iota
	frozen       // a hand-off is in flight: nothing new is sequenced
	parked       // frozen by a hand-off whose outcome is unknown; retried as it is
	closed       // reclaimed, moved or dropped: look the room up again
)

// Room is one room in memory at its owner. Its mutex orders everything that happens in it: a
// message is sequenced and queued to every subscriber under the lock, so every subscriber sees
// the same order, and a joining client is registered and handed its history in one step, so it
// sees neither a hole nor a duplicate between history and live messages.
type Room struct {
	name string
	cfg  *Config

	mu         sync.Mutex
	state      state
	thaw       chan struct{} // closed when a freeze ends (thawed, or the room closed)
	epoch      string
	term       uint64 // grows on every change of owner (see ownership.go)
	seq        uint64 // the newest seq given
	committed  uint64 // the newest seq delivered and acked (see commit.go)
	held       []pending
	own        ownership
	hist       history
	ids        dedupe
	subs       map[*Conn]struct{}
	legs       int                  // how many of subs are routers' edge legs (see edge.go)
	vias       map[*Conn]struct{}   // clients joined through a leg: counted and welcomed, written to on their leg
	sources    map[*Source]struct{} // TCP stream sources
	fed        map[string]uint64    // frames held of each named stream source (see Fed)
	members    map[string]int       // presence: client id → open connections
	joined     map[string]struct{}
	left       map[string]struct{}
	timer      *time.Timer // pending presence interval, for large rooms
	lastActive time.Time
	commits    chan struct{} // closed when committed grows or the room closes (see awaitCommitted)
	box        outbox        // webhook events (see outbox.go)
	lastAppend *Append       // the newest message's append, sent again with outbox changes
}

// New makes an empty room with a new epoch.
func New(cfg *Config, name string) *Room {
	return &Room{
		name:       name,
		cfg:        cfg,
		epoch:      newEpoch(),
		term:       1,
		hist:       history{maxCount: cfg.HistoryCount, maxBytes: cfg.HistoryBytes, budget: cfg.Budget},
		ids:        dedupe{max: cfg.DedupeIDs, perClient: cfg.DedupeClientIDs, budget: cfg.Budget},
		subs:       map[*Conn]struct{}{},
		vias:       map[*Conn]struct{}{},
		sources:    map[*Source]struct{}{},
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

// Name is the room's name.
func (r *Room) Name() string { return r.name }

// Resume is what a client asked for on connect.
type Resume struct {
	Since    uint64
	HasSince bool
	Epoch    string
	// Rejoin: a client whose router moved its edge leg here; it has the room up to the leg's own
	// resume point, so it is counted in again without a welcome or a replay (see JoinLeg).
	Rejoin bool
}

// Join registers c and queues, in order: welcome, a reset or gap if the resume needs one, the
// history owed, the presence state if asked for. Everything after is live.
func (r *Room) Join(c *Conn, res Resume) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == closed {
		return ErrClosed
	}
	if r.cfg.Gate.Stale() {
		return ErrStale // woken from a pause: this copy may be stale until the watchdog decides
	}
	if r.conns() >= r.cfg.MaxConns {
		return ErrFull
	}
	if c.leg != nil {
		if _, ok := r.subs[c.leg]; !ok {
			return ErrClosed // its leg was dropped: the router re-attaches it
		}
	}
	r.lastActive = time.Now()
	r.addMember(c.client) // before c is a subscriber: its own join reaches the others only
	if c.leg != nil {
		r.vias[c] = struct{}{}
	} else {
		r.subs[c] = struct{}{}
	}
	if !res.Rejoin {
		c.sendJSON(protocol.Welcome{Type: protocol.TypeWelcome, Room: r.name, Node: r.cfg.Node, Client: c.client,
			Epoch: r.epoch, Seq: r.committed, Count: len(r.members)})
		r.replay(c, res)
	}
	if c.presence {
		c.sendJSON(protocol.Presence{Type: protocol.TypePresence, Event: protocol.PresenceState,
			Clients: r.memberList(), Count: len(r.members)})
	}
	return nil
}

// replay queues to c what its resume res is owed: a reset or gap if it needs one, then the
// history. r.mu is held.
func (r *Room) replay(c *Conn, res Resume) {
	if res.HasSince || res.Epoch != "" {
		since := res.Since
		if (res.Epoch != "" && res.Epoch != r.epoch) || since > r.committed {
			// The numbering the client knows is gone: say so, then continue as from the start
			// of this epoch.
			c.sendJSON(protocol.Reset{Type: protocol.TypeReset, Epoch: r.epoch, Seq: r.committed})
			since = 0
		}
		if first := r.hist.first(); since < r.committed && (first == 0 || since+1 < first) {
			to := r.committed
			if first != 0 {
				to = first - 1
			}
			c.sendJSON(protocol.Gap{Type: protocol.TypeGap, From: since + 1, To: to})
		}
		if owed := r.hist.between(since, r.committed); len(owed) > 0 {
			c.send(outFrame{replay: slices.Clone(owed)})
		}
	}
}

// Leave unregisters c.
func (r *Room) Leave(c *Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.vias[c]; ok {
		delete(r.vias, c)
		r.removeMember(c.client)
		r.lastActive = time.Now()
		return
	}
	if _, ok := r.subs[c]; !ok {
		return
	}
	r.dropSub(c)
	r.lastActive = time.Now()
}

// Publish sequences one text message from c and queues it to every subscriber, then acks it to
// c. A repeated id is acked with its first seq and not delivered again. data is the message's
// JSON value. It waits while the node decides about a pause or a hand-off holds the room. A
// message the node's memory budget has no room for is refused: c gets an error frame
// `overloaded` (the room answers c, as it acks it) and Publish returns nil.
func (r *Room) Publish(ctx context.Context, c *Conn, id string, data []byte) error {
	_, err := r.sequence(ctx, c, c.client, id, func(seq uint64) []byte {
		b := make([]byte, 0, 64+len(data)+len(c.client)+len(id))
		return protocol.AppendMessage(b, seq, c.client, id, data)
	}, false, "")
	return err
}

// PublishSourced sequences one frame of the named stream source source, counting it among the
// frames the room holds of that source (see Fed).
func (r *Room) PublishSourced(ctx context.Context, source string, frame []byte) (uint64, error) {
	return r.sequence(ctx, nil, "", "", func(seq uint64) []byte {
		binary.BigEndian.PutUint64(frame, seq)
		return frame
	}, true, source)
}

// PublishBinary sequences one binary message. frame is the whole wire frame with its first 8
// bytes free for the seq, so the payload is never copied again. from (nil for a stream source)
// gets an ack, or the error frame `overloaded` when the budget refuses the message; without
// from, that refusal is ErrOverloaded.
func (r *Room) PublishBinary(ctx context.Context, from *Conn, frame []byte) (uint64, error) {
	client := ""
	if from != nil {
		client = from.client
	}
	return r.sequence(ctx, from, client, "", func(seq uint64) []byte {
		binary.BigEndian.PutUint64(frame, seq)
		return frame
	}, true, "")
}

// sequence gives the next seq to a message, encodes it once (encode builds its wire frame),
// keeps it in history, queues it to every subscriber, and acks it to from when there is one.
func (r *Room) sequence(ctx context.Context, from *Conn, client, id string, encode func(seq uint64) []byte, binary bool, source string) (uint64, error) {
	if r.cfg.Gate.AwaitFresh(ctx) != nil {
		return 0, ErrClosed
	}
	r.mu.Lock()
	if !r.waitWritable() || r.cfg.Gate.Stale() {
		r.mu.Unlock()
		return 0, ErrClosed
	}
	if id != "" {
		if seq, ok := r.ids.lookup(id); ok {
			if from != nil {
				r.ackWhenCommitted(from, id, seq)
			}
			r.mu.Unlock()
			r.cfg.Metrics.Duplicates.Inc()
			return seq, nil
		}
	}
	seq := r.seq + 1
	e := newEntry(seq, binary, encode(seq))
	if grow := r.hist.growth(e.size(), e.cost()) + r.ids.growth(client, id); grow > 0 && !r.cfg.Budget.Fits(grow) && !r.shedOutbox(grow) {
		r.mu.Unlock()
		if m := r.cfg.Metrics.Overloaded; m != nil {
			m.Inc()
		}
		if from != nil {
			from.sendJSON(protocol.ErrorFrame{Type: protocol.TypeError, Code: limit.CodeOverloaded, ID: id, Error: overloadedSentence})
			return 0, nil
		}
		return 0, ErrOverloaded
	}
	r.seq = seq
	r.hist.add(e)
	if id != "" {
		r.ids.remember(client, id, seq)
	}
	if source != "" {
		r.feed(source)
	}
	r.lastActive = time.Now()
	r.commitOrHold(e, from, client, id, source)
	r.mu.Unlock()
	r.cfg.Metrics.Messages.Inc()
	return seq, nil
}

// waitWritable holds a write while the room may not sequence it: a hand-off is in flight, the
// room's lease as a lost room ran out, or the node is in a minority or was until the room is
// settled (see ownership.go). It
// returns true once the room may write, false when it is closed or after HoldWrites. r.mu is
// held, and released while waiting.
func (r *Room) waitWritable() bool {
	now := time.Now()
	if r.writable(now) {
		return true
	}
	deadline := now.Add(r.cfg.HoldWrites)
	t := time.NewTimer(r.cfg.HoldWrites)
	defer t.Stop()
	for r.state != closed && !r.writable(now) {
		if !now.Before(deadline) {
			return false
		}
		var thaw chan struct{}
		var poll <-chan time.Time
		if r.state == frozen || r.state == parked {
			thaw = r.thaw
		} else {
			// A lease or the quorum: they come back with time, not with an event of the room's.
			poll = time.After(min(leasePoll, deadline.Sub(now)))
		}
		r.mu.Unlock()
		select {
		case <-thaw:
		case <-poll:
		case <-t.C:
		}
		r.mu.Lock()
		now = time.Now()
	}
	return r.state != closed && r.writable(now)
}

// Freeze stops sequencing for a hand-off. It reports false when the room is closed, another
// hand-off holds it already, or it is parked: an earlier attempt's outcome is unknown, and it
// must be settled with that attempt's receiver first (see Settle).
func (r *Room) Freeze() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != live {
		return false
	}
	r.state, r.thaw = frozen, make(chan struct{})
	return true
}

// Park leaves the room frozen after a hand-off to to whose outcome is unknown (the call failed:
// the receiver may or may not have installed it). Thawing could let two copies diverge, so the
// room stays frozen until it is settled with to (see Settle).
func (r *Room) Park(to string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == frozen {
		r.state = parked
		r.own.parkedWith = to
	}
}

// Unfreeze resumes a room whose hand-off did not happen (the receiver refused, or answered that
// it did not take it); held writes go on. A parked room is not thawed so: see Settle.
func (r *Room) Unfreeze() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == frozen {
		r.state = live
		close(r.thaw)
	}
}

// fanout queues f to every subscriber, dropping those that fell behind. r.mu is held.
func (r *Room) fanout(f outFrame) {
	for s := range r.subs {
		if !s.send(f) {
			r.dropSub(s)
		}
	}
}

// Close closes the room: it takes no more joins or publishes, and every connection and source is
// sent on its way as f says. Writes held by a freeze are refused.
func (r *Room) Close(f Farewell) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == closed {
		return
	}
	if r.state == frozen || r.state == parked {
		close(r.thaw)
	}
	r.state = closed
	r.committedMore()
	r.stopOutbox()
	r.forget()
	clear(r.held)
	r.held = nil
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	for s := range r.subs {
		s.close(f, r.epoch)
	}
	for s := range r.sources {
		s.Stop(f)
	}
	r.subs, r.sources, r.vias, r.legs = nil, nil, nil, 0
}

// AddSource registers a TCP stream source and returns the room's seq.
func (r *Room) AddSource(s *Source) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == closed {
		return 0, ErrClosed
	}
	if r.cfg.Gate.Stale() {
		return 0, ErrStale
	}
	if len(r.sources) >= r.cfg.MaxSources {
		return 0, ErrFull
	}
	r.sources[s] = struct{}{}
	r.lastActive = time.Now()
	return r.committed, nil
}

// RemoveSource unregisters s.
func (r *Room) RemoveSource(s *Source) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.sources, s)
	r.lastActive = time.Now()
}

// ReclaimIfIdle reports whether the room has had no connection since before t, and if so closes
// it.
func (r *Room) ReclaimIfIdle(before time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == closed || len(r.subs) > 0 || len(r.sources) > 0 || r.lastActive.After(before) || len(r.box.Events) > 0 {
		return false // a room with webhook events to deliver is kept until they are
	}
	r.state = closed
	r.forget()
	return true
}

// forget lets go of the history and remembered ids of a room that is gone, giving their memory
// back to the budget (messages still queued to connections stay counted until written). r.mu
// is held.
func (r *Room) forget() {
	r.hist.clear()
	r.ids.clear()
	r.forgetOutbox()
}

// overloadedSentence is the error of a publish the budget refused.
const overloadedSentence = "this node is near its memory limit (--memory-budget-mib, --max-memory-mib); the publish was not delivered, send it again later"

// Stats are a room's counters for operators.
type Stats struct {
	Name  string `json:"room"`
	Epoch string `json:"epoch"`
	Term  uint64 `json:"term"`
	Seq   uint64 `json:"seq"`
	Conns int    `json:"conns"`
	Count int    `json:"count"`
}

// Stats reads the room's counters.
// Full reports whether the room holds as many connections as Config.MaxConns allows: one more
// would be refused by Join with ErrFull.
func (r *Room) Full() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns() >= r.cfg.MaxConns
}

func (r *Room) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Name: r.name, Epoch: r.epoch, Term: r.term, Seq: r.committed, Conns: r.conns(), Count: len(r.members)}
}
