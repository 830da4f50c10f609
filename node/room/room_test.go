package room

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gate is a pause watchdog the test decides for.
type gate struct{ stale atomic.Bool }

func (g *gate) Stale() bool { return g.stale.Load() }
func (g *gate) AwaitFresh(context.Context) error {
	if g.stale.Load() {
		return ErrStale
	}
	return nil
}

func testConfig() (*Config, *gate) {
	g := &gate{}
	counter := func() prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}) }
	return &Config{
		Node: "n1", HistoryCount: 1000, HistoryBytes: 1 << 20, DedupeIDs: 100, MaxConns: 10, MaxSources: 2,
		PresenceAnnounceMax: 100, PresenceInterval: time.Second, HoldWrites: 5 * time.Second,
		SendQueue: 16, WriteTimeout: time.Second, PingInterval: time.Minute, Gate: g,
		Metrics: Metrics{Messages: counter(), Duplicates: counter(), Deliveries: counter(), SlowConsumers: counter()},
	}, g
}

// publish sequences a binary message of payload, as a stream source does.
func publish(r *Room, payload string) (uint64, error) {
	frame := make([]byte, 8+len(payload))
	copy(frame[8:], payload)
	return r.PublishBinary(context.Background(), nil, frame)
}

func TestMessagesAreNumberedInOrderAndKept(t *testing.T) {
	cfg, _ := testConfig()
	cfg.HistoryCount = 3
	r := New(cfg, "lobby")
	for i := 1; i <= 5; i++ {
		if seq, err := publish(r, "m"); err != nil || seq != uint64(i) {
			t.Fatalf("publish %d: seq %d, %v", i, seq, err)
		}
	}
	st := r.Snapshot()
	if st.Seq != 5 || len(st.History) != 3 || st.History[0].Seq != 3 || st.History[2].Seq != 5 {
		t.Fatalf("state %+v, want seq 5 and history 3..5", st)
	}
	if got := binary.BigEndian.Uint64(st.History[0].Frame); got != 3 {
		t.Fatalf("frame carries seq %d, want 3", got)
	}
	if n := testutil.ToFloat64(cfg.Metrics.Messages); n != 5 {
		t.Fatalf("messages counted %v, want 5", n)
	}
}

func TestHistoryKeepsItsByteBoundButAlwaysTheNewest(t *testing.T) {
	h := history{maxCount: 100, maxBytes: 30}
	for seq := uint64(1); seq <= 4; seq++ {
		h.add(newEntry(seq, true, make([]byte, 12)))
	}
	if h.first() != 3 || h.bytes != 24 {
		t.Fatalf("first %d bytes %d, want 3 and 24", h.first(), h.bytes)
	}
	h.add(newEntry(5, true, make([]byte, 100))) // larger than the bound alone: kept
	if h.first() != 5 || len(h.after(0)) != 1 {
		t.Fatalf("first %d, %d entries; want only the newest", h.first(), len(h.after(0)))
	}
	if got := h.after(5); got != nil {
		t.Fatalf("after the newest: %d entries", len(got))
	}
}

func TestDedupeForgetsTheOldestID(t *testing.T) {
	d := dedupe{max: 2}
	d.remember("c", "a", 1)
	d.remember("c", "b", 2)
	d.remember("c", "c", 3)
	if _, ok := d.lookup("a"); ok {
		t.Fatal("the oldest id is still remembered")
	}
	if seq, ok := d.lookup("c"); !ok || seq != 3 {
		t.Fatalf("c: %d %v", seq, ok)
	}
}

