package router_test

import (
	"encoding/json"
	"net/http"
	"strings"
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
