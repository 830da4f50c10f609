package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
	"go.uber.org/goleak"
)

func TestResolveAndDialFollowRedirects(t *testing.T) {
	n1, n2 := startPair(t)
	room := roomOwnedBy(t, n1, "n2", "far")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, base := range []string{n1.URL(), "ws://" + n1.HTTP, n1.HTTP, n1.URL() + "/"} {
		o, err := client.Resolve(ctx, base, room, nil)
		if err != nil {
			t.Fatalf("Resolve via %s: %v", base, err)
		}
		if o.Room != room || o.Node != "n2" || o.WSURL != "ws://"+n2.HTTP+"/v1/rooms/"+room+"/ws" || o.Ring != n2.Ring.Placement().Version() {
			t.Fatalf("Resolve via %s: %+v", base, o)
		}
	}

	// Through the non-owner, the WebSocket ends at the owner.
	c := dial(t, n1.URL(), room, &client.Options{ClientID: "far-client"})
	if w := c.Welcome(); w.Node != "n2" || w.Room != room || w.Client != "far-client" || w.Epoch == "" {
		t.Fatalf("welcome through the non-owner: %+v", w)
	}
	if !n2.Node.HasRoom(room) || n1.Node.HasRoom(room) {
		t.Fatal("the room must live on its owner only")
	}
	if seq := publish(t, c, "", "hi"); seq != 1 {
		t.Fatalf("first publish got seq %d", seq)
	}
	if m := messages(t, c, 1)[0]; m.Seq != 1 || string(m.Data) != `"hi"` || m.Client != "far-client" {
		t.Fatalf("own message %+v", m)
	}
}

func TestBadRoomIsAnHTTPError(t *testing.T) {
	n := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	check := func(what string, err error) {
		t.Helper()
		var he *client.HTTPError
		if !errors.As(err, &he) || he.Status != 400 || he.Code != protocol.CodeBadRoom || he.Message == "" || he.Retryable() {
			t.Fatalf("%s: %v (%#v), want an HTTPError 400 bad_room", what, err, he)
		}
	}
	_, err := client.Resolve(ctx, n.URL(), "bad name", nil)
	check("Resolve", err)
	_, err = client.Dial(ctx, n.URL(), "bad/name", nil)
	check("Dial", err)
	_, err = client.Dial(ctx, n.URL(), strings.Repeat("x", 200), nil)
	check("Dial, long name", err)

	// A bad parameter is refused before the upgrade too.
	_, err = client.Dial(ctx, n.URL(), "ok", &client.Options{ClientID: "bad\x01id"})
	var he *client.HTTPError
	if !errors.As(err, &he) || he.Status != 400 || he.Code != protocol.CodeBadRequest {
		t.Fatalf("bad client id: %v", err)
	}
	// A room URL is not a base address.
	if _, err := client.Dial(ctx, n.URL()+"/v1/rooms/x/ws", "x", nil); err == nil || !strings.Contains(err.Error(), "base address") {
		t.Fatalf("room URL as base: %v", err)
	}
}

