package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/ring"
)

// TestReconnectWhenTheRoomMoves moves a room for real: its owner starts draining, which takes it
// out of the placement, and closes the room's connections with 4001. The clients must carry on
// at the new owner on their own: the publisher's calls all succeed, each exactly once, and the
// subscriber sees every message exactly once. The room's state is handed off, so the numbering
// goes on in the same epoch: no reset.
func TestReconnectWhenTheRoomMoves(t *testing.T) {
	n1, n2 := startPair(t)
	room := roomOwnedBy(t, n1, "n1", "moving")
	opts := client.Options{ClientID: "pub", Discard: true, MaxReconnectDelay: 200 * time.Millisecond}
	pub := dial(t, n1.URL(), room, &opts)
	sub := dial(t, n1.URL(), room, &client.Options{ClientID: "sub", MaxReconnectDelay: 200 * time.Millisecond})
	oldEpoch := sub.Welcome().Epoch
	if pub.Welcome().Node != "n1" || sub.Welcome().Node != "n1" {
		t.Fatalf("both should start on n1: %+v %+v", pub.Welcome(), sub.Welcome())
	}

	// The publisher publishes total messages one after the other; the room moves after the
	// first few, so some publishes are in flight when it does.
	const total, moveAfter = 150, 30
	moveNow := make(chan struct{})
	var acked acks
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range total {
			if i == moveAfter {
				close(moveNow)
			}
			if !acked.publish(t, pub, fmt.Sprintf("m%03d", i), i, 15*time.Second) {
				return
			}
		}
	})
	<-moveNow
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n1.Ring.UpdateMeta(ctx, func(m *ring.Meta) { m.Draining = true }); err != nil {
		t.Fatal(err)
	}

	seen := map[string]int{}
	var reconnected, resets []client.Event
	lastSeq := map[string]uint64{}
	epoch := oldEpoch
	for len(seen) < total || len(reconnected) == 0 {
		ev := next(t, sub)
		switch ev.Type {
		case client.EventMessage:
			if ev.Seq <= lastSeq[epoch] {
				t.Fatalf("seq %d after %d in epoch %s", ev.Seq, lastSeq[epoch], epoch)
			}
			lastSeq[epoch] = ev.Seq
			seen[ev.ID]++
			if seen[ev.ID] > 1 {
				t.Fatalf("message %s delivered twice", ev.ID)
			}
		case client.EventReconnected:
			reconnected = append(reconnected, ev)
			var ce *client.CloseError
			if !errors.As(ev.Err, &ce) || ce.Code != 4001 {
				t.Fatalf("reconnected after %v, want a 4001 close", ev.Err)
			}
			if moved, ok := ce.Moved(); !ok || moved.Node != "n2" || moved.Epoch != oldEpoch {
				t.Fatalf("4001 reason %+v", moved)
			}
		case client.EventReset:
			resets = append(resets, ev)
			epoch = ev.Epoch
		default:
			t.Fatalf("unexpected event %+v", ev)
		}
	}
	wg.Wait()
	if len(reconnected) != 1 || reconnected[0].Welcome.Node != "n2" || len(resets) != 0 || reconnected[0].Welcome.Epoch != oldEpoch {
		t.Fatalf("reconnected %+v, resets %+v", reconnected, resets)
	}
	if w := sub.Welcome(); w.Node != "n2" || w.Client != "sub" || sub.Epoch() != w.Epoch {
		t.Fatalf("subscriber after the move: welcome %+v, epoch %q", w, sub.Epoch())
	}
	// The publisher may have finished before its own connection moved: give it a moment.
	for deadline := time.Now().Add(5 * time.Second); pub.Welcome().Node != "n2" && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if pub.Welcome().Node != "n2" || !n2.Node.HasRoom(room) || n1.Node.HasRoom(room) {
		t.Fatalf("the room should live on n2 only now; publisher on %s", pub.Welcome().Node)
	}
	if acked.len() != total {
		t.Fatalf("%d of %d publishes acked", acked.len(), total)
	}
	// Publishing keeps working on the new owner, and LastSeq follows.
	seq := publish(t, pub, "after", "after the move")
	if ev := next(t, sub); ev.ID != "after" || ev.Seq != seq || sub.LastSeq() != seq {
		t.Fatalf("after the move: %+v (LastSeq %d, ack %d)", ev, sub.LastSeq(), seq)
	}
}
