package handoff

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/ring"
)

// Finding 2 of issue 22: the receiver installs a pushed room and takes writes, its reply is lost,
// and the ring gives the room back to the sender. Before, the sender thawed its parked copy
// and wrote on in the same epoch beside the receiver's: two messages per seq. Now it settles
// with the receiver first: the receiver holds the room, so the sender's copy closes, and the
// receiver's comes back to it at a higher term with every write it took.
func TestLostReplyForksNothing(t *testing.T) {
	a, b, r := parkedByALostReply(t, lostReply)
	epoch, _ := r.Position()
	got := b.rooms.Get("lobby")
	if got == nil || got.Term() != 2 {
		t.Fatal("the receiver did not install the room at the next term")
	}
	for range 2 { // the receiver takes writes; the sender never heard it has the room
		if _, err := got.PublishBinary(t.Context(), nil, make([]byte, 9)); err != nil {
			t.Fatal(err)
		}
	}
	b.swallow.Store(false)

	back := placement(only(a), b) // the ring gives the room back to the sender
	a.ring.Set(back)
	b.ring.Set(back)
	a.mover.Rebalance(t.Context())
	if _, err := r.PublishBinary(t.Context(), nil, make([]byte, 9)); err == nil {
		t.Fatal("the parked copy took a write beside the receiver's")
	}
	if a.rooms.Get("lobby") == r {
		t.Fatal("the parked copy is still in the sender's table")
	}
	if testutil.ToFloat64(a.settled.WithLabelValues("held")) != 1 {
		t.Fatal("roost_handoff_settled_total{outcome=held} not counted")
	}
	b.mover.Rebalance(t.Context())
	home := a.rooms.Get("lobby")
	if home == nil || b.rooms.Get("lobby") != nil {
		t.Fatal("the receiver's copy did not come back to the sender")
	}
	if e, seq := home.Position(); e != epoch || seq != 5 || home.Term() != 3 {
		t.Fatalf("back home at %s/%d term %d, want %s/5 term 3", e, seq, home.Term(), epoch)
	}
}

// The hand-off call is held up in the network: the sender times out and parks the room, the
// ring gives the room back, and the sender settles: the receiver does not hold it, so it fences
// the attempt and the sender writes on at term 3. When the held-up attempt reaches the receiver
// at last, it is refused (it would be a second copy), and a later hand-off is taken.
func TestDelayedAttemptIsFenced(t *testing.T) {
	a, b, r := parkedByALostReply(t, heldUp)
	toB := a.ring.Placement()
	late := <-b.lost
	b.delay.Store(false)
	back := placement(only(a), b)
	a.ring.Set(back)
	a.mover.Rebalance(t.Context())
	if _, _, _, ok := r.Parked(); ok || r.Term() != 3 {
		t.Fatalf("after the fence: parked %v at term %d, want live at 3", ok, r.Term())
	}
	if seq, err := r.PublishBinary(t.Context(), nil, make([]byte, 9)); err != nil || seq != 4 {
		t.Fatalf("write after the fence: %d %v", seq, err)
	}
	if testutil.ToFloat64(a.settled.WithLabelValues("fenced")) != 1 {
		t.Fatal("roost_handoff_settled_total{outcome=fenced} not counted")
	}

	rec := httptest.NewRecorder() // the held-up attempt arrives, at a receiver that owns the room
	b.mover.ServeHandoff(rec, httptest.NewRequestWithContext(t.Context(), "POST", Path, nil), late)
	if b.rooms.Get("lobby") != nil || !strings.Contains(rec.Body.String(), `"refused"`) {
		t.Fatalf("the fenced attempt was installed late: %s", rec.Body)
	}
	a.ring.Set(toB)
	a.mover.Rebalance(t.Context())
	got := b.rooms.Get("lobby")
	if got == nil || got.Term() != 4 {
		t.Fatal("the hand-off after the fence was not installed at term 4")
	}
	if _, seq := got.Position(); seq != 4 {
		t.Fatalf("arrived at seq %d, want 4", seq)
	}
}

// The receiver of a parked room left the ring: whatever it took is gone with it, so the room
// goes on here in a new epoch (clients resuming get a reset, never a fork), with its messages.
func TestParkedRoomWhoseReceiverIsGoneStartsANewEpoch(t *testing.T) {
	a, _, r := parkedByALostReply(t, lostReply)
	epoch, _ := r.Position()
	a.ring.Set(placement(only(a))) // n2 is gone
	a.mover.Rebalance(t.Context())
	got := a.rooms.Get("lobby")
	if got == nil || got == r {
		t.Fatal("the parked room was not replaced by its refounded copy")
	}
	if e, seq := got.Position(); e == epoch || seq != 3 || got.Term() != 1 {
		t.Fatalf("refounded at %s/%d term %d, want a new epoch at 3, term 1", e, seq, got.Term())
	}
	if seq, err := got.PublishBinary(t.Context(), nil, make([]byte, 9)); err != nil || seq != 4 {
		t.Fatalf("write after refounding: %d %v", seq, err)
	}
}

