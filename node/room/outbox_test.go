package room

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/limit"
)

// hookConfig is testConfig with webhooks on, every event type, and Notify counted.
func hookConfig(maxBytes int, grace time.Duration) (*Config, *atomic.Int64) {
	cfg, _ := testConfig()
	var notified atomic.Int64
	cfg.Webhook = &Webhook{Types: map[string]bool{EventOccupied: true, EventVacated: true, EventJoin: true, EventLeave: true, EventMessage: true},
		MaxBytes: maxBytes, Grace: grace, Notify: func(string) { notified.Add(1) }}
	return cfg, &notified
}

// member joins r as client, as a WebSocket connection does.
func member(t *testing.T, r *Room, cfg *Config, client string) *Conn {
	t.Helper()
	c := &Conn{cfg: cfg, writer: true, client: client}
	if err := r.Join(c, Resume{}); err != nil {
		t.Fatal(err)
	}
	return c
}

// kinds is the type (and client or seq) of every event, in order.
func kinds(es []OutboxEntry) []string {
	var out []string
	for _, e := range es {
		switch {
		case e.Event.Client != "":
			out = append(out, e.Event.Type+":"+e.Event.Client)
		case e.Event.Type == EventMessage:
			out = append(out, fmt.Sprintf("message:%d", e.Event.Seq))
		default:
			out = append(out, e.Event.Type)
		}
	}
	return out
}

// A room's events are kept in its order, each with a unique id and the room's seq and epoch; a
// member's second connection is no join and its first leaving no leave; delivered events are
// forgotten.
func TestOutboxKeepsEventsInRoomOrder(t *testing.T) {
	cfg, notified := hookConfig(1<<20, time.Minute)
	r := New(cfg, "a")
	a1 := member(t, r, cfg, "ann")
	a2 := member(t, r, cfg, "ann")
	for i := range 2 {
		if _, _, err := r.PublishCommitted(t.Context(), "api", fmt.Sprint("p", i), []byte(`{"x":1}`), false); err != nil {
			t.Fatal(err)
		}
	}
	r.Leave(a1)
	if _, err := publish(r, "bin"); err != nil {
		t.Fatal(err)
	}
	r.Leave(a2)
	got, dropped := r.Outbox(100, 1<<20)
	want := []string{"room.occupied", "member.join:ann", "message:1", "message:2", "message:3", "member.leave:ann", "room.vacated"}
	if !slices.Equal(kinds(got), want) || dropped != 0 {
		t.Fatalf("outbox %v (dropped %d), want %v", kinds(got), dropped, want)
	}
	epoch, _ := r.Position()
	ids := map[string]bool{}
	for i, e := range got {
		if e.Event.Epoch != epoch || e.Event.Room != "a" || ids[e.Event.ID] || (i > 0 && (e.N <= got[i-1].N || e.Event.Seq < got[i-1].Event.Seq)) {
			t.Fatalf("event %d: %+v (epoch %s, ids so far %v)", i, e, epoch, ids)
		}
		ids[e.Event.ID] = true
	}
	if got[1].Event.Seq != 0 || got[5].Event.Seq != 3 || string(got[4].Event.Message) != `{"type":"message","seq":3,"binary":"Ymlu"}` {
		t.Fatalf("join seq %d, leave seq %d, binary message event %s", got[1].Event.Seq, got[5].Event.Seq, got[4].Event.Message)
	}
	if notified.Load() == 0 {
		t.Fatal("the dispatcher was never told of the events")
	}
	if more := r.AckOutbox(got[3].N); !more || r.OutboxLen() != 3 {
		t.Fatalf("after delivering 4 events: more %v, %d left, want 3", more, r.OutboxLen())
	}
	if rest, _ := r.Outbox(100, 1<<20); rest[0].Event.ID != got[4].Event.ID {
		t.Fatalf("after the ack the outbox starts at %+v, want %+v", rest[0], got[4])
	}
	if r.ReclaimIfIdle(time.Now().Add(time.Hour)) {
		t.Fatal("an idle room with events to deliver was reclaimed")
	}
	r.AckOutbox(got[6].N)
	if !r.ReclaimIfIdle(time.Now().Add(time.Hour)) {
		t.Fatal("an idle room whose events were all delivered was kept")
	}
}

