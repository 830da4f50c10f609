package handoff

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/ring"
	"github.com/roost-dev/roost/ring/ringtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// freshGate is a watchdog that never saw a pause.
type freshGate struct{}

func (freshGate) Stale() bool                           { return false }
func (freshGate) AwaitFresh(context.Context) error      { return nil }
func (freshGate) Quarantined() bool                     { return false }
func (freshGate) AwaitQuarantine(context.Context) error { return nil }
func (freshGate) NoteTakeover([]string)                 {}

// member is one node as hand-offs see it: its ring, rooms and mover, serving peers on loopback.
type member struct {
	ring    *ringtest.Ring
	rooms   *room.Table
	mover   *Mover
	gained  *prometheus.CounterVec
	settled *prometheus.CounterVec
	url     string
	// swallow, when set, makes the member handle a hand-off batch and then drop the
	// connection without a reply, as a lost reply would; delay makes it drop the connection
	// without handling the batch, as a call held up in the network would. The batch's body is
	// kept in lost, to deliver late.
	swallow, delay atomic.Bool
	lost           chan []byte
}

func counter() prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: "c"}) }

func roomConfig() *room.Config {
	return &room.Config{Node: "n", HistoryCount: 100, HistoryBytes: 1 << 20, DedupeIDs: 100, MaxConns: 10, MaxSources: 2,
		PresenceAnnounceMax: 10, PresenceInterval: time.Second, HoldWrites: 5 * time.Second, SendQueue: 16,
		WriteTimeout: time.Second, PingInterval: time.Minute, Gate: freshGate{},
		Metrics: room.Metrics{Messages: counter(), Duplicates: counter(), Deliveries: counter(), SlowConsumers: counter()}}
}

func newMember(t *testing.T, id string, fenceWait time.Duration) *member {
	m := &member{lost: make(chan []byte, 1), ring: ringtest.New(id, nil), rooms: room.NewTable(),
		gained:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "g"}, []string{"how"}),
		settled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "st"}, []string{"outcome"})}
	done := make(chan struct{})
	peers := peer.New([]byte("0123456789abcdef0123456789abcdef"), nil, 1<<24, nil)
	m.mover = New(Config{
		Ring: m.ring, Rooms: m.rooms, Room: roomConfig(), Peers: peers, Gate: freshGate{},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Metrics: Metrics{Handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "h"}, []string{"result"}),
			Bytes: counter(), Seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "s"}), RoomsLost: counter(), RoomsGained: m.gained,
			Settled: m.settled, Fences: counter(), Expired: counter(), Tails: counter()},
		Timeout: 5 * time.Second, FenceWait: fenceWait, ArriveTimeout: 5 * time.Second,
		Admit: func() error { return nil }, Done: done,
	})
	mux := http.NewServeMux()
	verified := func(h func(w http.ResponseWriter, r *http.Request, body []byte)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, err := peers.Verify(r, r.Host)
			if err != nil {
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			}
			h(w, r, body)
		}
	}
	mux.HandleFunc("POST "+Path, verified(func(w http.ResponseWriter, r *http.Request, body []byte) {
		if b, err := Decode(body); err != nil || b.Check || !m.swallow.Load() && !m.delay.Load() {
			m.mover.ServeHandoff(w, r, body)
			return
		}
		if !m.delay.Load() {
			m.mover.ServeHandoff(httptest.NewRecorder(), r, body)
		}
		select {
		case m.lost <- body:
		default:
		}
		panic(http.ErrAbortHandler) // the reply never reaches the sender
	}))
	mux.HandleFunc("POST "+FencePath("{room}"), verified(m.mover.ServeFence))
	mux.HandleFunc("POST "+ReleasePath("{room}"), verified(func(w http.ResponseWriter, r *http.Request, _ []byte) { m.mover.ServeRelease(w, r) }))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { close(done); srv.Close(); peers.Close() })
	m.url = srv.Listener.Addr().String()
	return m
}

// placement places members; draining ones are members that take no rooms.
func placement(members []*member, draining ...*member) *ring.Placement {
	var ms []ring.Member
	for _, m := range members {
		ms = append(ms, ring.Member{ID: m.ring.ID(), State: ring.StateAlive, Meta: ring.Meta{Role: ring.RoleNode, HTTP: m.url}})
	}
	for _, m := range draining {
		ms = append(ms, ring.Member{ID: m.ring.ID(), State: ring.StateAlive, Meta: ring.Meta{Role: ring.RoleNode, HTTP: m.url, Draining: true}})
	}
	return ring.NewPlacement(ms, ring.DefaultPlacementConfig())
}

