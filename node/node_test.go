package node

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type testNode struct {
	*Node
	ring *ring.Ring
	addr string // host:port of the HTTP listener
	srv  *http.Server
}

// startNode runs a real node (gossip on loopback, HTTP on a free port) and tears it down with the test.
func startNode(t testing.TB, id string, cfg Config, join ...string) *testNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc := ring.DefaultConfig()
	rc.ID, rc.Gossip, rc.HTTP, rc.TCP, rc.Join, rc.Logger = id, "127.0.0.1:0", ln.Addr().String(), "127.0.0.1:1", join, quiet
	r, err := ring.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	n, err := New(cfg, r)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: n.Handler()}
	go srv.Serve(ln)
	t.Cleanup(func() {
		n.Close()
		srv.Close()
		r.Close()
	})
	wait.Eventually(t, 5*time.Second, "node ready", r.Ready)
	return &testNode{Node: n, ring: r, addr: ln.Addr().String(), srv: srv}
}

// client is a raw WebSocket client that records what it reads.
type client struct {
	t    *testing.T
	ws   *websocket.Conn
	mu   sync.Mutex
	msgs []protocol.Incoming // every text frame but the welcome
	bins [][]byte
	err  error
	done chan struct{}
	wel  protocol.Welcome
}

func dial(t *testing.T, addr, room string, q url.Values) *client {
	t.Helper()
	c, err := tryDial(addr, room, q, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.t = t
	t.Cleanup(func() { c.ws.Close(); <-c.done })
	return c
}

func tryDial(addr, room string, q url.Values, d *websocket.Dialer) (*client, error) {
	if d == nil {
		d = &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	}
	u := "ws://" + addr + "/v1/rooms/" + room + "/ws"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	ws, resp, err := d.Dial(u, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (status %d)", u, err, resp.StatusCode)
		}
		return nil, err
	}
	c := &client{ws: ws, done: make(chan struct{})}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.ReadJSON(&c.wel); err != nil || c.wel.Type != protocol.TypeWelcome {
		ws.Close()
		return nil, fmt.Errorf("no welcome: %v %+v", err, c.wel)
	}
	_ = ws.SetReadDeadline(time.Time{})
	go c.read()
	return c, nil
}

func (c *client) read() {
	defer close(c.done)
	for {
		mt, b, err := c.ws.ReadMessage()
		c.mu.Lock()
		if err != nil {
			c.err = err
			c.mu.Unlock()
			return
		}
		if mt == websocket.BinaryMessage {
			c.bins = append(c.bins, b)
		} else {
			var f protocol.Incoming
			if json.Unmarshal(b, &f) != nil {
				c.err = fmt.Errorf("server sent non-JSON text: %q", b)
			}
			c.msgs = append(c.msgs, f)
		}
		c.mu.Unlock()
	}
}

func (c *client) send(v any) {
	c.t.Helper()
	if err := c.ws.WriteJSON(v); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) publish(id string, data any) {
	c.t.Helper()
	b, _ := json.Marshal(data)
	c.send(protocol.Publish{Type: protocol.TypePublish, ID: id, Data: b})
}

// frames returns the text frames of one type received so far.
func (c *client) frames(typ string) []protocol.Incoming {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []protocol.Incoming
	for _, f := range c.msgs {
		if f.Type == typ {
			out = append(out, f)
		}
	}
	return out
}

func (c *client) waitFrames(typ string, n int) []protocol.Incoming {
	c.t.Helper()
	wait.Eventually(c.t, 5*time.Second, fmt.Sprintf("%d %q frames", n, typ), func() bool { return len(c.frames(typ)) >= n })
	return c.frames(typ)
}