// Past its bound the outbox drops its oldest events, counts them once, and never refuses a
// publish.
func TestOutboxDropsTheOldestPastItsBound(t *testing.T) {
	cfg, _ := hookConfig(2000, time.Minute)
	r := New(cfg, "a")
	for i := range 50 {
		if _, err := publish(r, fmt.Sprint("payload-", i)); err != nil {
			t.Fatalf("publish %d refused: %v", i, err)
		}
	}
	got, dropped := r.Outbox(1000, 1<<20)
	if dropped == 0 || int(dropped)+len(got) != 50 || got[len(got)-1].Event.Seq != 50 || got[0].Event.Seq != dropped+1 {
		t.Fatalf("kept %d events (seq %d..%d), dropped %d; want the newest kept and 50 in all", len(got), got[0].Event.Seq, got[len(got)-1].Event.Seq, dropped)
	}
	if _, again := r.Outbox(1000, 1<<20); again != 0 {
		t.Fatalf("the drops were reported twice (%d)", again)
	}
	if batch, _ := r.Outbox(3, 1<<20); len(batch) != 3 {
		t.Fatalf("a batch of at most 3: %d", len(batch))
	}
	if batch, _ := r.Outbox(1000, 1); len(batch) != 1 {
		t.Fatalf("a batch of at most 1 byte: %d events, want the first alone", len(batch))
	}
}

// In a hand-off the outbox moves with the room: the new owner has every undelivered event with
// its id, its members' reconnections are no new joins, and one that does not come back within
// the grace leaves.
func TestOutboxMovesWithTheRoom(t *testing.T) {
	cfg, _ := hookConfig(1<<20, 100*time.Millisecond)
	old := New(cfg, "a")
	member(t, old, cfg, "ann")
	member(t, old, cfg, "bo")
	if _, err := publish(old, "m"); err != nil {
		t.Fatal(err)
	}
	sent, _ := old.Outbox(100, 1<<20)
	old.AckOutbox(sent[0].N) // room.occupied was delivered
	st := old.Snapshot()
	old.Close(Farewell{})

	cfg2, notified := hookConfig(1<<20, 100*time.Millisecond)
	r := Restore(cfg2, st)
	r.Owned()
	if notified.Load() == 0 {
		t.Fatal("a room that arrived with events did not ask for their delivery")
	}
	got, _ := r.Outbox(100, 1<<20)
	if !slices.EqualFunc(got, sent[1:], func(a, b OutboxEntry) bool { return a.Event.ID == b.Event.ID }) {
		t.Fatalf("arrived with %v, want %v", kinds(got), kinds(sent[1:]))
	}
	ann := member(t, r, cfg2, "ann") // back through the new owner
	wait.Eventually(t, 5*time.Second, "bo, not back within the grace, leaving", func() bool {
		got, _ := r.Outbox(100, 1<<20)
		return slices.Contains(kinds(got), "member.leave:bo")
	})
	r.Leave(ann)
	if _, err := publish(r, "m2"); err != nil {
		t.Fatal(err)
	}
	got, _ = r.Outbox(100, 1<<20)
	want := []string{"member.join:ann", "member.join:bo", "message:1", "member.leave:bo", "member.leave:ann", "room.vacated", "message:2"}
	if !slices.Equal(kinds(got), want) {
		t.Fatalf("events %v, want %v", kinds(got), want)
	}
	if got[len(got)-1].N <= sent[len(sent)-1].N {
		t.Fatalf("the new owner numbered its events from %d again", got[len(got)-1].N)
	}
}