func only(m *member) []*member { return []*member{m} }

// holding makes a room with msgs messages on m.
func holding(t *testing.T, m *member, name string, msgs int) *room.Room {
	r, err := m.rooms.GetOrCreate(name, func() (*room.Room, error) { return room.New(m.mover.cfg.Room, name), nil })
	if err != nil {
		t.Fatal(err)
	}
	for range msgs {
		if _, err := r.PublishBinary(t.Context(), nil, make([]byte, 9)); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// The receiver's ring is behind the sender's: it waits for its own placement to name it the
// owner (told by Subscribe, not by polling), then takes the room as it was.
func TestPushWaitsForTheReceiversRing(t *testing.T) {
	a, b := newMember(t, "n1", time.Minute), newMember(t, "n2", time.Minute)
	old := placement(only(a), b)
	a.ring.Set(placement(only(b), a)) // a drains: every room goes to b
	b.ring.Set(old)                   // b has not heard yet
	r := holding(t, a, "lobby", 3)
	epoch, _ := r.Position()

	done := make(chan struct{})
	start := time.Now()
	go func() { defer close(done); a.mover.Rebalance(t.Context()) }()
	time.Sleep(100 * time.Millisecond)
	if b.rooms.Len() != 0 || a.rooms.Get("lobby") == nil {
		t.Fatal("the room moved before the receiver's ring named it the owner")
	}
	b.ring.Set(placement(only(b), a))
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the hand-off did not finish after the receiver's ring caught up")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %s: the receiver waited out its fence instead of hearing its ring", took)
	}
	got := b.rooms.Get("lobby")
	if got == nil || a.rooms.Get("lobby") != nil {
		t.Fatal("the room should be on n2 alone")
	}
	if e, seq := got.Position(); e != epoch || seq != 3 {
		t.Fatalf("arrived at %s/%d, want %s/3", e, seq, epoch)
	}
	if _, err := r.PublishBinary(t.Context(), nil, make([]byte, 9)); err == nil {
		t.Fatal("the sender's copy took a write after the hand-off")
	}
	if testutil.ToFloat64(b.gained.WithLabelValues("handoff")) != 1 {
		t.Fatal("roost_rooms_gained_total{how=handoff} not counted")
	}
}

// A receiver whose ring never names it the owner refuses; the sender's room stays live.
func TestPushRefusedKeepsTheRoomLive(t *testing.T) {
	a, b := newMember(t, "n1", 100*time.Millisecond), newMember(t, "n2", 100*time.Millisecond)
	a.ring.Set(placement(only(b), a))
	b.ring.Set(placement(only(a), b))
	r := holding(t, a, "lobby", 1)
	a.mover.Rebalance(t.Context())
	if b.rooms.Len() != 0 || a.rooms.Get("lobby") != r {
		t.Fatal("a refused hand-off moved the room")
	}
	if seq, err := r.PublishBinary(t.Context(), nil, make([]byte, 9)); err != nil || seq != 2 {
		t.Fatalf("write after a refused hand-off: %d %v", seq, err)
	}
}

// A node that gained a room asks its previous owner to release it, and gets it as it was.
func TestAcquirePullsFromThePreviousOwner(t *testing.T) {
	a, b := newMember(t, "n1", time.Minute), newMember(t, "n2", time.Minute)
	old, now := placement(only(a), b), placement(only(b), a)
	r := holding(t, a, "lobby", 5)
	epoch, _ := r.Position()
	a.ring.Set(now)
	b.mover.Remember(old) // where the room was
	b.ring.Set(now)
	b.mover.Remember(now)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, err := b.mover.Acquire(ctx, "lobby")
	if err != nil {
		t.Fatal(err)
	}
	if e, seq := got.Position(); e != epoch || seq != 5 || a.rooms.Get("lobby") != nil {
		t.Fatalf("acquired at %s/%d, want %s/5 and the room gone from n1", e, seq, epoch)
	}
	if _, err := a.mover.Acquire(ctx, "other"); err != ErrNotOwner {
		t.Fatalf("acquire on a node that does not own the room: %v, want ErrNotOwner", err)
	}
}

// A room held by a draining node that no placement seen here ever named as its owner (a join
// racing drains): the new owner asks every live node while the ring is unsettled, finds the
// holder, and gets its copy rather than starting a second one.
func TestAcquireFindsAHolderNoPlacementNamed(t *testing.T) {
	a, b, c := newMember(t, "n1", time.Minute), newMember(t, "n2", time.Minute), newMember(t, "n3", time.Minute)
	old := placement(only(c), a)         // what b saw first: n3 owns everything, n1 drains
	now := placement(only(b), a, c)      // now: n2 owns everything, n1 and n3 drain
	ac := placement([]*member{a, c})     // where rooms were with n1 and n3 placed
	abc := placement([]*member{a, b, c}) // and with all three
	name := ""
	for i := 0; name == ""; i++ {
		r := fmt.Sprint("r", i)
		if o, _ := ac.Owner(r); o.ID != "n3" {
			continue
		}
		if o, _ := abc.Owner(r); o.ID == "n1" {
			continue
		}
		name = r // no placement b can know of names n1, the holder
	}
	held := holding(t, a, name, 4)
	epoch, _ := held.Position()
	for _, m := range []*member{a, b, c} {
		m.ring.Set(now)
	}
	b.mover.Remember(old)
	b.mover.Remember(now)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, err := b.mover.Acquire(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if e, seq := got.Position(); e != epoch || seq != 4 || a.rooms.Get(name) != nil {
		t.Fatalf("acquired %s at %s/%d, want the holder's %s/4 (and the holder's copy gone)", name, e, seq, epoch)
	}
}

// The holder handed the room to a node the asker's ring does not list yet (it just joined): the
// holder answers where the room went rather than "absent", and the asker keeps looking instead
// of starting a second copy, until its ring catches up and names that node the owner.
func TestAcquireFollowsAHandOffItsRingHasNotSeen(t *testing.T) {
	a, b, c := newMember(t, "n1", time.Minute), newMember(t, "n2", time.Minute), newMember(t, "n3", time.Minute)
	toC := placement(only(c), a, b) // a and c: c owns everything, a drains
	a.ring.Set(toC)
	c.ring.Set(toC)
	r := holding(t, a, "lobby", 3)
	epoch, _ := r.Position()
	a.mover.Rebalance(t.Context())
	if c.rooms.Get("lobby") == nil {
		t.Fatal("the room did not reach n3")
	}
	behind := placement(only(b), a) // b has not heard of n3: it owns everything, a drains
	b.ring.Set(behind)
	b.mover.Remember(behind)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	type result struct {
		r   *room.Room
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := b.mover.Acquire(ctx, "lobby")
		done <- result{r, err}
	}()
	select {
	case res := <-done:
		t.Fatalf("acquire decided before n2's ring caught up: room %v, err %v (a second copy)", res.r != nil, res.err)
	case <-time.After(500 * time.Millisecond):
	}
	b.ring.Set(toC)
	res := <-done
	if res.err != ErrNotOwner || b.rooms.Get("lobby") != nil {
		t.Fatalf("acquire after n2's ring caught up: %v, room here %v; want ErrNotOwner and none", res.err, b.rooms.Get("lobby") != nil)
	}
	if got := c.rooms.Get("lobby"); got == nil {
		t.Fatal("the room left n3")
	} else if e, seq := got.Position(); e != epoch || seq != 3 {
		t.Fatalf("n3 holds %s/%d, want %s/3", e, seq, epoch)
	}
	if n := testutil.ToFloat64(b.gained.WithLabelValues("fresh")); n != 0 {
		t.Fatalf("%v rooms started afresh on n2", n)
	}
}

// The node a room was handed to lost it since (an idle room reclaimed): asked after it was
// named, it answers "absent", and the room starts afresh without waiting out --arrive-timeout.
func TestAcquireGivesUpOnAHandOffWhoseReceiverLostTheRoom(t *testing.T) {
	a, b, c := newMember(t, "n1", time.Minute), newMember(t, "n2", time.Minute), newMember(t, "n3", time.Minute)
	toC := placement(only(c), a, b)
	a.ring.Set(toC)
	c.ring.Set(toC)
	holding(t, a, "lobby", 3)
	a.mover.Rebalance(t.Context())
	lost := c.rooms.Get("lobby")
	if lost == nil {
		t.Fatal("the room did not reach n3")
	}
	c.rooms.Remove(lost)
	now := placement(only(b), a, c) // b owns everything; a and c drain
	b.ring.Set(now)
	b.mover.Remember(now)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	got, err := b.mover.Acquire(ctx, "lobby")
	if err != nil {
		t.Fatal(err)
	}
	if _, seq := got.Position(); seq != 0 {
		t.Fatalf("acquired at seq %d, want a fresh room", seq)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %s: waited out the arrive timeout instead of hearing n3 had lost the room", took)
	}
}