// before publishes a marker from pub and returns the messages c got before it. A room delivers
// in seq order, so every message sequenced before the marker (a stray duplicate too) is there:
// no sleep and hope.
func (c *client) before(pub *client, marker string) []protocol.Incoming {
	c.t.Helper()
	pub.publish(marker, "marker")
	var got []protocol.Incoming
	wait.Eventually(c.t, 5*time.Second, "the marker "+marker, func() bool {
		got = c.frames(protocol.TypeMessage)
		i := slices.IndexFunc(got, func(f protocol.Incoming) bool { return f.ID == marker })
		got = got[:max(i, 0)]
		return i >= 0
	})
	return got
}

func (c *client) closeErr() error {
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.t.Fatal("connection did not close")
	}
	return c.err
}

func TestPublishAckAndFanout(t *testing.T) {
	n := startNode(t, "n1", DefaultConfig())
	a := dial(t, n.addr, "lobby", nil)
	b := dial(t, n.addr, "lobby", url.Values{"client": {"bob"}})
	if a.wel.Room != "lobby" || a.wel.Node != "n1" || a.wel.Client == "" || a.wel.Epoch == "" || a.wel.Seq != 0 || a.wel.Count != 1 {
		t.Fatalf("welcome %+v", a.wel)
	}
	if b.wel.Client != "bob" || b.wel.Count != 2 {
		t.Fatalf("second welcome %+v", b.wel)
	}
	for i := range 50 {
		a.publish(fmt.Sprintf("p%d", i), map[string]int{"i": i})
	}
	acks := a.waitFrames(protocol.TypeAck, 50)
	for _, c := range []*client{a, b} {
		msgs := c.waitFrames(protocol.TypeMessage, 50)
		for i, m := range msgs {
			if m.Seq != uint64(i+1) || m.ID != fmt.Sprintf("p%d", i) || m.Client != a.wel.Client || string(m.Data) != fmt.Sprintf(`{"i":%d}`, i) {
				t.Fatalf("message %d: %+v", i, m)
			}
		}
	}
	for i, ack := range acks {
		if ack.Seq != uint64(i+1) || ack.ID != fmt.Sprintf("p%d", i) {
			t.Fatalf("ack %d: %+v", i, ack)
		}
	}
	// Binary in, binary out with the seq in front.
	if err := b.ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 5*time.Second, "binary frame", func() bool { a.mu.Lock(); defer a.mu.Unlock(); return len(a.bins) == 1 })
	seq, payload, err := protocol.ParseBinary(a.bins[0])
	if err != nil || seq != 51 || string(payload) != "\x01\x02\x03" {
		t.Fatalf("binary frame: seq %d payload %v err %v", seq, payload, err)
	}
}

