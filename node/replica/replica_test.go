package replica

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/ring"
	"github.com/roost-dev/roost/ring/ringtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fresh struct{}

func (fresh) Stale() bool                      { return false }
func (fresh) AwaitFresh(context.Context) error { return nil }

func counter() prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: "c"}) }

// member is one node as replication sees it: its ring, rooms and replicator, serving the
// replication stream on loopback.
type member struct {
	ring  *ringtest.Ring
	rooms *room.Table
	cfg   *room.Config
	rep   *Replicator
	addr  string
}

func newMember(t *testing.T, id string) *member {
	m := &member{ring: ringtest.New(id, nil), rooms: room.NewTable()}
	m.cfg = &room.Config{Node: id, HistoryCount: 100, HistoryBytes: 1 << 20, DedupeIDs: 100, MaxConns: 10, MaxSources: 2,
		PresenceAnnounceMax: 10, PresenceInterval: time.Second, HoldWrites: 5 * time.Second, SendQueue: 16,
		WriteTimeout: time.Second, PingInterval: time.Minute, Gate: fresh{},
		Metrics: room.Metrics{Messages: counter(), Duplicates: counter(), Deliveries: counter(), SlowConsumers: counter()}}
	ctx, cancel := context.WithCancel(context.Background())
	peers := peer.New(nil, nil, 1<<24, nil)
	m.rep = New(ctx, Config{Ring: m.ring, Rooms: m.rooms, Room: m.cfg, Peers: peers, Gate: fresh{}, Replicas: 1,
		ReplicaTimeout: time.Second, DialTimeout: time.Second, WriteTimeout: time.Second, MaxFrame: 1 << 24,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Install: func(r *room.Room) bool {
			got, err := m.rooms.GetOrCreate(r.Name(), func() (*room.Room, error) { return r, nil })
			return err == nil && got == r
		},
		Metrics: Metrics{Appends: counter(), Seeds: counter(), Batches: counter(), Promoted: counter()}})
	m.cfg.Replicator = m.rep
	srv := httptest.NewServer(http.HandlerFunc(m.rep.Store().ServeStream))
	done := make(chan struct{})
	go func() { defer close(done); m.rep.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; srv.CloseClientConnections(); srv.Close(); peers.Close() })
	m.addr = srv.Listener.Addr().String()
	return m
}

func placement(alive []*member, dead ...*member) *ring.Placement {
	var ms []ring.Member
	for _, m := range alive {
		ms = append(ms, ring.Member{ID: m.ring.ID(), State: ring.StateAlive, Meta: ring.Meta{Role: ring.RoleNode, HTTP: m.addr}})
	}
	for _, m := range dead {
		ms = append(ms, ring.Member{ID: m.ring.ID(), State: ring.StateDead, Meta: ring.Meta{Role: ring.RoleNode, HTTP: m.addr}})
	}
	return ring.NewPlacement(ms, ring.DefaultPlacementConfig())
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s", what)
		}
	}
}

// An owner's messages commit only once its heir holds them; the heir's copy follows in order
// and, once the ring declares the owner dead, is promoted in the same epoch at the next term.
func TestReplicateCommitPromote(t *testing.T) {
	a, b := newMember(t, "n1"), newMember(t, "n2")
	both := placement([]*member{a, b})
	a.ring.Set(both)
	b.ring.Set(both)
	name := ""
	for i := 0; name == ""; i++ {
		if o, _ := both.Owner(fmt.Sprint("r", i)); o.ID == "n1" {
			name = fmt.Sprint("r", i)
		}
	}
	r, _ := a.rooms.GetOrCreate(name, func() (*room.Room, error) { return room.New(a.cfg, name), nil })
	a.rep.Wake()
	waitFor(t, "the heir's stream and seed", func() bool { return b.rep.Store().Len() == 1 })
	for i := range 20 {
		seq, err := r.PublishBinary(t.Context(), nil, make([]byte, 8+4))
		if err != nil || seq != uint64(i+1) {
			t.Fatalf("publish %d: %d %v", i, seq, err)
		}
	}
	waitFor(t, "the heir to hold every message and the owner to commit it", func() bool { return r.Committed() == 20 })
	epoch, _ := r.Position()

	b.ring.Set(placement([]*member{b}, a)) // n1 declared dead
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	got, err := b.rep.Promote(ctx, name)
	if err != nil || got == nil {
		t.Fatalf("promote: %v %v", got, err)
	}
	if e, seq := got.Position(); e != epoch || seq != 20 || got.Term() != 2 || got.Committed() != 20 {
		t.Fatalf("promoted at %s/%d term %d, want %s/20 term 2", e, seq, got.Term(), epoch)
	}
	if b.rooms.Get(name) != got || b.rep.Store().Len() != 0 {
		t.Fatal("the promoted copy is not the room in the heir's table")
	}
}