func TestPublishInOrder(t *testing.T) {
	n := startNode(t)
	pub := dial(t, n.URL(), "order", &client.Options{ClientID: "pub"})
	sub := dial(t, n.URL(), "order", &client.Options{ClientID: "sub"})

	const seqN = 200
	for i := range seqN {
		if seq := publish(t, pub, "", map[string]int{"i": i}); seq != uint64(i+1) {
			t.Fatalf("publish %d got seq %d", i, seq)
		}
	}
	for i, m := range messages(t, sub, seqN) {
		if m.Seq != uint64(i+1) || m.Client != "pub" || len(m.ID) != 32 || string(m.Data) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	for i, m := range messages(t, pub, seqN) { // the publisher gets its own messages too
		if m.Seq != uint64(i+1) {
			t.Fatalf("publisher's own message %d: seq %d", i, m.Seq)
		}
	}
	if sub.LastSeq() != seqN || sub.Epoch() != sub.Welcome().Epoch {
		t.Fatalf("LastSeq %d Epoch %q", sub.LastSeq(), sub.Epoch())
	}

	// Many goroutines on one Conn: every publish acked once, every message once, in seq order.
	const workers, each = 8, 25
	var acked acks
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if id := fmt.Sprintf("w%d-%d", w, i); !acked.publish(t, pub, id, id, 10*time.Second) {
					return
				}
			}
		})
	}
	got := messages(t, sub, workers*each)
	wg.Wait()
	for i, m := range got {
		if m.Seq != uint64(seqN+i+1) {
			t.Fatalf("concurrent message %d has seq %d", i, m.Seq)
		}
		if acked.of(m.ID) != m.Seq || string(m.Data) != `"`+m.ID+`"` {
			t.Fatalf("message %+v does not match its ack %d", m, acked.of(m.ID))
		}
	}
	if acked.len() != workers*each {
		t.Fatalf("%d acks", acked.len())
	}
}

func TestRepeatedIDAckedWithTheSameSeqDeliveredOnce(t *testing.T) {
	n := startNode(t)
	pub := dial(t, n.URL(), "dup", &client.Options{Discard: true})
	sub := dial(t, n.URL(), "dup", nil)
	first := publish(t, pub, "same", 1)
	again := publish(t, pub, "same", 2)
	if first != 1 || again != 1 {
		t.Fatalf("seqs %d and %d for one id", first, again)
	}
	publish(t, pub, "marker", "end")
	got := messages(t, sub, 2)
	if got[0].ID != "same" || string(got[0].Data) != "1" || got[1].ID != "marker" || got[1].Seq != 2 {
		t.Fatalf("messages %+v", got)
	}
	if pub.LastSeq() != 2 {
		t.Fatalf("a Discard Conn still tracks LastSeq: %d", pub.LastSeq())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pub.PublishID(ctx, strings.Repeat("x", client.MaxIDLen+1), 1); err == nil {
		t.Fatal("an id over MaxIDLen was accepted")
	}
	if _, err := pub.Publish(ctx, func() {}); err == nil {
		t.Fatal("data that is not JSON was accepted")
	}
	if _, err := pub.Publish(ctx, json.RawMessage(`{"broken"`)); err == nil {
		t.Fatal("broken raw JSON was accepted")
	}
	big := strings.Repeat("x", 2<<20)
	if _, err := pub.Publish(ctx, big); !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("oversized publish: %v", err)
	}
	// The Conn survived all of that.
	if seq := publish(t, pub, "", "still here"); seq != 3 {
		t.Fatalf("publish after refusals: seq %d", seq)
	}
}