func TestBadFramesKeepTheConnection(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxFrame = 1024
	n := startNode(t, "n1", cfg)
	c := dial(t, n.addr, "r", nil)
	_ = c.ws.WriteMessage(websocket.TextMessage, []byte("{not json"))
	c.send(map[string]any{"type": "frobnicate"})
	c.send(map[string]any{"type": "publish", "id": "nodata"})
	c.publish("ok", "still here")
	errs := c.waitFrames(protocol.TypeError, 3)
	if errs[0].Code != protocol.CodeBadJSON || errs[1].Code != protocol.CodeUnknownType || errs[2].Code != protocol.CodeBadRequest || errs[0].Error == "" {
		t.Fatalf("error frames %+v", errs)
	}
	if acks := c.waitFrames(protocol.TypeAck, 1); acks[0].ID != "ok" {
		t.Fatalf("ack %+v", acks[0])
	}
	// Too big: closed with 1009.
	_ = c.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"publish","data":"`+strings.Repeat("x", 2000)+`"}`))
	if err := c.closeErr(); !websocket.IsCloseError(err, protocol.CloseTooBig) {
		t.Fatalf("oversized frame: %v, want close 1009", err)
	}
}

func TestResumeGapAndReset(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HistoryCount = 5
	n := startNode(t, "n1", cfg)
	p := dial(t, n.addr, "hist", nil)
	for i := 1; i <= 10; i++ {
		p.publish(fmt.Sprint(i), i)
	}
	p.waitFrames(protocol.TypeAck, 10)
	epoch := p.wel.Epoch

	// since=7 in the same epoch: 8, 9, 10 and nothing else.
	c := dial(t, n.addr, "hist", url.Values{"since": {"7"}, "epoch": {epoch}})
	msgs := c.waitFrames(protocol.TypeMessage, 3)
	if c.wel.Seq != 10 || msgs[0].Seq != 8 || msgs[2].Seq != 10 || len(c.frames(protocol.TypeGap)) != 0 {
		t.Fatalf("resume since 7: welcome %+v, %+v", c.wel, c.msgs)
	}
	// since=2: 3..5 are gone (history keeps 6..10).
	g := dial(t, n.addr, "hist", url.Values{"since": {"2"}, "epoch": {epoch}})
	msgs = g.waitFrames(protocol.TypeMessage, 5)
	gap := g.frames(protocol.TypeGap)
	if len(gap) != 1 || gap[0].From != 3 || gap[0].To != 5 || msgs[0].Seq != 6 || msgs[4].Seq != 10 {
		t.Fatalf("resume since 2: gap %+v msgs %+v", gap, msgs)
	}
	if g.msgs[0].Type != protocol.TypeGap {
		t.Fatalf("gap must come before the history: %+v", g.msgs)
	}
	// An epoch the room does not have: reset, then what is retained.
	r := dial(t, n.addr, "hist", url.Values{"since": {"4"}, "epoch": {"gone"}})
	reset := r.waitFrames(protocol.TypeReset, 1)
	if reset[0].Epoch != epoch || reset[0].Seq != 10 {
		t.Fatalf("reset %+v", reset[0])
	}
	if msgs := r.waitFrames(protocol.TypeMessage, 5); msgs[0].Seq != 6 {
		t.Fatalf("after reset: %+v", msgs)
	}
	// Live messages follow the history with no hole and no duplicate.
	p.publish("11", 11)
	if msgs := c.waitFrames(protocol.TypeMessage, 4); msgs[3].Seq != 11 {
		t.Fatalf("live after resume: %+v", msgs)
	}
	// No since: live only.
	l := dial(t, n.addr, "hist", nil)
	p.publish("12", 12)
	if msgs := l.waitFrames(protocol.TypeMessage, 1); msgs[0].Seq != 12 || len(l.frames(protocol.TypeMessage)) != 1 {
		t.Fatalf("live-only client got %+v", l.msgs)
	}
}

func TestRepeatedIDIsAckedOnceDeliveredOnce(t *testing.T) {
	n := startNode(t, "n1", DefaultConfig())
	a := dial(t, n.addr, "dup", nil)
	b := dial(t, n.addr, "dup", nil)
	a.publish("same", 1)
	a.publish("same", 2)
	acks := a.waitFrames(protocol.TypeAck, 2)
	b.publish("same", 3) // ids are per room: any client's retry is the same publish
	b.publish("other", 4)
	if backs := b.waitFrames(protocol.TypeAck, 2); backs[0].Seq != 1 || backs[1].Seq != 2 {
		t.Fatalf("acks to the second client %+v", backs)
	}
	if acks[0].Seq != 1 || acks[1].Seq != 1 {
		t.Fatalf("acks %+v", acks)
	}
	msgs := b.before(a, "marker")
	if len(msgs) != 2 || msgs[0].ID != "same" || string(msgs[0].Data) != "1" || msgs[1].ID != "other" || msgs[1].Seq != 2 {
		t.Fatalf("messages %+v", msgs)
	}
}

// In a busy room the room's window of ids (--dedupe-ids) turns over faster than a reconnect;
// the publisher's own window keeps its recent ids, so its retry after a reconnect is acked once
// with its first seq and delivered once (issue 22, finding 9).
func TestRetryAfterAReconnectInABusyRoomIsAckedOnce(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DedupeIDs = 10
	n := startNode(t, "n1", cfg)
	quiet := dial(t, n.addr, "busy", url.Values{"client": {"quiet"}})
	quiet.publish("mine", 1)
	first := quiet.waitFrames(protocol.TypeAck, 1)[0].Seq
	quiet.ws.Close()
	busy := dial(t, n.addr, "busy", url.Values{"client": {"busy"}})
	for i := range 50 {
		busy.publish(fmt.Sprint("b", i), i)
	}
	busy.waitFrames(protocol.TypeAck, 50)
	watcher := dial(t, n.addr, "busy", nil) // live messages only, from here on
	again := dial(t, n.addr, "busy", url.Values{"client": {"quiet"}})
	again.publish("mine", 1)
	if ack := again.waitFrames(protocol.TypeAck, 1)[0]; ack.Seq != first {
		t.Fatalf("the retry was acked as seq %d, want its first seq %d", ack.Seq, first)
	}
	if msgs := watcher.before(again, "marker"); len(msgs) != 0 {
		t.Fatalf("the retry was delivered again: %+v", msgs)
	}
}

// dialNonReader connects a WebSocket client with a tiny receive buffer that never reads.
func dialNonReader(t *testing.T, addr, room string) {
	t.Helper()
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}}
	ws, _, err := d.Dial("ws://"+addr+"/v1/rooms/"+room+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
}

func TestSlowConsumerIsDroppedOthersUnaffected(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SendQueue = 16
	cfg.WriteTimeout = time.Second
	cfg.PublishRate, cfg.PublishBurst = 1e6, 1e6 // the publisher floods on purpose
	n := startNode(t, "n1", cfg)
	fast := dial(t, n.addr, "slow", nil)
	dialNonReader(t, n.addr, "slow")
	pub := dial(t, n.addr, "slow", nil)
	payload := strings.Repeat("x", 16<<10)
	const total = 400
	for i := range total {
		pub.publish(fmt.Sprint(i), payload)
		if i%4 == 3 { // pace on acks, as a real publisher would, so only the one that never reads falls behind
			pub.waitFrames(protocol.TypeAck, i+1)
		}
	}
	msgs := fast.waitFrames(protocol.TypeMessage, total)
	for i, m := range msgs {
		if m.Seq != uint64(i+1) {
			t.Fatalf("fast subscriber: message %d has seq %d", i, m.Seq)
		}
	}
	wait.Eventually(t, 5*time.Second, "slow consumer removed from the room", func() bool {
		for _, s := range n.Rooms() {
			if s.Name == "slow" {
				return s.Conns == 2
			}
		}
		return false
	})
	if got := testutil.ToFloat64(n.metrics.drops.WithLabelValues("slow_consumer")); got != 1 {
		t.Fatalf("slow_consumer drops = %v, want 1", got)
	}
	// Its handler and writer are gone (goleak checks the rest at exit). The 4008 close frame is
	// best effort: it queues behind whatever already fills the slow socket.
	wait.Eventually(t, 5*time.Second, "slow connection's handler ended", func() bool { return n.conns.Load() == 2 })
}

func TestNonOwnerRedirectsAndNeverHoldsTheRoom(t *testing.T) {
	a := startNode(t, "n1", DefaultConfig())
	b := startNode(t, "n2", DefaultConfig(), a.ring.GossipAddr())
	wait.Eventually(t, 5*time.Second, "both nodes in both rings", func() bool {
		return len(a.ring.Placement().Nodes()) == 2 && len(b.ring.Placement().Nodes()) == 2 &&
			a.ring.Placement().Version() == b.ring.Placement().Version()
	})
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for i := range 40 {
		room := fmt.Sprintf("room-%d", i)
		owner, _ := a.ring.Placement().Owner(room)
		other, own := a, b
		if owner.ID == "n1" {
			other, own = b, a
		}
		resp, err := noFollow.Get("http://" + other.addr + "/v1/rooms/" + room + "?x=1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 307 || resp.Header.Get("Location") != "http://"+own.addr+"/v1/rooms/"+room+"?x=1" {
			t.Fatalf("%s on non-owner: %d %q", room, resp.StatusCode, resp.Header.Get("Location"))
		}
		// The WebSocket path redirects before upgrading, to the owner's ws URL.
		_, wresp, err := websocket.DefaultDialer.Dial("ws://"+other.addr+"/v1/rooms/"+room+"/ws?since=0", nil)
		if err == nil || wresp == nil || wresp.StatusCode != 307 || wresp.Header.Get("Location") != "ws://"+own.addr+"/v1/rooms/"+room+"/ws?since=0" {
			t.Fatalf("%s ws on non-owner: %v %v", room, err, wresp)
		}
		var o protocol.Owner
		resp, err = http.Get("http://" + own.addr + "/v1/rooms/" + room)
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&o)
		resp.Body.Close()
		if o.Node != own.id || o.WSURL != "ws://"+own.addr+"/v1/rooms/"+room+"/ws" || o.TCPAddr == "" || o.Ring != a.ring.Placement().Version() {
			t.Fatalf("owner answer %+v", o)
		}
		if other.HasRoom(room) {
			t.Fatalf("non-owner holds %s", room)
		}
	}
	resp, err := http.Get("http://" + a.addr + "/v1/rooms/bad%20name")
	if err != nil {
		t.Fatal(err)
	}
	var e protocol.Error
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != 400 || e.Code != protocol.CodeBadRoom || e.Error == "" {
		t.Fatalf("bad room: %d %+v", resp.StatusCode, e)
	}
}

func TestPresence(t *testing.T) {
	n := startNode(t, "n1", DefaultConfig())
	w := dial(t, n.addr, "p", url.Values{"presence": {"1"}, "client": {"watcher"}})
	state := w.waitFrames(protocol.TypePresence, 1)[0]
	if state.Event != protocol.PresenceState || state.Count != 1 || len(state.Clients) != 1 || state.Clients[0] != "watcher" {
		t.Fatalf("state %+v", state)
	}
	quietC := dial(t, n.addr, "p", url.Values{"client": {"alice"}})
	second := dial(t, n.addr, "p", url.Values{"client": {"alice"}}) // same member, second connection
	ev := w.waitFrames(protocol.TypePresence, 2)
	if ev[1].Event != protocol.PresenceJoin || ev[1].Client != "alice" || ev[1].Count != 2 {
		t.Fatalf("join %+v", ev[1])
	}
	second.ws.Close()
	<-second.done
	quietC.ws.Close()
	<-quietC.done
	ev = w.waitFrames(protocol.TypePresence, 3)
	if len(ev) != 3 || ev[2].Event != protocol.PresenceLeave || ev[2].Client != "alice" || ev[2].Count != 1 {
		t.Fatalf("presence after leaving: %+v", ev)
	}
	if len(quietC.frames(protocol.TypePresence)) != 0 {
		t.Fatal("a client without presence=1 got presence frames")
	}
}

func TestPresenceIntervalInLargeRooms(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PresenceAnnounceMax = 2
	cfg.PresenceInterval = 50 * time.Millisecond
	n := startNode(t, "n1", cfg)
	w := dial(t, n.addr, "big", url.Values{"presence": {"1"}, "client": {"w"}})
	for i := range 5 {
		dial(t, n.addr, "big", url.Values{"client": {fmt.Sprint("c", i)}})
	}
	wait.Eventually(t, 5*time.Second, "an interval frame", func() bool {
		for _, f := range w.frames(protocol.TypePresence) {
			if f.Event == protocol.PresenceInterval && f.Count == 6 {
				return true
			}
		}
		return false
	})
	for _, f := range w.frames(protocol.TypePresence) {
		if len(f.Joined) > 2 || len(f.Clients) > 2 {
			t.Fatalf("presence list over the announce limit: %+v", f)
		}
	}
}

func TestIdleRoomReclaimed(t *testing.T) {
	cfg := DefaultConfig()
	cfg.RoomIdle = 100 * time.Millisecond
	n := startNode(t, "n1", cfg)
	c := dial(t, n.addr, "idle", nil)
	c.ws.Close()
	<-c.done
	wait.Eventually(t, 5*time.Second, "idle room reclaimed", func() bool { return !n.HasRoom("idle") })
}

func TestCloseSendsGoingAway(t *testing.T) {
	n := startNode(t, "n1", DefaultConfig())
	c := dial(t, n.addr, "bye", nil)
	n.Close()
	if err := c.closeErr(); !websocket.IsCloseError(err, protocol.CloseGoingAway) {
		t.Fatalf("after Close: %v, want 1001", err)
	}
}

// TestPause: a node that wakes from a pause longer than StaleAfter acks no write until it has
// decided, by asking its peers, whether its rooms may be served elsewhere. The pause is
// simulated by moving the watchdog's last tick into the past; the publish is sent at once, when a
// write could slip through.
func TestPause(t *testing.T) {
	cfg := DefaultConfig()
	cfg.StaleAfter = 100 * time.Millisecond // the watchdog ticks every 10 ms
	cfg.Quarantine = time.Millisecond
	clocks := map[*testNode]*jumpClock{}
	start := func(t *testing.T, id string, join ...string) *testNode {
		c := &jumpClock{start: time.Now()}
		cfg := cfg
		cfg.clock = c.now
		n := startNode(t, id, cfg, join...)
		clocks[n] = c
		return n
	}
	pair := func(t *testing.T) (*testNode, *testNode, string) {
		a := start(t, "n1")
		b := start(t, "n2", a.ring.GossipAddr())
		wait.Eventually(t, 5*time.Second, "both nodes in both rings", func() bool {
			return len(a.ring.Placement().Nodes()) == 2 && a.ring.Placement().Version() == b.ring.Placement().Version()
		})
		for i := 0; ; i++ {
			room := fmt.Sprint("paused-", i)
			if o, _ := a.ring.Placement().Owner(room); o.ID == "n1" {
				return a, b, room
			}
		}
	}
	pause := func(n *testNode) { clocks[n].ahead.Add(int64(time.Second)) }
	// refused publishes once more and expects no ack for it: the room closes with 4001.
	refused := func(t *testing.T, c *client) {
		t.Helper()
		c.publish("stale", "x")
		if err := c.closeErr(); !websocket.IsCloseError(err, protocol.CloseMoved) {
			t.Fatalf("closed with %v, want %d", err, protocol.CloseMoved)
		}
		if acks := c.frames(protocol.TypeAck); len(acks) != 1 {
			t.Fatalf("the paused node acked %+v", acks)
		}
	}
	pauses := func(n *testNode, outcome string) float64 {
		return testutil.ToFloat64(n.metrics.pauses.WithLabelValues(outcome))
	}

	t.Run("a peer took over: the rooms go, the write is not acked", func(t *testing.T) {
		a, b, room := pair(t)
		c := dial(t, a.addr, room, nil)
		c.publish("before", "x")
		c.waitFrames(protocol.TypeAck, 1)
		b.watchdog.NoteTakeover([]string{"n1"}) // as if n2 had started the room while n1 was silent
		pause(a)
		refused(t, c)
		if a.HasRoom(room) || pauses(a, "dropped") != 1 {
			t.Fatalf("room still held: %v; pauses dropped: %v", a.HasRoom(room), pauses(a, "dropped"))
		}
	})

	t.Run("no peer took over: the rooms stay, the write waits and goes on", func(t *testing.T) {
		a, _, room := pair(t)
		c := dial(t, a.addr, room, nil)
		c.publish("before", "x")
		c.waitFrames(protocol.TypeAck, 1)
		pause(a)
		c.publish("after", "x")
		acks := c.waitFrames(protocol.TypeAck, 2)
		if acks[1].ID != "after" || acks[1].Seq != 2 {
			t.Fatalf("acks %+v, want the second for seq 2", acks)
		}
		if pauses(a, "kept") != 1 || pauses(a, "dropped") != 0 {
			t.Fatalf("pauses kept %v, dropped %v; want 1, 0", pauses(a, "kept"), pauses(a, "dropped"))
		}
	})

	t.Run("alone in the ring: nobody could take over", func(t *testing.T) {
		n := start(t, "n1")
		c := dial(t, n.addr, "alone", nil)
		c.publish("before", "x")
		c.waitFrames(protocol.TypeAck, 1)
		pause(n)
		c.publish("after", "x")
		if acks := c.waitFrames(protocol.TypeAck, 2); acks[1].Seq != 2 {
			t.Fatalf("acks %+v", acks)
		}
		if pauses(n, "kept") != 1 {
			t.Fatalf("pauses kept %v, want 1", pauses(n, "kept"))
		}
	})

	t.Run("a peer cannot be asked: the rooms go", func(t *testing.T) {
		a, b, room := pair(t)
		c := dial(t, a.addr, room, nil)
		c.publish("before", "x")
		c.waitFrames(protocol.TypeAck, 1)
		b.srv.Close() // n2 still gossips, so n1 sees it alive, but answers no call
		pause(a)
		refused(t, c)
	})
}

// jumpClock is a monotonic clock a test moves ahead, as a pause does.
type jumpClock struct {
	start time.Time
	ahead atomic.Int64
}

func (c *jumpClock) now() time.Duration { return time.Since(c.start) + time.Duration(c.ahead.Load()) }

// A publish held past --handoff-hold is refused as moved, and the connection is closed with 4001
// although the room then thaws in place: its client reconnects and publishes again, instead of
// waiting for a close that never comes.
func TestMovedRefusalClosesTheConnection(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HandoffHold = 100 * time.Millisecond
	n := startNode(t, "n1", cfg)
	c := dial(t, n.addr, "held", nil)
	c.publish("a", 1)
	c.waitFrames(protocol.TypeAck, 1)
	r := n.rooms.Get("held")
	if r == nil || !r.Freeze() {
		t.Fatal("could not freeze the room")
	}
	c.publish("b", 2)
	if err := c.closeErr(); !websocket.IsCloseError(err, protocol.CloseMoved) {
		t.Fatalf("closed with %v, want %d", err, protocol.CloseMoved)
	}
	if errs := c.frames(protocol.TypeError); len(errs) != 1 || errs[0].Code != protocol.CodeMoved || errs[0].ID != "b" {
		t.Fatalf("error frames %+v, want one moved for b", errs)
	}
	r.Unfreeze() // the hand-off did not happen: the room thaws here
	again := dial(t, n.addr, "held", nil)
	again.publish("b", 2)
	if acks := again.waitFrames(protocol.TypeAck, 1); acks[0].ID != "b" || acks[0].Seq != 2 {
		t.Fatalf("the publish again: %+v", acks)
	}
}

// A room at --max-room-conns refuses the next client before upgrading, with 429 limit_reached
// like every other limit, and takes one again when a member leaves.
func TestFullRoomIsRefusedBeforeUpgrading(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxRoomConns = 2
	n := startNode(t, "n1", cfg)
	dial(t, n.addr, "full", nil)
	second := dial(t, n.addr, "full", nil)
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+n.addr+"/v1/rooms/full/ws", nil)
	if err == nil {
		ws.Close()
		t.Fatal("a third client joined a room of at most 2")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a third client: %v, response %+v; want 429 before the upgrade", err, resp)
	}
	var body protocol.Error
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Code != protocol.CodeLimit {
		t.Fatalf("the refusal's body: %+v (%v), want code %s", body, err, protocol.CodeLimit)
	}
	if got := testutil.ToFloat64(n.metrics.refused.WithLabelValues("room_full")); got != 1 {
		t.Fatalf("room_full refusals counted: %v, want 1", got)
	}
	second.ws.Close()
	<-second.done
	wait.Eventually(t, 5*time.Second, "a place in the room after a member left", func() bool {
		c, err := tryDial(n.addr, "full", nil, nil)
		if err != nil {
			return false
		}
		c.ws.Close()
		<-c.done
		return true
	})
}
