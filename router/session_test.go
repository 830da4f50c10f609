package router

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/protocol"
)

// These tests put a router on real sockets between a real client and scripted owners, where the
// router's choices at a re-dial depend on exactly what the old owner answered and how its leg
// ended, which a real node cannot be made to do on cue. The real-node counterpart is
// TestPublishesSurviveADrain.

// startRouter runs a router on r's placement and dials a client through it.
func startRouter(t *testing.T, cfg Config, r *fakeRing) *websocket.Conn {
	t.Helper()
	rt, err := New(cfg, r)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rt.Handler())
	t.Cleanup(func() { rt.Close(); srv.Close() })
	c, _, err := websocket.DefaultDialer.Dial("ws://"+srv.Listener.Addr().String()+"/v1/rooms/r/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if f := readFrame(t, c); f.Type != protocol.TypeWelcome {
		t.Fatalf("first frame %+v", f)
	}
	return c
}

func readFrame(t *testing.T, c *websocket.Conn) protocol.Incoming {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f protocol.Incoming
	if err := c.ReadJSON(&f); err != nil {
		t.Fatalf("reading the client leg: %v", err)
	}
	return f
}

var (
	withID = []byte(`{"type":"publish","id":"a1","data":1}`)
	noID   = []byte(`{"type":"publish","data":2}`)
	binPub = []byte{1, 2, 3}
)

// publishAll sends one publish with an id, one without and a binary one, and waits until owner
// leg l has them all, unanswered.
func publishAll(t *testing.T, c *websocket.Conn, l *ownerLeg) {
	t.Helper()
	for _, f := range []upFrame{{websocket.TextMessage, withID}, {websocket.TextMessage, noID}, {websocket.BinaryMessage, binPub}} {
		if err := c.WriteMessage(f.mt, f.data); err != nil {
			t.Fatal(err)
		}
		if got := l.next(t); got.mt != f.mt || !bytes.Equal(got.data, f.data) {
			t.Fatalf("the owner got %d %q, want the client's frame %d %q as it was sent", got.mt, got.data, f.mt, f.data)
		}
	}
}

// publishedThenMoved starts a router whose room is on owner a, sends it publishAll, then moves
// the room to owner b while a's leg still holds the three publishes unanswered. It returns the
// client's connection, a's leg and b.
func publishedThenMoved(t *testing.T) (*websocket.Conn, *ownerLeg, *fakeOwner) {
	t.Helper()
	a, b := newOwner(t, "a", "e1", 0, false), newOwner(t, "b", "e1", 0, false)
	r := &fakeRing{}
	r.place(a, b)
	c := startRouter(t, DefaultConfig(), r)
	la := a.leg(t)
	publishAll(t, c, la)
	r.place(b, a)
	return c, la, b
}

// A leg the owner closed (4001) leaves nothing in doubt: what it did not answer, it did not
// take. All three publishes go to the new owner as the client sent them (the id-less one with
// no id of the router's), and its acks reach the client once each.
func TestMovedLegResendsEveryUnansweredPublish(t *testing.T) {
	c, la, b := publishedThenMoved(t)
	la.write.Lock()
	_ = la.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseMoved, `{"node":"b","epoch":"e1","seq":0}`), time.Now().Add(time.Second))
	la.write.Unlock()
	lb := b.leg(t)
	for _, want := range [][]byte{withID, noID, binPub} {
		if got := lb.next(t); !bytes.Equal(got.data, want) {
			t.Fatalf("the new owner got %q, want %q", got.data, want)
		}
	}
	lb.quiet(t)
	lb.send(t, protocol.Ack{Type: protocol.TypeAck, ID: "a1", Seq: 1})
	lb.send(t, protocol.Ack{Type: protocol.TypeAck, Seq: 2})
	lb.send(t, protocol.Ack{Type: protocol.TypeAck, Seq: 3})
	for seq := uint64(1); seq <= 3; seq++ {
		if f := readFrame(t, c); f.Type != protocol.TypeAck || f.Seq != seq {
			t.Fatalf("frame %d: %+v, want the ack of seq %d", seq, f, seq)
		}
	}
}

