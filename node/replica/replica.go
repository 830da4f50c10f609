// Package replica keeps every room on its owner and on its heirs — the nodes that would own it
// if its owner left (ring.Placement.Heirs) — so a crash hands a room to a node that already
// holds it, in the same epoch, with every acknowledged message.
//
// The owner's side is the Replicator: a room hands it each message it sequences (room.
// Replicator); the Replicator sends it to each of the room's replicas over one stream per node
// (batched, pipelined) and commits the message — the room delivers and acks it — once every
// replica that counts holds it. A replica counts once its seed (the room's whole state, sent
// when it becomes one, or after its stream broke) is held; one whose stream broke keeps counting
// for ReplicaTimeout, so a replica that stops answering holds acks only that long (or until the
// ring changes), and the room is then under-replicated: counted, logged, and seeded again when
// the stream is back.
//
// The replica's side is the Store: copies of rooms (Rooms nobody joins), built from seeds and
// extended by appends, each only from the node its own ring names the room's owner and never
// from an older ownership term. When the ring declares an owner dead, the heir that now owns
// its room takes the copy (Take) and serves it at the next term.
package replica

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/roost-dev/roost/internal/loop"
	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/ring"
)

// Ring is what replication needs of the membership.
type Ring interface {
	ID() string
	Placement() *ring.Placement
}

// Gate is the pause watchdog (package pause): a stale node applies and promotes nothing.
type Gate interface {
	Stale() bool
}

// Metrics are replication's counters.
type Metrics struct {
	Appends  prometheus.Counter // messages applied to copies here
	Seeds    prometheus.Counter // copies seeded here
	Batches  prometheus.Counter // batches sent
	Promoted prometheus.Counter // copies promoted to rooms here
}

// Config configures replication. Every field is set by the node.
type Config struct {
	Ring     Ring
	Rooms    *room.Table
	Room     *room.Config // what copies are made with
	Peers    *peer.Client
	Gate     Gate
	Replicas int // replicas per room, besides the owner
	// ReplicaTimeout is how long a replica whose stream broke still holds its rooms' acks.
	ReplicaTimeout time.Duration
	DialTimeout    time.Duration
	WriteTimeout   time.Duration
	MaxFrame       int64 // the largest replication frame taken
	Log            *slog.Logger
	Metrics        Metrics
	// Install puts a promoted copy in the room table (the node's admission applies).
	Install func(r *room.Room) bool
	// Acquire is the hand-off's way to a room this node owns and does not hold: it asks the
	// live nodes first and promotes the copy here only if none holds the room. Replication
	// calls it for the rooms of a dead owner it holds copies of, so they are served before a
	// client asks.
	Acquire func(ctx context.Context, room string)
	// Writable says whether the node may take writes (not in a minority: see package quorum);
	// Silent when a node, were it cut off, has stopped writing for sure. A copy is promoted
	// only when both hold: a node cut off from the rest sees every owner die, and must not take
	// their rooms; an owner that is merely cut off must have stopped before its heir goes on.
	Writable func() bool
	Silent   func(node string) time.Time
	// Answers calls a node now and reports whether it answered. A copy whose owner answers is
	// not promoted, whatever this node's ring says: the owner is alive and may be writing, and
	// it is this node's ring that is behind (as after a partition healed).
	Answers func(ctx context.Context, node string) bool

	ctx context.Context
}

// Replicator is the owner's side of replication, and holds the node's Store.
type Replicator struct {
	cfg   Config
	self  string
	store *Store
	gens  atomic.Uint64
	wake  chan struct{}
	under atomic.Int64
	// underSince is when some room became under-replicated while none was, underLogged when
	// that was last logged (rep.mu); both zero while none is.
	underSince, underLogged time.Time

	mu      sync.Mutex
	streams map[string]*streamRun
	rooms   map[string]*roomState
	version string // the placement the last full pass worked from
	retry   bool   // a replica refused a room: the next tick makes a full pass to seed it again
	wg      sync.WaitGroup
	// acquiring are the rooms of dead owners being acquired (see acquire).
	acquiring map[string]bool
}

