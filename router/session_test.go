package router

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/internal/httpapi"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// These tests put a router on real sockets between a real client and scripted owners, where the
// router's choices at a re-dial depend on exactly what the old owner answered and how its leg
// ended, which a real node cannot be made to do on cue. The real-node counterpart is
// TestPublishesSurviveADrain.

// fakeRing is the membership of scripted owners: a placement the test swaps.
type fakeRing struct {
	p atomic.Pointer[ring.Placement]
}

func (f *fakeRing) ID() string                                         { return "r1" }
func (f *fakeRing) Placement() *ring.Placement                         { return f.p.Load() }
func (f *fakeRing) Ready() bool                                        { return true }
func (f *fakeRing) UpdateMeta(context.Context, func(*ring.Meta)) error { return nil }
func (f *fakeRing) Subscribe() (<-chan *ring.Placement, func())        { return nil, func() {} }
func (f *fakeRing) place(owner *fakeOwner, others ...*fakeOwner) {
	f.p.Store(placement(owner, others...))
}
func placement(owner *fakeOwner, others ...*fakeOwner) *ring.Placement { // owner placed, others known
	ms := []ring.Member{owner.member(true)}
	for _, o := range others {
		ms = append(ms, o.member(false))
	}
	return ring.NewPlacement(ms, ring.DefaultPlacementConfig())
}

var _ Ring = (*fakeRing)(nil)
var _ httpapi.Ring = (*fakeRing)(nil)

// fakeOwner is a scripted room owner: it welcomes each leg with its epoch and seq and hands the
// leg to the test, which reads what the router sends and answers, closes or cuts it.
type fakeOwner struct {
	name, epoch string
	seq         uint64
	noRead      bool // never read a leg: the router's writes to it block
	srv         *httptest.Server
	legs        chan *ownerLeg
	done        chan struct{}
}

type ownerLeg struct {
	ws     *websocket.Conn
	frames chan upFrame // what the router sent, until the leg ends
	write  sync.Mutex
}

type upFrame struct {
	mt   int
	data []byte
}

func newOwner(t *testing.T, name, epoch string, seq uint64, noRead bool) *fakeOwner {
	o := &fakeOwner{name: name, epoch: epoch, seq: seq, noRead: noRead, legs: make(chan *ownerLeg, 8), done: make(chan struct{})}
	var wg sync.WaitGroup
	up := websocket.Upgrader{}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		leg := &ownerLeg{ws: ws, frames: make(chan upFrame, 64)}
		_ = ws.WriteJSON(protocol.Welcome{Type: protocol.TypeWelcome, Room: "r", Node: name, Client: "c1", Epoch: epoch, Seq: seq, Count: 1})
		o.legs <- leg
		wg.Add(1)
		go func() { // owned by the owner: ends when the leg does, or at cleanup
			defer wg.Done()
			defer close(leg.frames)
			if noRead {
				<-o.done
				return
			}
			for {
				mt, b, err := ws.ReadMessage()
				if err != nil {
					return
				}
				leg.frames <- upFrame{mt, b}
			}
		}()
	}))
	t.Cleanup(func() {
		close(o.done)
		for {
			select {
			case leg := <-o.legs:
				leg.ws.Close()
				continue
			default:
			}
			break
		}
		o.srv.CloseClientConnections()
		o.srv.Close()
		wg.Wait()
	})
	return o
}

func (o *fakeOwner) member(placed bool) ring.Member {
	return ring.Member{ID: o.name, State: ring.StateAlive,
		Meta: ring.Meta{Role: ring.RoleNode, HTTP: o.srv.Listener.Addr().String(), Draining: !placed}}
}

func (o *fakeOwner) leg(t *testing.T) *ownerLeg {
	t.Helper()
	select {
	case l := <-o.legs:
		t.Cleanup(func() { l.ws.Close() })
		return l
	case <-time.After(5 * time.Second):
		t.Fatalf("no leg reached owner %s", o.name)
		return nil
	}
}

// next is the next frame the router sent on the leg.
func (l *ownerLeg) next(t *testing.T) upFrame {
	t.Helper()
	select {
	case f, ok := <-l.frames:
		if !ok {
			t.Fatal("the leg ended")
		}
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("nothing sent on the leg")
		return upFrame{}
	}
}

// quiet checks that the router sends nothing more on the leg for a moment.
func (l *ownerLeg) quiet(t *testing.T) {
	t.Helper()
	select {
	case f, ok := <-l.frames:
		if ok {
			t.Fatalf("the router sent %q, want nothing", f.data)
		}
	case <-time.After(200 * time.Millisecond):
	}
}

func (l *ownerLeg) send(t *testing.T, v any) {
	t.Helper()
	l.write.Lock()
	defer l.write.Unlock()
	if err := l.ws.WriteJSON(v); err != nil {
		t.Fatal(err)
	}
}

// cut ends the leg with no close frame, as a crash or a lost machine does.
func (l *ownerLeg) cut() { _ = l.ws.NetConn().Close() }

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

// A leg the owner closed (4001) leaves nothing in doubt: what it did not answer, it did not
// take. All three publishes go to the new owner as the client sent them (the id-less one with
// no id of the router's), and its acks reach the client once each.
func TestMovedLegResendsEveryUnansweredPublish(t *testing.T) {
	a, b := newOwner(t, "a", "e1", 0, false), newOwner(t, "b", "e1", 0, false)
	r := &fakeRing{}
	r.place(a, b)
	c := startRouter(t, DefaultConfig(), r)
	la := a.leg(t)
	publishAll(t, c, la)

	r.place(b, a)
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
	a, b := newOwner(t, "a", "e1", 0, false), newOwner(t, "b", "e1", 0, false)
	r := &fakeRing{}
	r.place(a, b)
	c := startRouter(t, DefaultConfig(), r)
	la := a.leg(t)
	publishAll(t, c, la)

	r.place(b, a)
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
