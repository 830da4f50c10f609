// Package quorum tells a node whether it may take writes: not while it has lost touch with most
// of the cluster at once.
//
// Every Interval the node calls every other node (a signed node-to-node call, the same path
// hand-offs take). A node cut off by a partition sees all its peers stop answering in the same
// round; a node whose peers die one by one sees them go one at a time. So a node counts the
// peers that stopped answering together (within two rounds of the newest such loss) and, if
// they outnumber the nodes it still reaches (itself included), it is in a minority: it takes no
// writes until enough peers answer again, or until Hold has passed since the loss — a
// partition that long, or most of the cluster crashing at once, is then taken for good and the
// node carries on with what it reaches (an AP system again, as the README says).
//
// Meanwhile the majority declares the node dead and starts its rooms afresh; the minority has
// stopped writing by then (it notices within Window, the majority after memberlist's suspicion),
// so no room has two writers. The same holds when node-to-node calls are cut while gossip still
// flows: the cut node stops writing, though the ring still names it.
package quorum

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-dev/roost/internal/loop"
	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/ring"
	"golang.org/x/sync/singleflight"
)

// Path is the node-to-node call that says a node is reachable.
const Path = "/internal/v1/ping"

// Ring is what the tracker needs of the membership.
type Ring interface {
	ID() string
	Placement() *ring.Placement
}

// Config configures a Tracker.
type Config struct {
	Ring  Ring
	Peers *peer.Client
	// Interval is how often every peer is called; a call waits up to 2 × Interval, and a peer
	// that has not answered for Window (6 × Interval) is out of reach: generous, so that a
	// starved machine does not take itself for a minority.
	Interval time.Duration
	// Hold bounds how long a minority takes no writes after its loss; 0 turns the rule off.
	Hold time.Duration
	Log  *slog.Logger
	// Changed is told when the node falls into a minority (true) or leaves it (false).
	Changed func(minority bool)
}

// Tracker watches whether the node reaches most of the cluster. Its methods are safe for
// concurrent use.
type Tracker struct {
	cfg      Config
	minority atomic.Bool
	reached  atomic.Int32 // peers answering, for metrics

	mu    sync.Mutex
	peers map[string]time.Time // node id → when a call that then succeeded started (or it was first listed)
	asks  singleflight.Group   // Answers: one call per node at a time
	asked map[string]answer    // Answers: the last call's outcome per node
}

// answer is the outcome of an Answers call to one node.
type answer struct {
	ok bool
	at time.Time
}

// New makes a tracker; Run it.
func New(cfg Config) *Tracker {
	return &Tracker{cfg: cfg, peers: map[string]time.Time{}, asked: map[string]answer{}}
}

// Answers calls node id now, whatever this node's ring says of it (dead members keep their
// address), and reports whether it answered within 2 × Interval. A node that answers is alive
// and reachable: its rooms are not this node's to take, however its ring came to call it dead
// (a ring that has not caught up after a partition healed does). An outcome less than an
// Interval old is reused, and concurrent callers share one call, so that the heirs of a
// thousand rooms ask once.
func (t *Tracker) Answers(ctx context.Context, id string) bool {
	t.mu.Lock()
	last, ok := t.asked[id]
	t.mu.Unlock()
	if ok && time.Since(last.at) < t.cfg.Interval {
		return last.ok
	}
	v, _, _ := t.asks.Do(id, func() (any, error) {
		m, ok := t.cfg.Ring.Placement().Member(id)
		answered := false
		if ok && m.HTTP != "" {
			start := time.Now()
			ctx, cancel := context.WithTimeout(ctx, 2*t.cfg.Interval)
			defer cancel()
			if _, err := t.cfg.Peers.Call(ctx, m.HTTPURL(), Path, "application/json", nil); err == nil {
				answered = true
				t.heard(id, start)
			}
		}
		t.mu.Lock()
		t.asked[id] = answer{ok: answered, at: time.Now()}
		t.mu.Unlock()
		return answered, nil
	})
	return v.(bool)
}

// Writable reports whether the node may take writes.
func (t *Tracker) Writable() bool { return !t.minority.Load() }

// Minority reports whether the node is in a minority now.
func (t *Tracker) Minority() bool { return t.minority.Load() }

// Reached is the number of peers that answered within Window.
func (t *Tracker) Reached() int { return int(t.reached.Load()) }

