// Package pause keeps a node that was paused from serving stale rooms.
//
// A process frozen (SIGSTOP, a VM stall, a starved machine) for longer than the cluster takes to
// declare it dead may have had its rooms started elsewhere meanwhile; if it went on serving them,
// two copies would take writes. The Watchdog notices the gap on the monotonic clock, and until it
// has decided the node serves nothing of any room: writes, joins and hand-offs wait (AwaitFresh)
// or are refused (Stale).
//
// The decision: the node asks every other node whether it took over from it since the pause
// began (declared it dead or gone, or started one of its rooms afresh after it stayed silent).
// If none did, and every one answered, nothing was started elsewhere: the rooms are kept, with
// their history, and the writes go on. Otherwise, or when a peer cannot be asked, every room is
// dropped (clients get 4001 and resume at the owner). A node alone in its ring keeps its rooms:
// nobody else could have taken them. For Quarantine after a pause, the node creates no room
// while gossip brings its view of the ring up to date.
//
// What is left: a peer that suspected the node during the pause but had not yet declared it dead
// when it answered can still do so a moment later, if the node's refutation reaches it late. The
// window is the rest of a suspicion timeout; memberlist gives no race-free way to read suspicion.
package pause

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/roost-dev/roost/internal/loop"
	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// ErrStale: the node was paused and has not decided yet, within the time a decision takes.
var ErrStale = errors.New("node catching up with the ring after a pause")

// Ring is what the watchdog reads of the membership.
type Ring interface {
	ID() string
	Placement() *ring.Placement
	// GoneSince reports how long ago id was last seen leave or declared dead, if ever.
	GoneSince(id string) (time.Duration, bool)
}

// Config configures a Watchdog.
type Config struct {
	// StaleAfter: a node that did not run for this long may have been declared dead.
	StaleAfter time.Duration
	// Quarantine is how long a node that woke from such a pause creates no room.
	Quarantine time.Duration
	Ring       Ring
	Peers      *peer.Client // asks the other nodes, signed
	Log        *slog.Logger
	// Held is how many rooms the node holds; a node that holds none has nothing to decide.
	Held func() int
	// Drop closes every room: a peer took over, or could not be asked.
	Drop func(paused time.Duration, why string)
	// Pauses counts decisions by outcome (kept, dropped); Decision observes how long each took.
	Pauses   *prometheus.CounterVec
	Decision prometheus.Observer
	// Clock reads monotonic time since a fixed point; nil reads the process's own. A pause is a
	// jump in it.
	Clock func() time.Duration
}

// Watchdog notices pauses and decides what becomes of the rooms after one.
type Watchdog struct {
	cfg Config

	now             func() time.Duration
	lastTick        atomic.Int64                  // when the watchdog last ran, by now
	quarantineUntil atomic.Int64                  // no room is created before this, by now
	ticked          atomic.Pointer[chan struct{}] // closed at the watchdog's next tick

	mu       sync.Mutex
	tookOver map[string]time.Time // previous owners whose rooms were started afresh, and when
}

// New makes a watchdog; Run runs it.
func New(cfg Config) *Watchdog {
	w := &Watchdog{cfg: cfg, now: cfg.Clock, tookOver: map[string]time.Time{}}
	if w.now == nil {
		start := time.Now()
		w.now = func() time.Duration { return time.Since(start) }
	}
	w.tick()
	return w
}

// tick records that the node ran now and wakes what waits for it.
func (w *Watchdog) tick() {
	w.lastTick.Store(int64(w.now()))
	if old := w.ticked.Swap(newTickChan()); old != nil {
		close(*old)
	}
}

func newTickChan() *chan struct{} { ch := make(chan struct{}); return &ch }

// Stale reports whether the node has not run for StaleAfter: it may have been declared dead.
func (w *Watchdog) Stale() bool {
	return w.now()-time.Duration(w.lastTick.Load()) > w.cfg.StaleAfter
}