// A write to a frozen room waits for the hand-off to end: it goes on when the room thaws, and
// is refused when the room closes (it moved) or the hold runs out.
func TestFrozenRoomHoldsWrites(t *testing.T) {
	cfg, _ := testConfig()
	t.Run("thawed: the write goes on", func(t *testing.T) {
		r := New(cfg, "a")
		if !r.Freeze() || r.Freeze() {
			t.Fatal("a live room freezes once, a frozen one not again")
		}
		done := make(chan uint64)
		go func() { seq, _ := publish(r, "x"); done <- seq }()
		select {
		case seq := <-done:
			t.Fatalf("a write to a frozen room was sequenced (%d)", seq)
		case <-time.After(50 * time.Millisecond):
		}
		r.Unfreeze()
		if seq := <-done; seq != 1 {
			t.Fatalf("after the thaw: seq %d, want 1", seq)
		}
	})
	t.Run("closed: the write is refused", func(t *testing.T) {
		r := New(cfg, "b")
		r.Freeze()
		done := make(chan error)
		go func() { _, err := publish(r, "x"); done <- err }()
		time.Sleep(20 * time.Millisecond)
		r.Close(Moved(ring.Member{ID: "n2"}, true))
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Fatalf("held write after the close: %v, want ErrClosed", err)
		}
		if r.Freeze() {
			t.Fatal("a closed room froze")
		}
	})
	t.Run("held too long: the write is refused", func(t *testing.T) {
		cfg, _ := testConfig()
		cfg.HoldWrites = 30 * time.Millisecond
		r := New(cfg, "c")
		r.Freeze()
		if _, err := publish(r, "x"); !errors.Is(err, ErrClosed) {
			t.Fatalf("write held past HoldWrites: %v, want ErrClosed", err)
		}
	})
	t.Run("parked: frozen until settled, at a higher term", func(t *testing.T) {
		r := New(cfg, "d")
		r.Freeze()
		r.Park("n2")
		to, _, term, ok := r.Parked()
		if !ok || to != "n2" || term != 1 {
			t.Fatalf("parked with %q at term %d (%v), want n2 at 1", to, term, ok)
		}
		if r.Freeze() {
			t.Fatal("a parked room froze for another hand-off before it was settled")
		}
		r.Unfreeze()
		if _, _, _, ok := r.Parked(); !ok {
			t.Fatal("Unfreeze thawed a parked room: only Settle may")
		}
		done := make(chan uint64)
		go func() { seq, _ := publish(r, "x"); done <- seq }()
		time.Sleep(20 * time.Millisecond)
		if !r.Settle(3) {
			t.Fatal("Settle refused a parked room")
		}
		if seq := <-done; seq != 1 || r.Term() != 3 {
			t.Fatalf("after Settle(3): seq %d at term %d, want 1 at 3", seq, r.Term())
		}
	})
}