// Heard reports whether peer id answered within Window.
func (t *Tracker) Heard(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.peers[id]
	return ok && time.Since(at) < t.Window()
}

// Window is how long a peer may go unheard before it counts as out of reach.
func (t *Tracker) Window() time.Duration { return 6 * t.cfg.Interval }

// Silent is when node id, if it is cut off from this node and the rest, has stopped taking
// writes for sure: a round after it could last have heard from this node, plus its Window. A
// node that gains the rooms of a peer declared dead starts them afresh no sooner (see handoff),
// so the two never both write. Zero when this node never reached id.
func (t *Tracker) Silent(id string) time.Time {
	if t.cfg.Hold <= 0 {
		return time.Time{} // the rule is off: a cut-off node goes on writing anyway
	}
	t.mu.Lock()
	at, ok := t.peers[id]
	t.mu.Unlock()
	if !ok {
		return time.Time{}
	}
	return at.Add(t.Window() + 2*t.cfg.Interval)
}

// Run calls the peers every Interval until ctx ends.
func (t *Tracker) Run(ctx context.Context) {
	if t.cfg.Hold <= 0 {
		return
	}
	loop.Every(ctx, t.cfg.Interval, func(time.Time) { t.round(ctx) })
}

// round calls every live node once, at once, then decides.
func (t *Tracker) round(ctx context.Context) {
	p := t.cfg.Ring.Placement()
	self := t.cfg.Ring.ID()
	var wg sync.WaitGroup
	known := map[string]bool{}
	for _, m := range p.Members() {
		if m.Role != ring.RoleNode || m.ID == self {
			continue
		}
		known[m.ID] = m.State != ring.StateLeft
		if !m.Live() {
			continue
		}
		t.mu.Lock()
		if _, ok := t.peers[m.ID]; !ok {
			// A peer counts as reached when it is first listed: cut off before the first
			// heartbeat came back, it is lost from then.
			t.peers[m.ID] = time.Now()
		}
		t.mu.Unlock()
		wg.Go(func() {
			start := time.Now()
			ctx, cancel := context.WithTimeout(ctx, 2*t.cfg.Interval)
			defer cancel()
			if _, err := t.cfg.Peers.Call(ctx, m.HTTPURL(), Path, "application/json", nil); err == nil {
				t.heard(m.ID, start)
			}
		})
	}
	wg.Wait()
	now := time.Now()
	t.mu.Lock()
	var lost []time.Time
	reached := 0
	for id, at := range t.peers {
		switch {
		case !known[id] || now.Sub(at) > t.cfg.Hold+t.Window():
			delete(t.peers, id) // left, forgotten by the ring, or lost too long ago to matter
		case now.Sub(at) < t.Window():
			reached++
		default:
			lost = append(lost, at)
		}
	}
	t.mu.Unlock()
	t.reached.Store(int32(reached))
	minority := Minority(reached+1, lost, now, 2*t.cfg.Interval, t.cfg.Hold)
	if t.minority.Swap(minority) != minority {
		if minority {
			t.cfg.Log.Warn("lost touch with most of the cluster at once: taking no writes until enough nodes answer again or --minority-hold passes",
				"reached", reached, "lost", len(lost), "hold", t.cfg.Hold)
		} else {
			t.cfg.Log.Info("taking writes again", "reached", reached, "lost", len(lost))
		}
		if t.cfg.Changed != nil {
			t.cfg.Changed(minority)
		}
	}
}

func (t *Tracker) heard(id string, start time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if start.After(t.peers[id]) {
		t.peers[id] = start
	}
}

// Minority decides: reached nodes answer (this one included); lost holds, for each peer that
// stopped answering, when it last did. The peers lost together with the newest loss (each
// within together of the next) are a minority's loss if they outnumber the reached nodes, for
// hold after the newest loss.
func Minority(reached int, lost []time.Time, now time.Time, together, hold time.Duration) bool {
	if len(lost) == 0 {
		return false
	}
	slices.SortFunc(lost, func(a, b time.Time) int { return b.Compare(a) }) // newest first
	if now.Sub(lost[0]) > hold {
		return false
	}
	burst := 1
	for i := 1; i < len(lost) && lost[i-1].Sub(lost[i]) <= together; i++ {
		burst++
	}
	return burst > reached
}