// AwaitFresh waits while the node is stale, until the watchdog has decided about the pause: a
// node woken from one serves nothing of any room before that (DESIGN.md: the pause rule is
// absolute). It fails with ErrStale if the decision takes longer than it can, or with ctx's
// error.
func (w *Watchdog) AwaitFresh(ctx context.Context) error {
	var t *time.Timer
	for {
		ch := w.ticked.Load()
		if !w.Stale() {
			return nil
		}
		if t == nil {
			t = time.NewTimer(w.maxDecision())
			defer t.Stop()
		}
		select {
		case <-*ch:
		case <-t.C:
			return ErrStale
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// maxDecision bounds how long the watchdog takes to decide after a pause: a tick, the settling
// time, and the question to the peers.
func (w *Watchdog) maxDecision() time.Duration {
	return w.cfg.StaleAfter + w.settle() + checkTimeout
}

// AwaitQuarantine waits until a node woken from a pause may create rooms again.
func (w *Watchdog) AwaitQuarantine(ctx context.Context) error {
	left := time.Duration(w.quarantineUntil.Load()) - w.now()
	if left <= 0 {
		return nil
	}
	return loop.Sleep(ctx, left)
}

// Quarantined reports whether the node recently woke from a pause and must not create rooms.
func (w *Watchdog) Quarantined() bool {
	return w.now() < time.Duration(w.quarantineUntil.Load())
}

// checkTimeout bounds asking the peers after a pause.
const checkTimeout = 2 * time.Second

// settle is how long a node woken from a pause lets gossip run before asking its peers.
func (w *Watchdog) settle() time.Duration { return w.cfg.StaleAfter / 2 }

// Run ticks until ctx ends, deciding after every pause.
func (w *Watchdog) Run(ctx context.Context) {
	loop.Every(ctx, max(w.cfg.StaleAfter/10, time.Millisecond), func(time.Time) {
		// Decide before recording the tick: until the rooms are kept or gone, writes must still
		// see the node as stale, or one arriving just after the resume could be acked by a room
		// that is about to close.
		now := w.now()
		if gap := now - time.Duration(w.lastTick.Load()); gap > w.cfg.StaleAfter {
			w.quarantineUntil.Store(int64(now + w.cfg.Quarantine))
			w.afterPause(ctx, gap)
		}
		w.tick()
	})
}

// afterPause keeps the rooms if no peer took over from this node since the pause began, and
// drops them all otherwise.
func (w *Watchdog) afterPause(ctx context.Context, gap time.Duration) {
	held := w.cfg.Held()
	if held == 0 {
		return
	}
	woke := time.Now()
	defer func() { w.cfg.Decision.Observe(time.Since(woke).Seconds()) }()
	settle := time.NewTimer(w.settle())
	defer settle.Stop()
	select {
	case <-ctx.Done():
		return
	case <-settle.C:
	}
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	// A takeover since the pause began counts; the margin covers the answer's trip.
	window := gap + time.Since(woke) + checkTimeout
	why := w.takenOver(cctx, window)
	if why == "" {
		w.cfg.Pauses.WithLabelValues("kept").Inc()
		w.cfg.Log.Warn("this node was paused longer than the failure timeout; no peer took over, keeping every room",
			"paused", gap.Round(time.Millisecond), "rooms", held, "decided_in", time.Since(woke).Round(time.Millisecond))
		return
	}
	w.cfg.Pauses.WithLabelValues("dropped").Inc()
	w.cfg.Drop(gap, why)
	w.cfg.Log.Info("pause decided: rooms dropped", "decided_in", time.Since(woke).Round(time.Millisecond))
}

// TakeoverReply answers a node woken from a pause.
type TakeoverReply struct {
	TakenOver bool     `json:"taken_over"`
	AgoMS     int64    `json:"ago_ms,omitempty"` // how long ago, when it did
	Nodes     []string `json:"nodes"`            // the nodes this peer knows, so joiners are asked too
}

// TakeoverPath is where a peer is asked whether it took over from node.
func TakeoverPath(node string) string { return "/internal/v1/nodes/" + node + "/takeover" }

// takenOver asks every other node whether it took over from this one within window. It returns
// why the rooms must go, or "" when every peer answered no.
func (w *Watchdog) takenOver(ctx context.Context, window time.Duration) string {
	self := w.cfg.Ring.ID()
	asked := map[string]bool{self: true}
	var ask []ring.Member
	add := func(m ring.Member) {
		if asked[m.ID] || m.Role != ring.RoleNode {
			return
		}
		asked[m.ID] = true
		if m.Live() {
			ask = append(ask, m)
		} else if ago, ok := w.cfg.Ring.GoneSince(m.ID); ok && ago <= window {
			// Gone in this node's view: if that happened during the pause, this node's own
			// view is what is stale, and the peer must be asked all the same.
			ask = append(ask, m)
		}
	}
	for _, m := range w.cfg.Ring.Placement().Members() {
		add(m)
	}
	for len(ask) > 0 {
		replies := make([]TakeoverReply, len(ask))
		errs := make([]error, len(ask))
		var wg sync.WaitGroup
		for i, m := range ask {
			wg.Go(func() {
				out, err := w.cfg.Peers.Call(ctx, m.HTTPURL(), TakeoverPath(self), "application/json", nil)
				if err == nil {
					err = json.Unmarshal(out, &replies[i])
				}
				errs[i] = err
			})
		}
		wg.Wait()
		round := ask
		ask = nil
		for i, m := range round {
			switch {
			case errs[i] != nil:
				return "peer " + m.ID + " could not be asked whether it took over: " + errs[i].Error()
			case replies[i].TakenOver && time.Duration(replies[i].AgoMS)*time.Millisecond <= window:
				return "peer " + m.ID + " took over from this node during the pause"
			}
			for _, id := range replies[i].Nodes {
				if !asked[id] {
					// A node this one has not heard of yet (it joined during the pause).
					if mm, ok := w.cfg.Ring.Placement().Member(id); ok {
						add(mm)
					} else {
						return "peer " + m.ID + " knows a node this one cannot reach yet: " + id
					}
				}
			}
		}
	}
	return ""
}

// ServeTakeover answers a node woken from a pause (the request is already verified as a peer's):
// did this node take over from it, and when.
func (w *Watchdog) ServeTakeover(rw http.ResponseWriter, r *http.Request) {
	reply := TakeoverReply{Nodes: []string{}}
	if ago, ok := w.takenOverSince(r.PathValue("node")); ok {
		reply.TakenOver, reply.AgoMS = true, max(ago.Milliseconds(), 0)
	}
	for _, m := range w.cfg.Ring.Placement().Nodes() {
		reply.Nodes = append(reply.Nodes, m.ID)
	}
	protocol.WriteJSON(rw, reply)
}

// NoteTakeover records that this node started a room afresh while ids, its previous owners,
// were silent.
func (w *Watchdog) NoteTakeover(ids []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	for _, id := range ids {
		w.tookOver[id] = now
	}
}

// takenOverSince reports how long ago this node last took over from id: declared it dead or
// gone, or started one of its rooms afresh while it was silent.
func (w *Watchdog) takenOverSince(id string) (time.Duration, bool) {
	ago, ok := w.cfg.Ring.GoneSince(id)
	w.mu.Lock()
	at, took := w.tookOver[id]
	w.mu.Unlock()
	if took && (!ok || time.Since(at) < ago) {
		ago, ok = time.Since(at), true
	}
	return ago, ok
}
