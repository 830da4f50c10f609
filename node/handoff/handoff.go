// Package handoff moves live rooms between nodes when the ring changes, without losing or
// doubling a message.
//
// The old owner O pushes: on every placement change (and again every retry until it is done) it
// freezes each room it lost (publishes wait), sends the rooms' state to the new owner G in one
// signed batch per gainer, and only when G has accepted them closes their clients with 4001
// naming G, and their stream sources with MOVED. If G refuses (its own placement does not name
// it the owner yet) or cannot be reached, the rooms thaw and O tries again later; O keeps the
// state until someone takes it. A pass is abandoned when the placement changes under it: the
// next pass works from the new one.
//
// The new owner pulls when asked first: a client for a room G owns but does not hold makes G
// ask the room's recent owners to release it, so G never starts a second copy while O holds
// one. If O still believes it owns the room, G redirects the client to O meanwhile. Only when no
// live previous owner holds the room — or O stays silent for ArriveTimeout — does G start the
// room afresh, with a new epoch, so clients resuming get a reset.
package handoff

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/ring"
	"golang.org/x/sync/singleflight"
)

// ErrNotOwner: this node's placement gives the room to another node.
var ErrNotOwner = errors.New("not the owner of this room")

// HeldError says a previous owner still holds the room: its clients should go there meanwhile.
type HeldError struct{ To ring.Member }

func (e *HeldError) Error() string { return "room held by " + e.To.ID }

// Ring is what moving rooms needs of the membership.
type Ring interface {
	ID() string
	Placement() *ring.Placement
	Subscribe() (<-chan *ring.Placement, func())
	Ready() bool
}

// Gate is the pause watchdog as hand-offs see it (see package pause): no state leaves, arrives
// or is created on a node that may be stale.
type Gate interface {
	room.Gate
	Quarantined() bool
	AwaitQuarantine(ctx context.Context) error
	NoteTakeover(ids []string)
}

// Metrics are the counters and timings of hand-offs.
type Metrics struct {
	Handoffs    *prometheus.CounterVec // rooms sent, by result: ok, refused, failed
	Bytes       prometheus.Counter     // bytes of state sent
	Seconds     prometheus.Observer    // one batch, from freeze to acceptance
	RoomsLost   prometheus.Counter     // rooms handed to another node
	RoomsGained *prometheus.CounterVec // rooms started here, by how: handoff, fresh, timeout
	Settled     *prometheus.CounterVec // parked rooms settled, by outcome: fenced, held, refounded
	Fences      prometheus.Counter     // attempts fenced here for their senders
	Expired     prometheus.Counter     // lost rooms whose lease ran out
	Tails       prometheus.Counter     // rooms sent to a replica of them: the tail only
}

// Config configures a Mover.
type Config struct {
	Ring    Ring
	Rooms   *room.Table  // the node's rooms
	Room    *room.Config // what rooms made here share
	Peers   *peer.Client // node-to-node calls, signed
	Gate    Gate
	Log     *slog.Logger
	Metrics Metrics
	// Timeout bounds one hand-off call; FenceWait is how long a receiver waits for its placement
	// to name it the owner; ArriveTimeout is how long a gained room waits for a silent previous
	// owner before it starts afresh.
	Timeout, FenceWait, ArriveTimeout time.Duration
	// Silent is when a node, were it cut off, has stopped writing for sure (see quorum.Tracker);
	// a room whose owner was declared dead starts afresh no sooner. nil: at once.
	Silent func(node string) time.Time
	// Heard reports whether a node answered this one's heartbeats lately (see quorum.Tracker).
	// nil: never.
	Heard func(node string) bool
	// Promote serves this node's replica copy of a room whose owner was declared dead, if it
	// holds one (see package replica), where the room would otherwise start afresh: no live
	// node holds it. nil: no replication.
	Promote func(ctx context.Context, room string) (*room.Room, error)
	// Arrived is told of every room installed from a hand-off (its replica copy, if any, is
	// stale now).
	Arrived func(room string)
	// Holds is, for a room about to be handed to node to, the seq up to which to holds its
	// messages as a replica (0: it does not); only what follows is sent. Complete fills in such
	// a tail on the receiver from its replica copy, which from extended, or reports false (the
	// sender then sends the whole state). nil: no replication.
	Holds    func(r *room.Room, to string) uint64
	Complete func(from string, st room.State) (room.State, bool)
	// Seeded seeds the replicas of rooms just installed from a hand-off and waits until they
	// hold them (or ctx ends): only then does the receiver answer. nil: no replication.
	Seeded func(ctx context.Context, rooms []*room.Room)
	// Copied is where this node's replica copy of a room is, if it holds one. nil: no
	// replication.
	Copied func(room string) (Copy, bool)
	// Admit is asked before a room is created afresh; an error refuses it (the node is closing,
	// holds its maximum of rooms, or is near its memory limit).
	Admit func() error
	// Done is closed when the node closes: nothing is accepted or waited for after it.
	Done <-chan struct{}
}