// A leg that broke leaves unknown what the owner took. The publish with an id is re-sent (the
// room acks a repeated id once); the binary and the id-less ones are not, as that could deliver
// them twice: the client is told of each, in order, with `owner_unavailable`.
func TestBrokenLegResendsOnlyWhatHasAnID(t *testing.T) {
	c, la, b := publishedThenMoved(t)
	la.cut()
	lb := b.leg(t)
	if got := lb.next(t); !bytes.Equal(got.data, withID) {
		t.Fatalf("the new owner got %q, want %q", got.data, withID)
	}
	lb.quiet(t)
	for range 2 {
		if f := readFrame(t, c); f.Type != protocol.TypeError || f.Code != protocol.CodeUnavailable || f.ID != "" {
			t.Fatalf("the client got %+v, want an error %s without an id", f, protocol.CodeUnavailable)
		}
	}
	lb.send(t, protocol.Ack{Type: protocol.TypeAck, ID: "a1", Seq: 1})
	if f := readFrame(t, c); f.Type != protocol.TypeAck || f.ID != "a1" {
		t.Fatalf("the client got %+v, want the ack of a1", f)
	}
}

// A publish the room may have forgotten the id of (DedupeIDs messages or more since it was
// sent) is not re-sent blindly after a broken leg: the client is told, with its id. One the
// room still remembers is re-sent.
func TestStalePublishIsNotResent(t *testing.T) {
	cfg := DefaultConfig()
	a, b := newOwner(t, "a", "e1", 0, false), newOwner(t, "b", "e1", uint64(cfg.DedupeIDs), false)
	r := &fakeRing{}
	r.place(a, b)
	c := startRouter(t, cfg, r)
	la := a.leg(t)
	if err := c.WriteMessage(websocket.TextMessage, withID); err != nil {
		t.Fatal(err)
	}
	la.next(t)
	r.place(b, a)
	la.cut()
	lb := b.leg(t)
	if f := readFrame(t, c); f.Type != protocol.TypeError || f.Code != protocol.CodeUnavailable || f.ID != "a1" {
		t.Fatalf("the client got %+v, want an error %s for a1", f, protocol.CodeUnavailable)
	}
	lb.quiet(t)

	// The same with a room one message short of forgetting: re-sent.
	c2 := newOwner(t, "c", "e1", uint64(cfg.DedupeIDs)-1, false)
	r2 := &fakeRing{}
	a2 := newOwner(t, "a", "e1", 0, false)
	r2.place(a2, c2)
	cl := startRouter(t, cfg, r2)
	la2 := a2.leg(t)
	if err := cl.WriteMessage(websocket.TextMessage, withID); err != nil {
		t.Fatal(err)
	}
	la2.next(t)
	r2.place(c2, a2)
	la2.cut()
	if got := c2.leg(t).next(t); !bytes.Equal(got.data, withID) {
		t.Fatalf("the new owner got %q, want %q", got.data, withID)
	}
}

// A write to the owner that fails (here: an owner that stopped reading, so the write times out)
// ends the owner leg; the publish, kept, reaches the next owner and its ack the client.
func TestUpstreamWriteErrorRedials(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Edge = false // the per-client proxy's own re-dial (a leg's is TestEdge…)
	cfg.WriteTimeout = 2 * time.Second
	cfg.MaxFrame, cfg.PendingBytes = 64<<20, 128<<20
	a, b := newOwner(t, "a", "e1", 0, true), newOwner(t, "b", "e1", 0, false)
	r := &fakeRing{}
	r.place(a, b)
	c := startRouter(t, cfg, r)
	a.leg(t)
	r.place(b, a) // where a re-dial goes; the leg to a stays up as long as the router keeps it
	big, _ := json.Marshal(protocol.Publish{Type: protocol.TypePublish, ID: "big", Data: json.RawMessage(`"` + strings.Repeat("x", 24<<20) + `"`)})
	if err := c.WriteMessage(websocket.TextMessage, big); err != nil {
		t.Fatal(err)
	}
	lb := b.leg(t)
	if got := lb.next(t); !bytes.Equal(got.data, big) {
		t.Fatalf("the new owner got %d bytes, want the publish of %d", len(got.data), len(big))
	}
	lb.send(t, protocol.Ack{Type: protocol.TypeAck, ID: "big", Seq: 1})
	if f := readFrame(t, c); f.Type != protocol.TypeAck || f.ID != "big" {
		t.Fatalf("the client got %+v, want the ack of big", f)
	}
}
