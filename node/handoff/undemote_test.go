package handoff

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/ring"
)

// Back from a minority, a demoted room writes again once every other live node has said it
// does not hold the room.
func TestUndemoteWhenNobodyElseHoldsTheRoom(t *testing.T) {
	a, b := newMember(t, "n1", time.Minute), newMember(t, "n2", time.Minute)
	both := placement([]*member{a, b})
	a.ring.Set(both)
	b.ring.Set(both)
	name := ownedBy(both, "n1")
	r := holding(t, a, name, 2)
	r.Demote()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if !a.mover.Undemote(ctx, r) || r.Demoted() {
		t.Fatal("the room stayed demoted though no other node holds it")
	}
	if seq, err := r.PublishBinary(t.Context(), nil, make([]byte, 9)); err != nil || seq != 3 {
		t.Fatalf("write after undemote: %d %v", seq, err)
	}
}

// The heir promoted the room (a later term) and took writes while this node was cut off: asked,
// it hands its copy here, which supersedes the demoted one; the demoted copy never writes.
func TestUndemoteGivesWayToAPromotedCopy(t *testing.T) {
	a, b := newMember(t, "n1", time.Minute), newMember(t, "n2", time.Minute)
	both := placement([]*member{a, b})
	a.ring.Set(both)
	b.ring.Set(both)
	name := ownedBy(both, "n1")
	demoted := holding(t, a, name, 2)
	demoted.Demote()
	st := demoted.Snapshot() // the heir's copy: the same epoch, a later term, more messages
	st.Term++
	heirs, err := b.rooms.GetOrCreate(name, func() (*room.Room, error) { return room.Restore(b.mover.cfg.Room, st), nil })
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := heirs.PublishBinary(t.Context(), nil, make([]byte, 9)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	a.mover.Undemote(ctx, demoted)
	got := a.rooms.Get(name)
	if got == demoted || got == nil {
		t.Fatal("the demoted copy is still the room")
	}
	if _, seq := got.Position(); seq != 5 || b.rooms.Get(name) != nil {
		t.Fatalf("n1 holds the room at seq %d, want the heir's 5 (and the heir's copy gone)", seq)
	}
	if _, err := demoted.PublishBinary(t.Context(), nil, make([]byte, 9)); err == nil {
		t.Fatal("the demoted copy took a write")
	}
}

// ownedBy is a room p places on node id.
func ownedBy(p *ring.Placement, id string) string {
	for i := 0; ; i++ {
		name := fmt.Sprint("r", i)
		if o, _ := p.Owner(name); o.ID == id {
			return name
		}
	}
}