// The outbox is replicated with the room: a copy promoted after its owner's crash has every
// undelivered event, makes the events of committed messages its owner had not sent on again
// with the same ids, and expects the owner's members back.
func TestOutboxReplicatesAndSurvivesACrash(t *testing.T) {
	cfg, _ := hookConfig(1<<20, time.Minute)
	rep := &replicator{}
	cfg.Replicator = rep
	owner := New(cfg, "a")
	copyCfg, _ := hookConfig(1<<20, time.Minute)
	replica := Restore(copyCfg, owner.Snapshot())
	member(t, owner, cfg, "ann")
	for i := range 3 {
		seq, err := publish(owner, fmt.Sprint("m", i))
		if err != nil {
			t.Fatal(err)
		}
		owner.Commit(seq)
	}
	for _, a := range rep.appended {
		if err := replica.Apply(a); err != nil {
			t.Fatalf("apply %+v: %v", a, err)
		}
	}
	want, _ := owner.Outbox(100, 1<<20) // the owner crashes now, nothing delivered
	replica.Promote()
	replica.Owned()
	got, _ := replica.Outbox(100, 1<<20)
	if !slices.EqualFunc(got, want, func(a, b OutboxEntry) bool { return a.Event.ID == b.Event.ID && a.Event.Seq == b.Event.Seq }) {
		t.Fatalf("promoted copy's outbox %v, want the owner's %v", kinds(got), kinds(want))
	}
	member(t, replica, copyCfg, "ann")
	if after, _ := replica.Outbox(100, 1<<20); len(after) != len(want) {
		t.Fatalf("a member reconnecting to the promoted copy made events: %v", kinds(after[len(want):]))
	}
}

// The outbox is counted in the node's memory budget, and given back as events are delivered
// or the room closes; with the budget spent, a room keeps only its newest event.
func TestOutboxIsCountedInTheMemoryBudget(t *testing.T) {
	cfg, _ := hookConfig(1<<20, time.Minute)
	budget := limit.NewBudget(1<<20, nil)
	cfg.Budget = budget
	r := New(cfg, "a")
	for i := range 10 {
		if _, err := publish(r, fmt.Sprint("m", i)); err != nil {
			t.Fatal(err)
		}
	}
	withEvents := budget.Used()
	got, _ := r.Outbox(100, 1<<20)
	r.AckOutbox(got[len(got)-1].N)
	if delivered := budget.Used(); delivered >= withEvents || r.OutboxLen() != 0 {
		t.Fatalf("budget %d with the events, %d once delivered (%d left)", withEvents, delivered, r.OutboxLen())
	}
	if _, err := publish(r, "pending"); err != nil {
		t.Fatal(err)
	}
	r.Close(Farewell{})
	if budget.Used() != 0 {
		t.Fatalf("a closed room still holds %d bytes of the budget", budget.Used())
	}

	r = New(cfg, "b")
	budget.Charge(1 << 20) // the node's memory is spent elsewhere
	member(t, r, cfg, "ann")
	if got, dropped := r.Outbox(100, 1<<20); !slices.Equal(kinds(got), []string{"member.join:ann"}) || dropped != 1 {
		t.Fatalf("with the budget spent: %v, %d dropped; want the newest alone", kinds(got), dropped)
	}
	budget.Release(1 << 20)
	member(t, r, cfg, "bo")
	if got, _ := r.Outbox(100, 1<<20); len(got) != 2 {
		t.Fatalf("with the budget free again: %v", kinds(got))
	}

	// A publish the budget would refuse is taken by dropping the room's oldest events instead.
	for i := range 20 {
		if _, err := publish(r, fmt.Sprint("m", i)); err != nil {
			t.Fatal(err)
		}
	}
	rest := int(budget.Limit() - budget.Used())
	budget.Charge(rest)
	defer budget.Release(rest)
	if _, err := publish(r, "one more"); err != nil {
		t.Fatalf("a publish refused while its room's webhook events could make room: %v", err)
	}
	got, dropped := r.Outbox(100, 1<<20)
	if dropped == 0 || got[len(got)-1].Event.Seq != 21 {
		t.Fatalf("after the publish: %d dropped, the outbox ends at %v", dropped, kinds(got[len(got)-1:]))
	}
}