// Finding 4 of issue 22: the ring gives a room to a node this one cannot reach (node-to-node
// calls blocked, gossip fine). The old owner writes on only for its lease, half the new owner's
// ArriveTimeout, then stops: the new owner may start the room afresh after ArriveTimeout, and
// two copies must not both take writes.
func TestUnreachableOwnerEndsTheLease(t *testing.T) {
	a, b := newMember(t, "n1", time.Minute), newMember(t, "n2", time.Minute)
	a.mover.cfg.ArriveTimeout = 400 * time.Millisecond
	a.mover.cfg.Timeout = 50 * time.Millisecond
	cfg := *a.mover.cfg.Room
	cfg.HoldWrites = 50 * time.Millisecond
	a.mover.cfg.Room = &cfg
	r := holding(t, a, "lobby", 1)
	unreachable := placement(only(b), a)
	b.ring.Set(unreachable)
	a.ring.Set(withHTTP(unreachable, "n2", "127.0.0.1:1")) // n2 as n1 sees it: nothing answers
	lost := time.Now()
	a.mover.Rebalance(t.Context())
	if seq, err := r.PublishBinary(t.Context(), nil, make([]byte, 9)); err != nil || seq != 2 {
		t.Fatalf("write within the lease: %d %v", seq, err)
	}
	for time.Since(lost) < 250*time.Millisecond {
		a.mover.Rebalance(t.Context())
		time.Sleep(20 * time.Millisecond)
	}
	if !r.LeaseExpired(time.Now()) {
		t.Fatal("the lease did not run out with the new owner out of reach")
	}
	if _, err := r.PublishBinary(t.Context(), nil, make([]byte, 9)); err == nil {
		t.Fatal("a write was sequenced past the lease")
	}
	a.ring.Set(placement(only(a), b)) // the ring gives it back: the lease no longer bounds it
	a.mover.Rebalance(t.Context())
	if seq, err := r.PublishBinary(t.Context(), nil, make([]byte, 9)); err != nil || seq != 3 {
		t.Fatalf("write once the ring gave the room back: %d %v", seq, err)
	}
}

// The faults a member can put on the hand-off calls it gets.
var (
	lostReply = func(m *member) *atomic.Bool { return &m.swallow }
	heldUp    = func(m *member) *atomic.Bool { return &m.delay }
)

// parkedByALostReply hands room lobby (3 messages) from n1 to n2 with fault switched on at n2, and returns them with n1's copy, parked with n2 at term 1.
func parkedByALostReply(t *testing.T, fault func(*member) *atomic.Bool) (a, b *member, r *room.Room) {
	t.Helper()
	a, b = newMember(t, "n1", time.Minute), newMember(t, "n2", time.Minute)
	r = holding(t, a, "lobby", 3)
	toB := placement(only(b), a)
	a.ring.Set(toB)
	b.ring.Set(toB)
	fault(b).Store(true)
	a.mover.Rebalance(t.Context())
	if to, _, term, ok := r.Parked(); !ok || to != "n2" || term != 1 {
		t.Fatalf("after the failed call the room is parked with %q at term %d (%v), want n2 at 1", to, term, ok)
	}
	return a, b, r
}

// withHTTP is p with member id reached at addr.
func withHTTP(p *ring.Placement, id, addr string) *ring.Placement {
	ms := p.Members()
	for i := range ms {
		if ms[i].ID == id {
			ms[i].HTTP = addr
		}
	}
	return ring.NewPlacement(ms, p.Config())
}

// A room whose owner the ring declared dead starts afresh only once that owner, were it cut
// off rather than dead, has stopped writing for sure (its minority rule: Config.Silent).
func TestFreshStartWaitsForTheDeadOwnersSilence(t *testing.T) {
	a, b := newMember(t, "n1", time.Minute), newMember(t, "n2", time.Minute)
	before := placement([]*member{a, b})
	name := ""
	for i := 0; name == ""; i++ {
		if o, _ := before.Owner(fmt.Sprint("r", i)); o.ID == "n2" {
			name = fmt.Sprint("r", i)
		}
	}
	silent := time.Now().Add(300 * time.Millisecond)
	a.mover.cfg.Silent = func(id string) time.Time {
		if id == "n2" {
			return silent
		}
		return time.Time{}
	}
	ms := before.Members()
	for i := range ms {
		if ms[i].ID == "n2" {
			ms[i].State = ring.StateDead
		}
	}
	after := ring.NewPlacement(ms, before.Config())
	a.mover.Remember(before)
	a.ring.Set(after)
	a.mover.Remember(after)
	got, err := a.mover.Acquire(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	if time.Now().Before(silent) {
		t.Fatal("started afresh before the dead owner had stopped writing for sure")
	}
	if got.Term() != 1 {
		t.Fatalf("fresh room at term %d", got.Term())
	}
}