// A replica takes appends only from the node its own ring names the room's owner.
func TestReplicaRefusesANonOwner(t *testing.T) {
	a, b := newMember(t, "n1"), newMember(t, "n2")
	both := placement([]*member{a, b})
	a.ring.Set(both)
	b.ring.Set(placement([]*member{b})) // b's ring names itself the owner of everything
	name := ""
	for i := 0; name == ""; i++ {
		if o, _ := both.Owner(fmt.Sprint("r", i)); o.ID == "n1" {
			name = fmt.Sprint("r", i)
		}
	}
	st := room.New(a.cfg, name).Snapshot()
	if got := b.rep.Store().apply("n1", Item{Seed: &st}); got != Refused {
		t.Fatalf("seed from a node b's ring does not name the owner: %v, want Refused", got)
	}
	b.ring.Set(both)
	if got := b.rep.Store().apply("n1", Item{Seed: &st}); got != Held {
		t.Fatalf("seed from the owner: %v, want Held", got)
	}
	e := &Entry{Room: name, Append: room.Append{Epoch: st.Epoch, Term: st.Term, Msg: room.Message{Seq: 5, Binary: true, Frame: make([]byte, 9)}}}
	if got := b.rep.Store().apply("n1", Item{Append: e}); got != Reseed {
		t.Fatalf("an append past a gap: %v, want Reseed", got)
	}
	e.Msg.Seq, e.Term = 1, 0
	if got := b.rep.Store().apply("n1", Item{Append: e}); got != Refused {
		t.Fatalf("an append from an older term: %v, want Refused", got)
	}
}

// A replica goes on taking appends from its copy's writer after its ring names another owner,
// while that writer lives: a draining owner holds its rooms until their hand-off, and its writes
// until then must be replicated to be acked. It takes no new seed from it, and nothing once the
// ring declares it dead.
func TestReplicaFollowsADrainingWriter(t *testing.T) {
	a, b := newMember(t, "n1"), newMember(t, "n2")
	both := placement([]*member{a, b})
	name := ""
	for i := 0; name == ""; i++ {
		if o, _ := both.Owner(fmt.Sprint("r", i)); o.ID == "n1" {
			name = fmt.Sprint("r", i)
		}
	}
	b.ring.Set(both)
	st := room.New(a.cfg, name).Snapshot()
	if got := b.rep.Store().apply("n1", Item{Seed: &st}); got != Held {
		t.Fatalf("seed from the owner: %v, want Held", got)
	}
	draining := ring.NewPlacement([]ring.Member{
		{ID: "n1", State: ring.StateAlive, Meta: ring.Meta{Role: ring.RoleNode, HTTP: a.addr, Draining: true}},
		{ID: "n2", State: ring.StateAlive, Meta: ring.Meta{Role: ring.RoleNode, HTTP: b.addr}},
	}, ring.DefaultPlacementConfig())
	if o, _ := draining.Owner(name); o.ID != "n2" {
		t.Fatalf("with n1 draining, %s is owned by %s", name, o.ID)
	}
	b.ring.Set(draining)
	e := &Entry{Room: name, Append: room.Append{Epoch: st.Epoch, Term: st.Term, Msg: room.Message{Seq: 1, Binary: true, Frame: make([]byte, 9)}}}
	if got := b.rep.Store().apply("n1", Item{Append: e}); got != Held {
		t.Fatalf("an append from the draining writer of the copy: %v, want Held", got)
	}
	if got := b.rep.Store().apply("n1", Item{Seed: &st}); got != Refused {
		t.Fatalf("a seed from a node that no longer owns the room: %v, want Refused", got)
	}
	b.ring.Set(placement([]*member{b}, a))
	e.Msg.Seq = 2
	if got := b.rep.Store().apply("n1", Item{Append: e}); got != Refused {
		t.Fatalf("an append from a writer declared dead: %v, want Refused", got)
	}
}
