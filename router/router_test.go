package router_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/internal/testcluster"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/node"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/router"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixture is one real node and a router joined to it, on loopback.
type fixture struct {
	node     *node.Node
	nodeAddr string
	nodeStop func() // closes the node at once (its clients get 1001)
	rt       *router.Router
	addr     string
}

// start runs one real node and a router with cfg joined to it, on loopback.
func start(t *testing.T, cfg router.Config) *fixture {
	t.Helper()
	c := testcluster.New(t, testcluster.Config{Nodes: 1, Routers: 1, Router: func(rc *router.Config) {
		cfg.Logger = rc.Logger
		*rc = cfg
	}})
	n, rt := c.Member("n1"), c.Member("r1")
	return &fixture{node: n.Node, nodeAddr: n.HTTP, nodeStop: func() { c.Stop(n) }, rt: rt.Router, addr: rt.HTTP}
}

func (f *fixture) dial(t *testing.T, room string) (*websocket.Conn, protocol.Welcome) {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+f.addr+"/v1/rooms/"+room+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var w protocol.Welcome
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := c.ReadJSON(&w); err != nil || w.Type != protocol.TypeWelcome {
		t.Fatalf("welcome: %v %+v", err, w)
	}
	return c, w
}

func readUntil(t *testing.T, c *websocket.Conn, typ string) protocol.Incoming {
	t.Helper()
	for {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var f protocol.Incoming
		if err := c.ReadJSON(&f); err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		if f.Type == typ {
			return f
		}
	}
}

func TestResolveRedirectsAndErrors(t *testing.T) {
	f := start(t, router.DefaultConfig())
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get("http://" + f.addr + "/v1/rooms/lobby")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 307 || resp.Header.Get("Location") != "http://"+f.nodeAddr+"/v1/rooms/lobby" {
		t.Fatalf("resolve: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = http.Get("http://" + f.addr + "/v1/rooms/a%20b")
	var e protocol.Error
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != 400 || e.Code != protocol.CodeBadRoom {
		t.Fatalf("bad name: %d %+v", resp.StatusCode, e)
	}
	// The owner's refusal of an upgrade reaches the client as the owner's own answer.
	_, resp, err = websocket.DefaultDialer.Dial("ws://"+f.addr+"/v1/rooms/lobby/ws?since=x", nil)
	if err == nil || resp == nil || resp.StatusCode != 400 {
		t.Fatalf("bad since through the router: %v %v", err, resp)
	}
}

func TestProxyFramesBothWays(t *testing.T) {
	f := start(t, router.DefaultConfig())
	a, wa := f.dial(t, "p")
	b, _ := f.dial(t, "p")
	if wa.Node != "n1" || wa.Room != "p" {
		t.Fatalf("welcome %+v", wa)
	}
	if err := a.WriteJSON(map[string]any{"type": "publish", "id": "x", "data": map[string]int{"a": 1}}); err != nil {
		t.Fatal(err)
	}
	if ack := readUntil(t, a, protocol.TypeAck); ack.ID != "x" || ack.Seq != 1 {
		t.Fatalf("ack %+v", ack)
	}
	if m := readUntil(t, b, protocol.TypeMessage); m.ID != "x" || string(m.Data) != `{"a":1}` {
		t.Fatalf("message %+v", m)
	}
	big := []byte(strings.Repeat("z", 200<<10))
	if err := b.WriteMessage(websocket.BinaryMessage, big); err != nil {
		t.Fatal(err)
	}
	for {
		_ = a.SetReadDeadline(time.Now().Add(5 * time.Second))
		mt, p, err := a.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if mt == websocket.BinaryMessage {
			seq, payload, _ := protocol.ParseBinary(p)
			if seq != 2 || string(payload) != string(big) {
				t.Fatalf("binary frame: seq %d, %d bytes", seq, len(payload))
			}
			break
		}
	}
}

// With no other node to take the room over, the router's re-dial gives up and the client gets
// the owner's 1001.
func TestOwnerCloseReachesClient(t *testing.T) {
	cfg := router.DefaultConfig()
	cfg.RedialTimeout = 300 * time.Millisecond
	f := start(t, cfg)
	c, _ := f.dial(t, "bye")
	f.nodeStop() // the node closes its clients with 1001
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
				t.Fatalf("client saw %v, want the owner's 1001", err)
			}
			break
		}
	}
	wait.Eventually(t, 5*time.Second, "session gone", func() bool { return f.rt.Sessions() == 0 })
}

func TestClientCloseAndDropEndTheSession(t *testing.T) {
	f := start(t, router.DefaultConfig())
	c, _ := f.dial(t, "c")
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye"), time.Now().Add(time.Second))
	wait.Eventually(t, 5*time.Second, "session ended after the client's close", func() bool { return f.rt.Sessions() == 0 })

	// A client that vanishes without a close frame.
	raw, _ := f.dial(t, "c")
	wait.Eventually(t, 5*time.Second, "session up", func() bool { return f.rt.Sessions() == 1 })
	raw.UnderlyingConn().Close()
	wait.Eventually(t, 5*time.Second, "session ended after the client vanished", func() bool { return f.rt.Sessions() == 0 })
	wait.Eventually(t, 5*time.Second, "the owner's room is empty again", func() bool {
		for _, s := range f.node.Rooms() {
			if s.Name == "c" && s.Conns != 0 {
				return false
			}
		}
		return true
	})
}