type streamRun struct {
	s      *stream
	cancel context.CancelFunc
}

// roomState is a room's replicas as its owner sees them.
type roomState struct {
	r       *room.Room
	version string // the placement its targets were chosen from
	targets []*target
}

// target is one replica of one room.
type target struct {
	s      *stream
	gen    uint64    // the stream connection its seed went on; 0: to seed
	seeded bool      // a seed of it was held: it counts
	acked  uint64    // the newest seq it holds
	down   time.Time // when its stream broke, while it still counts
	since  time.Time // when it became one of the room's replicas, or was to be seeded again
}

// New makes a Replicator with its Store; Run it.
func New(ctx context.Context, cfg Config) *Replicator {
	cfg.ctx = ctx
	rep := &Replicator{cfg: cfg, self: cfg.Ring.ID(), wake: make(chan struct{}, 1),
		streams: map[string]*streamRun{}, rooms: map[string]*roomState{}}
	rep.store = &Store{cfg: &rep.cfg, copies: map[string]*copyOf{}}
	return rep
}

// Store is the node's replica copies.
func (rep *Replicator) Store() *Store { return rep.store }

// UnderReplicated is the number of rooms with fewer replicas that count than asked for (and
// than there are other nodes), as of the last pass.
func (rep *Replicator) UnderReplicated() int { return int(rep.under.Load()) }