// A room its node's ring gives to another node writes on only while its lease holds; once the
// ring gives it back, no lease bounds it.
func TestLostRoomWritesWithinItsLease(t *testing.T) {
	cfg, _ := testConfig()
	cfg.HoldWrites = 100 * time.Millisecond
	r := New(cfg, "a")
	now := time.Now()
	if at := r.Lost(now); !at.Equal(now) || !r.Lost(now.Add(time.Second)).Equal(now) {
		t.Fatal("Lost does not keep the first time the room was lost")
	}
	if r.Lease(now.Add(time.Hour), now) {
		t.Fatal("a lease an hour away reported as run out")
	}
	if seq, err := publish(r, "in lease"); err != nil || seq != 1 {
		t.Fatalf("within the lease: %d %v", seq, err)
	}
	if !r.Lease(now, now) || r.Lease(now, now) {
		t.Fatal("a lease run out is reported once")
	}
	if !r.LeaseExpired(time.Now()) {
		t.Fatal("the lease did not expire")
	}
	if _, err := publish(r, "past lease"); !errors.Is(err, ErrClosed) {
		t.Fatalf("past the lease: %v, want ErrClosed after the hold", err)
	}
	done := make(chan uint64)
	cfg.HoldWrites = 5 * time.Second
	go func() { seq, _ := publish(r, "held"); done <- seq }()
	time.Sleep(20 * time.Millisecond)
	r.Regain()
	select {
	case seq := <-done:
		if seq != 2 {
			t.Fatalf("held write after the regain: seq %d, want 2", seq)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a held write did not go on once the ring gave the room back")
	}
}

// quorum is a Quorum a test switches.
type quorum struct{ ok atomic.Bool }

func (q *quorum) Writable() bool { return q.ok.Load() }

// In a minority the node sequences nothing; a demoted room stays held after the quorum is back,
// until it is undemoted (no other node holds it); a write held meanwhile then goes on.
func TestMinorityHoldsWrites(t *testing.T) {
	cfg, _ := testConfig()
	q := &quorum{}
	cfg.Quorum = q
	cfg.HoldWrites = 5 * time.Second
	r := New(cfg, "a")
	r.Demote()
	done := make(chan uint64)
	go func() { seq, _ := publish(r, "x"); done <- seq }()
	select {
	case seq := <-done:
		t.Fatalf("sequenced in a minority (%d)", seq)
	case <-time.After(100 * time.Millisecond):
	}
	q.ok.Store(true)
	select {
	case seq := <-done:
		t.Fatalf("a demoted room sequenced (%d) before it was settled", seq)
	case <-time.After(100 * time.Millisecond):
	}
	if !r.Demoted() {
		t.Fatal("demoted mark lost")
	}
	r.Undemote()
	if seq := <-done; seq != 1 || r.Demoted() {
		t.Fatalf("after the room was settled: seq %d, demoted %v", seq, r.Demoted())
	}
}

// Woken from a pause, a room takes no write and no source until the watchdog has decided.
func TestStaleNodeServesNothing(t *testing.T) {
	cfg, g := testConfig()
	r := New(cfg, "a")
	g.stale.Store(true)
	if _, err := publish(r, "x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("write on a stale node: %v", err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := r.AddSource(NewSource(a)); !errors.Is(err, ErrStale) {
		t.Fatalf("source on a stale node: %v", err)
	}
	if _, seq := r.Position(); seq != 0 {
		t.Fatalf("seq %d after refused writes", seq)
	}
}

// Finding 9 of issue 22: in a busy room the room's window forgets a quiet client's id within a
// fraction of a second; the client's own window keeps it, so its retry after a reconnect is
// acked once. A publisher pushed out of the latest DedupeClients keeps only the room's window.
func TestDedupeKeepsEachPublishersOwnIDs(t *testing.T) {
	d := dedupe{max: 3, perClient: 2}
	d.remember("quiet", "q1", 1)
	for i := range 10 {
		d.remember("busy", fmt.Sprint("b", i), uint64(2+i))
	}
	if seq, ok := d.lookup("q1"); !ok || seq != 1 {
		t.Fatalf("the quiet client's id after 10 busy publishes: %d %v", seq, ok)
	}
	if _, ok := d.lookup("b5"); ok {
		t.Fatal("an id out of both windows is still remembered")
	}
	if len(d.seqs) != 1+3 { // q1; b7, b8, b9 (the room's window holds the busy client's two too)
		t.Fatalf("%d ids remembered, want 4", len(d.seqs))
	}
	for i := range DedupeClients {
		d.remember(fmt.Sprint("c", i), fmt.Sprint("x", i), uint64(100+i))
	}
	if _, ok := d.lookup("q1"); ok {
		t.Fatal("a publisher pushed out of the latest publishers kept its window")
	}
	// Handed off, both windows arrive as they were.
	st := State{Room: "r", Epoch: "e", Seq: 1000, IDs: d.all()}
	if err := st.Validate(); err != nil {
		t.Fatal(err)
	}
	var again dedupe
	again.max, again.perClient = 3, 2
	for _, id := range st.IDs {
		again.remember(id.Client, id.ID, id.Seq)
	}
	if len(again.seqs) != len(d.seqs) || again.recent.Len() != d.recent.Len() {
		t.Fatalf("restored %d ids of %d clients, want %d of %d", len(again.seqs), again.recent.Len(), len(d.seqs), d.recent.Len())
	}
}

func TestRestoreGoesOnWhereTheRoomWas(t *testing.T) {
	cfg, _ := testConfig()
	r := New(cfg, "lobby")
	for range 3 {
		publish(r, "m")
	}
	r.ids.remember("c1", "p1", 2)
	st := r.Snapshot()
	if err := st.Validate(); err != nil {
		t.Fatal(err)
	}
	got := Restore(cfg, st)
	epoch, seq := got.Position()
	if want, _ := r.Position(); epoch != want || seq != 3 {
		t.Fatalf("restored at %s/%d, want %s/3", epoch, seq, want)
	}
	if s, ok := got.ids.lookup("p1"); !ok || s != 2 {
		t.Fatal("the remembered id did not travel")
	}
	if seq, _ := publish(got, "m"); seq != 4 {
		t.Fatalf("next seq %d, want 4", seq)
	}
}

func TestValidateRefusesStateARoomCannotHold(t *testing.T) {
	bin := make([]byte, 8)
	binary.BigEndian.PutUint64(bin, 2)
	for name, st := range map[string]State{
		"bad name":          {Room: "a b", Epoch: "e", Seq: 1},
		"no epoch":          {Room: "a", Seq: 1},
		"history past seq":  {Room: "a", Epoch: "e", Seq: 1, History: []Message{{Seq: 2, Binary: true, Frame: bin}}},
		"history with hole": {Room: "a", Epoch: "e", Seq: 3, History: []Message{{Seq: 1, Frame: []byte("x")}, {Seq: 3, Frame: []byte("x")}}},
		"binary seq wrong":  {Room: "a", Epoch: "e", Seq: 3, History: []Message{{Seq: 3, Binary: true, Frame: bin}}},
		"empty frame":       {Room: "a", Epoch: "e", Seq: 1, History: []Message{{Seq: 1}}},
		"id past seq":       {Room: "a", Epoch: "e", Seq: 1, IDs: []ID{{ID: "x", Seq: 9}}},
		"empty id":          {Room: "a", Epoch: "e", Seq: 1, IDs: []ID{{Seq: 1}}},
	} {
		if st.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A closing room tells its sources where to go, with their own count, and its connections the
// new owner, epoch and the last seq each was sent.
func TestFarewells(t *testing.T) {
	cfg, _ := testConfig()
	r := New(cfg, "a")
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	s := NewSource(a)
	if _, err := r.AddSource(s); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddSource(NewSource(a)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddSource(NewSource(a)); !errors.Is(err, ErrFull) {
		t.Fatalf("a third source (MaxSources 2): %v", err)
	}
	to := ring.Member{ID: "n2", Meta: ring.Meta{TCP: "10.0.0.2:7000"}}
	r.Close(Moved(to, true))
	f := s.Farewell()
	if f == nil || f.SourceLine(7) != "MOVED 10.0.0.2:7000 n2 7" {
		t.Fatalf("source farewell %+v", f)
	}
	if s.Extend(time.Second) {
		t.Fatal("a stopped source extended its deadline")
	}
	var reason protocol.MovedReason
	if err := json.Unmarshal([]byte(f.closeReason("ep", 41)), &reason); err != nil || reason != (protocol.MovedReason{Node: "n2", Epoch: "ep", Seq: 41}) {
		t.Fatalf("close reason %+v %v", reason, err)
	}
	if line := Moved(ring.Member{}, false).SourceLine(0); line[:3] != "ERR" {
		t.Fatalf("moved nowhere: %q", line)
	}
	if _, err := r.AddSource(NewSource(a)); !errors.Is(err, ErrClosed) {
		t.Fatalf("source on a closed room: %v", err)
	}
}

func TestIdleRoomIsReclaimedOnce(t *testing.T) {
	cfg, _ := testConfig()
	r := New(cfg, "a")
	if r.ReclaimIfIdle(time.Now().Add(-time.Hour)) {
		t.Fatal("reclaimed a room active just now")
	}
	if !r.ReclaimIfIdle(time.Now().Add(time.Second)) || r.ReclaimIfIdle(time.Now().Add(time.Second)) {
		t.Fatal("an idle room is reclaimed exactly once")
	}
	if _, err := publish(r, "x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("write to a reclaimed room: %v", err)
	}
}

// replicator is a Replicator a test drives: it holds every message until the test commits it.
type replicator struct{ appended []Append }

func (f *replicator) Append(_ *Room, a Append, _ func() State) bool {
	f.appended = append(f.appended, a)
	return true
}

// queued is what waits in c's queue: welcome and ack frames by type, messages by seq.
func queued(c *Conn) (types []string, seqs []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.queue {
		switch {
		case f.msg != nil:
			seqs = append(seqs, f.msg.seq)
		case f.text != nil:
			var in protocol.Incoming
			_ = json.Unmarshal(f.text, &in)
			types = append(types, fmt.Sprintf("%s:%d", in.Type, in.Seq))
		}
	}
	return types, seqs
}

// With a replicator, a message is sequenced at once but delivered and acked only once its
// replicas hold it, in seq order; a client joining meanwhile is welcomed at the committed seq;
// a retried id is acked only once its message commits.
func TestMessagesCommitOnceReplicated(t *testing.T) {
	cfg, _ := testConfig()
	rep := &replicator{}
	cfg.Replicator = rep
	r := New(cfg, "a")
	pub := &Conn{cfg: cfg, writer: true, client: "p"}
	if err := r.Join(pub, Resume{}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := r.Publish(t.Context(), pub, fmt.Sprint("m", i), []byte(`1`)); err != nil {
			t.Fatal(err)
		}
	}
	if len(rep.appended) != 3 || rep.appended[2].Msg.Seq != 3 || rep.appended[2].ID != "m2" || rep.appended[2].Client != "p" {
		t.Fatalf("appended %+v", rep.appended)
	}
	if types, seqs := queued(pub); len(types) != 1 || len(seqs) != 0 {
		t.Fatalf("before any replica acked: %v %v, want the welcome alone", types, seqs)
	}
	late := &Conn{cfg: cfg, writer: true, client: "l"}
	if err := r.Join(late, Resume{HasSince: true}); err != nil {
		t.Fatal(err)
	}
	if types, _ := queued(late); types[0] != "welcome:0" {
		t.Fatalf("joined while nothing committed: %v", types)
	}
	_ = r.Publish(t.Context(), pub, "m0", []byte(`1`)) // a retry of an uncommitted id
	r.Commit(2)
	if types, seqs := queued(pub); !slices.Equal(seqs, []uint64{1, 2}) || !slices.Equal(types, []string{"welcome:0", "ack:1", "ack:2", "ack:1"}) {
		t.Fatalf("after commit 2: %v %v", types, seqs)
	}
	if _, seqs := queued(late); !slices.Equal(seqs, []uint64{1, 2}) {
		t.Fatalf("the late joiner got %v", seqs)
	}
	r.Commit(3)
	if _, seqs := queued(late); !slices.Equal(seqs, []uint64{1, 2, 3}) || r.Committed() != 3 {
		t.Fatalf("after commit 3: %v, committed %d", seqs, r.Committed())
	}
	// Demoted (fallen into a minority), the room commits nothing until it is settled.
	_ = r.Publish(t.Context(), pub, "m4", []byte(`1`))
	r.Demote()
	r.Commit(4)
	if r.Committed() != 3 {
		t.Fatalf("a demoted room committed: %d", r.Committed())
	}
	r.Undemote()
	r.Commit(4)
	if r.Committed() != 4 {
		t.Fatalf("settled, the room did not commit: %d", r.Committed())
	}
	r.Close(Farewell{})
}