func TestOversizedClientFrame(t *testing.T) {
	cfg := router.DefaultConfig()
	cfg.MaxFrame = 1024
	f := start(t, cfg)
	c, _ := f.dial(t, "big")
	_ = c.WriteMessage(websocket.TextMessage, []byte(strings.Repeat("x", 4096)))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
				t.Fatalf("got %v, want 1009", err)
			}
			break
		}
	}
	wait.Eventually(t, 5*time.Second, "session gone", func() bool { return f.rt.Sessions() == 0 })
}

func TestOwnerUnreachable(t *testing.T) {
	f := start(t, router.DefaultConfig())
	f.nodeStop() // the node's listener is gone, but the router's ring still lists it for a moment
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+f.addr+"/v1/rooms/gone/ws", nil)
	if err == nil || resp == nil || (resp.StatusCode != 502 && resp.StatusCode != 503) {
		t.Fatalf("dial with the owner gone: %v %v", err, resp)
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("error is not JSON: %q", resp.Header.Get("Content-Type"))
	}
}

// TestPublishesSurviveADrain: a client behind the router publishes without pause — with ids,
// without, and binary — while the room's owner drains (its legs close with 4001). Every
// publish is answered once, with an ack, and delivered once to a subscriber behind the router:
// the router re-sends what the old owner left unanswered, which it did not take.
func TestPublishesSurviveADrain(t *testing.T) {
	c := testcluster.New(t, testcluster.Config{Nodes: 2, Routers: 1, Node: func(nc *node.Config) {
		nc.PublishRate, nc.PublishBurst = 1e6, 1e6
	}})
	rt := c.Member("r1")
	const room = "drained"
	o, ok := rt.Ring.Placement().Owner(room)
	if !ok {
		t.Fatal("no owner")
	}
	dial := func() *websocket.Conn {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+rt.HTTP+"/v1/rooms/"+room+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		return ws
	}
	sub, pub := dial(), dial()

	const n = 3000 // paced at one a millisecond: the drain happens while they flow
	inFlight := make(chan struct{}, 16)
	halfway := make(chan struct{})
	var wg sync.WaitGroup
	var sendErr error
	wg.Add(1)
	go func() { // the publisher: at most 16 publishes unanswered at once
		defer wg.Done()
		for i := range n {
			select {
			case inFlight <- struct{}{}:
			case <-time.After(20 * time.Second):
				sendErr = fmt.Errorf("publish %d: no answers for 20 s", i)
				return
			}
			var err error
			switch i % 3 {
			case 0:
				err = pub.WriteJSON(map[string]any{"type": "publish", "id": fmt.Sprint("p", i), "data": i})
			case 1:
				err = pub.WriteJSON(map[string]any{"type": "publish", "data": i})
			case 2:
				err = pub.WriteMessage(websocket.BinaryMessage, binary.BigEndian.AppendUint64(nil, uint64(i)))
			}
			if err != nil {
				sendErr = err
				return
			}
			if i == n/3 {
				close(halfway)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	answers := make(chan error, 1)
	wg.Add(1)
	go func() { // the publisher's reader: each publish answered once, with an ack
		defer wg.Done()
		acked, idless := map[string]bool{}, 0
		for len(acked)+idless < n {
			_ = pub.SetReadDeadline(time.Now().Add(20 * time.Second))
			mt, b, err := pub.ReadMessage()
			if err != nil {
				answers <- fmt.Errorf("after %d acks with ids and %d without: %w", len(acked), idless, err)
				return
			}
			if mt != websocket.TextMessage {
				continue
			}
			var f protocol.Incoming
			_ = json.Unmarshal(b, &f)
			switch f.Type {
			case protocol.TypeAck:
			case protocol.TypeError:
				answers <- fmt.Errorf("publish %q refused: %s", f.ID, b)
				return
			default:
				continue
			}
			<-inFlight
			if f.ID == "" {
				idless++
			} else if acked[f.ID] {
				answers <- fmt.Errorf("publish %s acked twice", f.ID)
				return
			} else {
				acked[f.ID] = true
			}
		}
		if idless != 2*n/3 {
			answers <- fmt.Errorf("%d acks without an id, want %d", idless, 2*n/3)
			return
		}
		answers <- nil
	}()

	<-halfway
	c.Drain(c.Member(o.ID))

	got := make([]int, n)
	for delivered := 0; delivered < n; {
		_ = sub.SetReadDeadline(time.Now().Add(20 * time.Second))
		mt, b, err := sub.ReadMessage()
		if err != nil {
			t.Fatalf("subscriber after %d messages: %v", delivered, err)
		}
		i := -1
		if mt == websocket.BinaryMessage {
			_, payload, _ := protocol.ParseBinary(b)
			i = int(binary.BigEndian.Uint64(payload))
		} else {
			var f protocol.Incoming
			if json.Unmarshal(b, &f) != nil || f.Type != protocol.TypeMessage || json.Unmarshal(f.Data, &i) != nil {
				continue
			}
		}
		if i < 0 || i >= n || got[i] > 0 {
			t.Fatalf("message %d delivered twice (or unknown)", i)
		}
		got[i]++
		delivered++
	}
	if err := <-answers; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if sendErr != nil {
		t.Fatal(sendErr)
	}
}