// Mover sends rooms this node lost, receives rooms it gained, and acquires rooms its clients
// ask for. Its methods are safe for concurrent use.
type Mover struct {
	cfg      Config
	self     string
	arrivals singleflight.Group // one acquisition per room at a time

	mu      sync.Mutex
	past    []*ring.Placement    // the last few placements, to find a room's previous owners
	alts    []*ring.Placement    // the newest one's counterfactuals (see Remember)
	changed time.Time            // when the placement version last changed
	reached map[string]time.Time // per node: when a call to it last started that then succeeded

	fenceMu sync.Mutex
	fences  map[string]fence // attempts settled as never to be installed, by room (see ServeFence)

	sentMu sync.Mutex
	sent   map[string]sent // rooms handed off lately, by room (see ServeRelease)
}

// sent is where this node handed a room, and when.
type sent struct {
	to string
	at time.Time
}

// maxSent bounds the hand-offs a node remembers; past it those older than settleWindow go, then
// the oldest.
const maxSent = 1 << 16

// noteSent remembers that room was handed to node to: asked for it within settleWindow, this
// node answers where it went rather than "absent", so an asker whose ring has not yet caught up
// with the receiver keeps looking instead of starting a second copy.
func (m *Mover) noteSent(name, to string) {
	now := time.Now()
	m.sentMu.Lock()
	defer m.sentMu.Unlock()
	m.sent[name] = sent{to: to, at: now}
	bound(m.sent, maxSent, settleWindow, now, func(s sent) time.Time { return s.at })
}

// bound keeps remembered at most max entries: past it, those older than keep go, then the
// oldest one (at says when an entry was made).
func bound[V any](remembered map[string]V, max int, keep time.Duration, now time.Time, at func(V) time.Time) {
	if len(remembered) <= max {
		return
	}
	oldest, when := "", now
	for k, v := range remembered {
		if t := at(v); now.Sub(t) > keep {
			delete(remembered, k)
		} else if t.Before(when) {
			oldest, when = k, t
		}
	}
	if len(remembered) > max {
		delete(remembered, oldest)
	}
}

// sentTo is the node this one handed room to within settleWindow, if it did.
func (m *Mover) sentTo(name string) (string, bool) {
	m.sentMu.Lock()
	defer m.sentMu.Unlock()
	s, ok := m.sent[name]
	if !ok || time.Since(s.at) > settleWindow {
		return "", false
	}
	return s.to, true
}

// fence is one hand-off attempt this node promised never to install.
type fence struct {
	epoch string
	term  uint64 // the term the attempt would have been installed at
	at    time.Time
}

// fenceFor is how long a fence is kept at least: far longer than a hand-off call can be delayed.
const fenceFor = 10 * time.Minute

// maxFences bounds the fences a node keeps; past it the oldest go first.
const maxFences = 1 << 16

// New makes a Mover. Call Remember with the current placement before serving.
func New(cfg Config) *Mover {
	return &Mover{cfg: cfg, self: cfg.Ring.ID(), reached: map[string]time.Time{}, fences: map[string]fence{}, sent: map[string]sent{}}
}

// leaseOf is how long a room this node lost goes on sequencing after it last reached the room's
// new owner: half the time that owner waits for a silent previous owner before it starts the
// room afresh (ArriveTimeout), so the old copy has stopped before a new one can start, with
// room for the two nodes to have seen the ring change at different moments.
func (m *Mover) leaseOf() time.Duration { return m.cfg.ArriveTimeout / 2 }

// leaseCap bounds a lost room's lease however often the new owner is reached: that owner gives
// up on a previous owner that answers "busy" after 4 × ArriveTimeout (see arrive).
func (m *Mover) leaseCap() time.Duration { return 2 * m.cfg.ArriveTimeout }

// leaseUntil is when a room lost at lostAt to owner stops sequencing.
func (m *Mover) leaseUntil(owner string, lostAt time.Time) time.Time {
	m.mu.Lock()
	from := m.reached[owner]
	m.mu.Unlock()
	if from.Before(lostAt) {
		from = lostAt
	}
	until, limit := from.Add(m.leaseOf()), lostAt.Add(m.leaseCap())
	if limit.Before(until) {
		return limit
	}
	return until
}

// reach records a call to node, started at start, that succeeded.
func (m *Mover) reach(node string, start time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if start.After(m.reached[node]) {
		m.reached[node] = start
	}
}

// pastPlacements is how many earlier placements are kept to find where a room was.
const pastPlacements = 4

// Remember keeps p, and where rooms were just before it, for finding rooms' previous owners.
// Subscriptions deliver only the newest placement, and a node that just joined has seen none
// before its own, so past placements alone can miss where a room is.
func (m *Mover) Remember(p *ring.Placement) {
	alts := p.Counterfactuals(m.self)
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := len(m.past); n == 0 || m.past[n-1].Version() != p.Version() {
		m.changed = time.Now()
	}
	m.past = append(m.past, p)
	if len(m.past) > pastPlacements {
		m.past = m.past[1:]
	}
	m.alts = alts
}

// owner is the room's owner by this node's placement.
func (m *Mover) owner(name string) (ring.Member, *ring.Placement, bool) {
	p := m.cfg.Ring.Placement()
	o, ok := p.Owner(name)
	return o, p, ok
}

// owns reports whether this node's placement names it the room's owner.
func (m *Mover) owns(name string) bool {
	o, _, ok := m.owner(name)
	return ok && o.ID == m.self
}

func (m *Mover) closed() bool {
	select {
	case <-m.cfg.Done:
		return true
	default:
		return false
	}
}