func TestResume(t *testing.T) {
	n := startNode(t)
	pub := dial(t, n.URL(), "hist", nil)
	for i := 1; i <= 10; i++ {
		publish(t, pub, "", i)
	}
	epoch := pub.Welcome().Epoch

	since := uint64(3)
	c := dial(t, n.URL(), "hist", &client.Options{Since: &since, Epoch: epoch})
	if c.LastSeq() != 3 || c.Epoch() != epoch {
		t.Fatalf("before any event: LastSeq %d Epoch %q", c.LastSeq(), c.Epoch())
	}
	for i, m := range messages(t, c, 7) {
		if m.Seq != uint64(4+i) || string(m.Data) != fmt.Sprint(4+i) {
			t.Fatalf("resumed message %d: %+v", i, m)
		}
	}
	if c.LastSeq() != 10 {
		t.Fatalf("LastSeq %d", c.LastSeq())
	}
	// Live messages follow the history.
	publish(t, pub, "", 11)
	if m := messages(t, c, 1)[0]; m.Seq != 11 {
		t.Fatalf("live after history: %+v", m)
	}

	// An epoch the room does not have: a reset, then everything retained.
	since = 5
	r := dial(t, n.URL(), "hist", &client.Options{Since: &since, Epoch: "gone"})
	if r.Epoch() != "gone" || r.LastSeq() != 5 {
		t.Fatalf("before the reset: %q %d", r.Epoch(), r.LastSeq())
	}
	if ev := next(t, r); ev.Type != client.EventReset || ev.Epoch != epoch || ev.Seq != 11 {
		t.Fatalf("want a reset first, got %+v", ev)
	}
	if r.Epoch() != epoch || r.LastSeq() != 0 {
		t.Fatalf("after the reset: %q %d", r.Epoch(), r.LastSeq())
	}
	if ms := messages(t, r, 11); ms[0].Seq != 1 || ms[10].Seq != 11 {
		t.Fatalf("after reset: %+v", ms)
	}

	// Live only: nothing from before.
	l := dial(t, n.URL(), "hist", nil)
	if l.LastSeq() != 11 {
		t.Fatalf("live-only LastSeq %d", l.LastSeq())
	}
	publish(t, pub, "", 12)
	if m := messages(t, l, 1)[0]; m.Seq != 12 {
		t.Fatalf("live-only client got %+v", m)
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	n := startNode(t)
	a := dial(t, n.URL(), "bin", nil)
	b := dial(t, n.URL(), "bin", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	publish(t, a, "", "text first")
	if err := a.PublishBinary(ctx, []byte{0, 1, 2, 0xff}); err != nil {
		t.Fatal(err)
	}
	publish(t, a, "", "text after")
	got := messages(t, b, 3)
	if got[0].Type != client.EventMessage || got[1].Type != client.EventBinary || got[2].Type != client.EventMessage {
		t.Fatalf("types %s %s %s", got[0].Type, got[1].Type, got[2].Type)
	}
	if got[1].Seq != 2 || !slices.Equal(got[1].Payload, []byte{0, 1, 2, 0xff}) || got[2].Seq != 3 {
		t.Fatalf("binary %+v then %+v", got[1], got[2])
	}
}

func TestPresence(t *testing.T) {
	n := startNode(t)
	w := dial(t, n.URL(), "p", &client.Options{ClientID: "watcher", Presence: true})
	if ev := next(t, w); ev.Type != client.EventPresence || ev.Presence != protocol.PresenceState || ev.Count != 1 || !slices.Equal(ev.Clients, []string{"watcher"}) {
		t.Fatalf("state %+v", ev)
	}
	a := dial(t, n.URL(), "p", &client.Options{ClientID: "alice"})
	if ev := next(t, w); ev.Type != client.EventPresence || ev.Presence != protocol.PresenceJoin || ev.Client != "alice" || ev.Count != 2 {
		t.Fatalf("join %+v", ev)
	}
	a.Close()
	if ev := next(t, w); ev.Presence != protocol.PresenceLeave || ev.Client != "alice" || ev.Count != 1 {
		t.Fatalf("leave %+v", ev)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	n := startNode(t)
	ignore := goleak.IgnoreCurrent()
	c := dial(t, n.URL(), "bye", &client.Options{PingInterval: 10 * time.Millisecond})
	publish(t, c, "", "x")
	time.Sleep(50 * time.Millisecond) // let the pinger run
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c.Close() // idempotent
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if ev := next(t, c); ev.Seq != 1 { // what was received is still there
		t.Fatalf("buffered event %+v", ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := c.Next(ctx); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	if _, err := c.Publish(ctx, 1); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if err := c.PublishBinary(ctx, []byte{1}); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("PublishBinary after Close: %v", err)
	}
	// The server saw a clean close and let the connection go.
	wait.Eventually(t, 5*time.Second, "the node dropped the connection", func() bool {
		for _, s := range n.Node.Rooms() {
			if s.Name == "bye" {
				return s.Conns == 0
			}
		}
		return true
	})
	goleak.VerifyNone(t, ignore)
}

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
