package router

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/node"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type fixture struct {
	node     *node.Node
	nodeAddr string
	nodeStop func()
	rt       *Router
	addr     string
}

// start runs one real node and a router joined to it, on loopback.
func start(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{}
	nln, _ := net.Listen("tcp", "127.0.0.1:0")
	rc := ring.DefaultConfig()
	rc.ID, rc.Gossip, rc.HTTP, rc.TCP, rc.Logger = "n1", "127.0.0.1:0", nln.Addr().String(), "127.0.0.1:1", quiet
	nr, err := ring.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	ncfg := node.DefaultConfig()
	ncfg.Logger = quiet
	f.node, _ = node.New(ncfg, nr)
	nsrv := &http.Server{Handler: f.node.Handler()}
	go nsrv.Serve(nln)
	f.nodeAddr = nln.Addr().String()
	var once bool
	f.nodeStop = func() {
		if !once {
			once = true
			f.node.Close()
			nsrv.Close()
			nr.Close()
		}
	}

	rln, _ := net.Listen("tcp", "127.0.0.1:0")
	rrc := ring.DefaultConfig()
	rrc.ID, rrc.Role, rrc.Gossip, rrc.HTTP, rrc.Join, rrc.Logger = "r1", ring.RoleRouter, "127.0.0.1:0", rln.Addr().String(), []string{nr.GossipAddr()}, quiet
	rr, err := ring.New(rrc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = quiet
	f.rt, err = New(cfg, rr)
	if err != nil {
		t.Fatal(err)
	}
	rsrv := &http.Server{Handler: f.rt.Handler()}
	go rsrv.Serve(rln)
	f.addr = rln.Addr().String()
	t.Cleanup(func() {
		f.rt.Close()
		rsrv.Close()
		rr.Close()
		f.nodeStop()
	})
	eventually(t, 10*time.Second, "router sees the node", func() bool { return rr.Ready() })
	return f
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
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
	f := start(t, DefaultConfig())
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
	f := start(t, DefaultConfig())
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
	cfg := DefaultConfig()
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
	eventually(t, 5*time.Second, "session gone", func() bool { return f.rt.Sessions() == 0 })
}

func TestClientCloseAndDropEndTheSession(t *testing.T) {
	f := start(t, DefaultConfig())
	c, _ := f.dial(t, "c")
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye"), time.Now().Add(time.Second))
	eventually(t, 5*time.Second, "session ended after the client's close", func() bool { return f.rt.Sessions() == 0 })

	// A client that vanishes without a close frame.
	raw, _ := f.dial(t, "c")
	eventually(t, 5*time.Second, "session up", func() bool { return f.rt.Sessions() == 1 })
	raw.UnderlyingConn().Close()
	eventually(t, 5*time.Second, "session ended after the client vanished", func() bool { return f.rt.Sessions() == 0 })
	eventually(t, 5*time.Second, "the owner's room is empty again", func() bool {
		for _, s := range f.node.Rooms() {
			if s.Name == "c" && s.Conns != 0 {
				return false
			}
		}
		return true
	})
}

func TestOversizedClientFrame(t *testing.T) {
	cfg := DefaultConfig()
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
	eventually(t, 5*time.Second, "session gone", func() bool { return f.rt.Sessions() == 0 })
}

func TestOwnerUnreachable(t *testing.T) {
	f := start(t, DefaultConfig())
	f.nodeStop() // the node's listener is gone, but the router's ring still lists it for a moment
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+f.addr+"/v1/rooms/gone/ws", nil)
	if err == nil || resp == nil || (resp.StatusCode != 502 && resp.StatusCode != 503) {
		t.Fatalf("dial with the owner gone: %v %v", err, resp)
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("error is not JSON: %q", resp.Header.Get("Content-Type"))
	}
}