// AwaitSeeded seeds the replicas of rooms (just installed here) and waits until each replica
// holds its seed — also one whose stream is still connecting, for up to ReplicaTimeout — or ctx
// ends: a hand-off's receiver answers only then, so a crash of the receiver right after the
// hand-off finds the rooms on its heirs.
func (rep *Replicator) AwaitSeeded(ctx context.Context, rooms []*room.Room) {
	for _, r := range rooms {
		r.Seed(func(snapshot func() room.State) {
			rep.mu.Lock()
			rep.prepare(r, snapshot)
			rep.mu.Unlock()
		})
	}
	seeded := func() bool {
		rep.mu.Lock()
		defer rep.mu.Unlock()
		now := time.Now()
		for _, r := range rooms {
			rs := rep.rooms[r.Name()]
			if rs == nil || rs.r != r {
				continue // closed or gone meanwhile
			}
			for _, t := range rs.targets {
				// A seed on its way, or a replica whose stream is not connected yet (it is seeded
				// once it is): both count, as for the room's acks (holds), until ReplicaTimeout.
				if !t.seeded && (t.gen != 0 || now.Sub(t.since) < rep.cfg.ReplicaTimeout) {
					return false
				}
			}
		}
		return true
	}
	for !seeded() {
		t := time.NewTimer(2 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Holds is the seq up to which peer holds r's messages as one of its replicas that counts (0:
// it is none, or its stream is down): a hand-off of r to peer need send only what follows.
func (rep *Replicator) Holds(r *room.Room, peer string) uint64 {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	rs := rep.rooms[r.Name()]
	if rs == nil || rs.r != r {
		return 0
	}
	t := rs.target(peer)
	if t == nil || !t.seeded || t.gen == 0 {
		return 0
	}
	return t.acked
}

// Wake asks for a pass now: the ring changed.
func (rep *Replicator) Wake() { rep.reconcileSoon() }

func (rep *Replicator) reconcileSoon() {
	select {
	case rep.wake <- struct{}{}:
	default:
	}
}

// Run reconciles replica sets every 250 ms (and when woken) until ctx ends, then stops the
// streams.
func (rep *Replicator) Run(ctx context.Context) {
	defer func() {
		rep.mu.Lock()
		for _, s := range rep.streams {
			s.cancel()
		}
		rep.mu.Unlock()
		rep.wg.Wait()
	}()
	prune := time.Now()
	pass := func(full bool) {
		rep.reconcile(full)
		if time.Since(prune) > 5*time.Second {
			prune = time.Now()
			rep.store.prune()
			rep.reconcile(true) // and seed what nothing else made seed (a room that arrived idle)
		}
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pass(rep.cfg.Ring.Placement().Version() != rep.seen() || rep.takeRetry())
		case <-rep.wake:
			pass(true)
		}
	}
}

// Append is room.Replicator's: it sends the message to the room's replicas, seeding those that
// need it with snapshot (which holds the message).
func (rep *Replicator) Append(r *room.Room, a room.Append, snapshot func() room.State) bool {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	rs, seeded := rep.prepare(r, snapshot)
	counts := false
	for _, t := range rs.targets {
		if !seeded[t] && t.gen != 0 && !t.s.send(t.gen, Item{Append: &Entry{Room: r.Name(), Append: a}}) {
			t.gen = 0 // its stream broke: seeded again on the next one
		}
		counts = counts || rep.holds(t, time.Now())
	}
	return counts
}

// prepare brings r's replica set to the current placement and seeds the targets that need it,
// reporting which it seeded now. rep.mu and r's lock are held.
func (rep *Replicator) prepare(r *room.Room, snapshot func() room.State) (*roomState, map[*target]bool) {
	name := r.Name()
	p := rep.cfg.Ring.Placement()
	rs := rep.rooms[name]
	if rs == nil || rs.r != r {
		rs = &roomState{r: r}
		rep.rooms[name] = rs
	}
	if rs.version != p.Version() {
		rs.version = p.Version()
		heirs := p.Heirs(name, rep.cfg.Replicas+1)
		if len(heirs) > 0 && heirs[0].ID == rep.self {
			var next []*target
			for _, h := range heirs[1:] {
				t := rs.target(h.ID)
				if t == nil {
					t = &target{s: rep.streamFor(h), since: time.Now()}
				}
				next = append(next, t)
			}
			rs.targets = next
		}
	}
	var st *room.State
	seeded := map[*target]bool{}
	for _, t := range rs.targets {
		gen := t.s.generation()
		if t.gen != 0 && t.gen == gen {
			continue
		}
		t.gen = 0
		if gen == 0 {
			continue // not connected: seeded once it is
		}
		if st == nil {
			s := snapshot()
			st = &s
		}
		if t.s.send(gen, Item{Seed: st}) {
			t.gen = gen
			seeded[t] = true
		}
	}
	return rs, seeded
}

func (rs *roomState) target(peer string) *target {
	for _, t := range rs.targets {
		if t.s.peer == peer {
			return t
		}
	}
	return nil
}

// counts reports whether t holds acks back now: it is seeded, and its stream is up or broke
// less than ReplicaTimeout ago.
func (rep *Replicator) counts(t *target, now time.Time) bool {
	if !t.seeded {
		return false
	}
	return t.gen != 0 || !t.down.IsZero() && now.Sub(t.down) < rep.cfg.ReplicaTimeout
}

// holds reports whether t holds acks back now: it counts, or it became a replica less than
// ReplicaTimeout ago and its seed is not held yet. So a room that just gained its replica set
// (it was created, promoted, or arrived) acks nothing its replicas do not hold, unless they stay
// out of reach that long: a crash right after a move loses nothing acknowledged either.
func (rep *Replicator) holds(t *target, now time.Time) bool {
	return rep.counts(t, now) || !t.seeded && now.Sub(t.since) < rep.cfg.ReplicaTimeout
}

// commitOf is the newest seq every replica of rs that holds acks back holds; MaxUint64 when none
// does.
// rep.mu is held.
func (rep *Replicator) commitOf(rs *roomState, now time.Time) uint64 {
	c := uint64(math.MaxUint64)
	for _, t := range rs.targets {
		if rep.holds(t, now) {
			c = min(c, t.acked)
		}
	}
	return c
}

// streamFor is the stream to m, started on first use. rep.mu is held.
func (rep *Replicator) streamFor(m ring.Member) *stream {
	if sr, ok := rep.streams[m.ID]; ok {
		sr.s.mu.Lock()
		sr.s.member = m
		sr.s.mu.Unlock()
		return sr.s
	}
	s := newStream(rep, m)
	ctx, cancel := context.WithCancel(rep.cfg.ctx)
	rep.streams[m.ID] = &streamRun{s: s, cancel: cancel}
	rep.wg.Go(func() { s.run(ctx) })
	return s
}

// acked takes a batch's acks from s.
func (rep *Replicator) acked(s *stream, items []Item, status []Status) {
	type commit struct {
		r   *room.Room
		seq uint64
	}
	var commits []commit
	now := time.Now()
	rep.mu.Lock()
	touched := map[*roomState]bool{}
	reseed := false
	for i, it := range items {
		rs := rep.rooms[it.room()]
		if rs == nil || i >= len(status) {
			continue
		}
		t := rs.target(s.peer)
		if t == nil || t.s != s {
			continue
		}
		switch status[i] {
		case Held:
			if it.Seed != nil {
				t.seeded, t.down = true, time.Time{}
			}
			t.acked = max(t.acked, it.seq())
		case Reseed:
			t.gen, reseed = 0, true
		case Refused:
			// Seeded again on the next tick, not at once: a replica that refuses (its ring
			// lags, or names another owner) would refuse a seed sent right back too, and a
			// pass over every room per refusal kept a node that held many busy.
			t.gen, t.seeded, rep.retry = 0, false, true
			rep.cfg.Log.Debug("replica refused the room: its ring does not name this node the owner yet, or it heard from a later one",
				"room", it.room(), "peer", s.peer)
		}
		touched[rs] = true
	}
	for rs := range touched {
		commits = append(commits, commit{rs.r, rep.commitOf(rs, now)})
	}
	rep.mu.Unlock()
	for _, c := range commits {
		c.r.Commit(c.seq)
	}
	if reseed {
		rep.reconcileSoon() // seed what fell behind
	}
}

// lost hears that s's connection broke, silent since since: its replicas keep counting until
// ReplicaTimeout after that.
func (rep *Replicator) lost(s *stream, since time.Time) {
	now := since
	rep.mu.Lock()
	defer rep.mu.Unlock()
	for _, rs := range rep.rooms {
		for _, t := range rs.targets {
			if t.s == s {
				t.gen = 0
				if t.seeded && t.down.IsZero() {
					t.down = now
				}
			}
		}
	}
}

// seen is the placement version of the last full pass.
// takeRetry reports whether a replica refused a room since the last call.
func (rep *Replicator) takeRetry() bool {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	retry := rep.retry
	rep.retry = false
	return retry
}

func (rep *Replicator) seen() string {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	return rep.version
}

// reconcile is one pass: copies whose owner died are promoted; held messages whose replicas
// stopped counting commit; and, when full, every room's replica set follows the placement and
// is seeded where it needs it.
func (rep *Replicator) reconcile(full bool) {
	if rep.cfg.Gate.Stale() {
		return
	}
	if full {
		v := rep.cfg.Ring.Placement().Version()
		for _, r := range rep.cfg.Rooms.All() {
			r.Seed(func(snapshot func() room.State) {
				rep.mu.Lock()
				rep.prepare(r, snapshot)
				rep.mu.Unlock()
			})
		}
		rep.mu.Lock()
		rep.version = v
		rep.mu.Unlock()
	}
	for _, name := range rep.store.Orphans() {
		rep.acquire(name)
	}
	type commit struct {
		r   *room.Room
		seq uint64
	}
	var commits []commit
	now := time.Now()
	under := 0
	rep.mu.Lock()
	p := rep.cfg.Ring.Placement()
	want := min(rep.cfg.Replicas, max(len(p.Nodes())-1, 0))
	for name, rs := range rep.rooms {
		if rep.cfg.Rooms.Get(name) != rs.r {
			delete(rep.rooms, name)
			continue
		}
		n := 0
		for _, t := range rs.targets {
			if rep.counts(t, now) {
				n++
			}
		}
		if n < want {
			under++
		}
		commits = append(commits, commit{rs.r, rep.commitOf(rs, now)})
	}
	live := map[string]bool{}
	for _, m := range p.Members() {
		if m.Role == ring.RoleNode && m.Live() {
			live[m.ID] = true
		}
	}
	for id, sr := range rep.streams {
		if !live[id] {
			sr.cancel()
			delete(rep.streams, id)
		}
	}
	rep.mu.Unlock()
	rep.noteUnder(under, now)
	for _, c := range commits {
		c.r.Commit(c.seq)
	}
}

// noteUnder records that under rooms are under-replicated now, and logs it once some have been
// for a second (a room just created or moved is until its seed is held, which is no news), then
// at most every 10 s while some are, and when none is again.
func (rep *Replicator) noteUnder(under int, now time.Time) {
	rep.under.Store(int64(under))
	rep.mu.Lock()
	defer rep.mu.Unlock()
	switch {
	case under > 0 && rep.underSince.IsZero():
		rep.underSince = now
	case under > 0 && now.Sub(rep.underSince) >= time.Second && now.Sub(rep.underLogged) >= 10*time.Second:
		rep.underLogged = now
		rep.cfg.Log.Warn("rooms under-replicated", "rooms", under, "replicas", rep.cfg.Replicas,
			"for", now.Sub(rep.underSince).Round(time.Millisecond))
	case under == 0 && !rep.underSince.IsZero():
		if !rep.underLogged.IsZero() {
			rep.cfg.Log.Info("every room replicated again", "replicas", rep.cfg.Replicas,
				"took", now.Sub(rep.underSince).Round(time.Millisecond))
		}
		rep.underSince, rep.underLogged = time.Time{}, time.Time{}
	}
}

// acquire runs cfg.Acquire for room once at a time, in the background.
func (rep *Replicator) acquire(name string) {
	rep.mu.Lock()
	if rep.acquiring == nil {
		rep.acquiring = map[string]bool{}
	}
	if rep.acquiring[name] || len(rep.acquiring) >= 64 || rep.cfg.Acquire == nil {
		rep.mu.Unlock()
		return
	}
	rep.acquiring[name] = true
	rep.mu.Unlock()
	rep.wg.Go(func() {
		defer func() {
			rep.mu.Lock()
			delete(rep.acquiring, name)
			rep.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(rep.cfg.ctx, 10*time.Second)
		defer cancel()
		rep.cfg.Acquire(ctx, name)
	})
}

// Promote serves this node's copy of room, if it holds one whose owner is gone and the
// placement names this node the owner: at the next term, in the same epoch, with every message
// the copy holds. It waits (until ctx ends) while the node is in a minority or the dead owner
// may still be writing. It returns the room, or nil when it holds no such copy.
func (rep *Replicator) Promote(ctx context.Context, name string) (*room.Room, error) {
	for {
		r, held := rep.promote(ctx, name)
		if r != nil || !held {
			return r, nil
		}
		if err := loop.Sleep(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// promote is one try of Promote: the room, or whether a copy waits to be promoted.
func (rep *Replicator) promote(ctx context.Context, name string) (*room.Room, bool) {
	from, ok := rep.store.orphan(name)
	if !ok {
		return nil, false
	}
	if rep.cfg.Gate.Stale() || (rep.cfg.Writable != nil && !rep.cfg.Writable()) ||
		(rep.cfg.Silent != nil && time.Now().Before(rep.cfg.Silent(from))) ||
		(rep.cfg.Answers != nil && rep.cfg.Answers(ctx, from)) {
		return nil, true
	}
	r := rep.store.Take(name)
	if r == nil {
		return nil, false
	}
	r.Promote()
	if !rep.cfg.Install(r) {
		r.Close(room.Farewell{})
		return nil, false
	}
	rep.cfg.Metrics.Promoted.Inc()
	epoch, seq := r.Position()
	rep.cfg.Log.Info("room promoted from its replica: its owner is gone", "room", name, "epoch", epoch, "seq", seq, "term", r.Term())
	rep.reconcileSoon() // seed its own replicas
	return r, false
}
