package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/protocol"
)

// fakeServer speaks the room protocol by script, for what a real node will not do on demand:
// break the network, refuse, close with a given code. script runs once per connection, with the
// connection's number (from 0) and its query.
type fakeServer struct {
	*httptest.Server
	refuse  atomic.Bool // answer 503 to everything
	mu      sync.Mutex
	conns   int
	queries []url.Values
}

func startFake(t *testing.T, script func(t *testing.T, n int, ws *websocket.Conn, q url.Values)) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	up := websocket.Upgrader{}
	var handlers sync.WaitGroup
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/rooms/") || !strings.HasSuffix(r.URL.Path, "/ws") {
			protocol.WriteError(w, http.StatusNotFound, protocol.CodeNotFound, "no such endpoint")
			return
		}
		if f.refuse.Load() {
			protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady, "not ready")
			return
		}
		f.mu.Lock()
		n := f.conns
		f.conns++
		f.queries = append(f.queries, r.URL.Query())
		f.mu.Unlock()
		handlers.Add(1)
		defer handlers.Done()
		if r.Header.Get("Upgrade") == "" {
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		script(t, n, ws, r.URL.Query())
	}))
	t.Cleanup(func() {
		f.Close()
		handlers.Wait()
	})
	return f
}

func (f *fakeServer) connections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

func (f *fakeServer) query(n int) url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n >= len(f.queries) {
		return nil
	}
	return f.queries[n]
}

func send(t *testing.T, ws *websocket.Conn, v any) {
	t.Helper()
	if err := ws.WriteJSON(v); err != nil {
		t.Errorf("fake server write: %v", err)
	}
}

func welcome(epoch string, seq uint64) protocol.Welcome {
	return protocol.Welcome{Type: protocol.TypeWelcome, Room: "r", Node: "fake", Client: "c-fake", Epoch: epoch, Seq: seq, Count: 1}
}

func message(seq uint64, id string) protocol.Message {
	return protocol.Message{Type: protocol.TypeMessage, Seq: seq, Client: "other", ID: id, Data: json.RawMessage(`1`)}
}

// readPublish reads frames until a publish and returns it.
func readPublish(t *testing.T, ws *websocket.Conn) protocol.Publish {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var p protocol.Publish
	if err := ws.ReadJSON(&p); err != nil {
		t.Errorf("fake server: no publish: %v", err)
	}
	return p
}

// waitGone waits for the client to go (its close, or the test's end closing the connection).
func waitGone(ws *websocket.Conn) {
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return
		}
	}
}

func TestReconnectAfterTheNetworkBreaks(t *testing.T) {
	f := startFake(t, func(t *testing.T, n int, ws *websocket.Conn, q url.Values) {
		switch n {
		case 0:
			send(t, ws, welcome("e1", 5))
			send(t, ws, message(6, "a"))
			_ = ws.NetConn().Close() // no close frame: 1006 at the client
		default:
			send(t, ws, welcome("e1", 7))
			send(t, ws, message(6, "a")) // a duplicate the client must drop
			send(t, ws, message(7, "b"))
			waitGone(ws)
		}
	})
	c := dial(t, f.URL, "r", &client.Options{Presence: true})
	if ev := next(t, c); ev.Seq != 6 || ev.ID != "a" {
		t.Fatalf("first %+v", ev)
	}
	ev := next(t, c)
	var ce *client.CloseError
	if ev.Type != client.EventReconnected || ev.Welcome.Seq != 7 || !errors.As(ev.Err, &ce) || ce.Code != websocket.CloseAbnormalClosure {
		t.Fatalf("want reconnected after 1006, got %+v (%v)", ev, ev.Err)
	}
	if ev := next(t, c); ev.Seq != 7 || ev.ID != "b" {
		t.Fatalf("after the reconnect %+v", ev)
	}
	q := f.query(1)
	if q.Get("since") != "6" || q.Get("epoch") != "e1" || q.Get("client") != "c-fake" || q.Get("presence") != "1" {
		t.Fatalf("reconnect query %v", q)
	}
	if q := f.query(0); q.Has("since") || q.Has("epoch") || q.Has("client") {
		t.Fatalf("first query %v", q)
	}
}

func TestPendingPublishIsResentAfterReconnect(t *testing.T) {
	f := startFake(t, func(t *testing.T, n int, ws *websocket.Conn, q url.Values) {
		send(t, ws, welcome("e1", 0))
		p := readPublish(t, ws)
		switch n {
		case 0: // refuse as a moving room does, then close with 4001 and no ack
			send(t, ws, protocol.ErrorFrame{Type: protocol.TypeError, Code: protocol.CodeMoved, ID: p.ID, Error: "moving"})
			reason, _ := json.Marshal(protocol.MovedReason{Node: "fake2", Epoch: "e1", Seq: 0})
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseMoved, string(reason)), time.Now().Add(time.Second))
			waitGone(ws)
		default:
			if p.ID != "keep-me" || string(p.Data) != `{"x":1}` {
				t.Errorf("re-sent publish %+v", p)
			}
			send(t, ws, protocol.Ack{Type: protocol.TypeAck, ID: p.ID, Seq: 1})
			waitGone(ws)
		}
	})
	c := dial(t, f.URL, "r", &client.Options{Discard: true})
	if seq := publish(t, c, "keep-me", map[string]int{"x": 1}); seq != 1 {
		t.Fatalf("seq %d", seq)
	}
	if q := f.query(1); q.Get("since") != "0" || q.Get("epoch") != "e1" {
		t.Fatalf("reconnect query %v", q)
	}
}

func TestRefusedPublishIsAServerError(t *testing.T) {
	f := startFake(t, func(t *testing.T, n int, ws *websocket.Conn, q url.Values) {
		send(t, ws, welcome("e1", 0))
		p := readPublish(t, ws)
		send(t, ws, protocol.ErrorFrame{Type: protocol.TypeError, Code: protocol.CodeForbidden, ID: p.ID, Error: "read-only token"})
		send(t, ws, protocol.ErrorFrame{Type: protocol.TypeError, Code: protocol.CodeBadJSON, Error: "not for a publish"})
		waitGone(ws)
	})
	c := dial(t, f.URL, "r", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Publish(ctx, 1)
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != protocol.CodeForbidden || se.Message != "read-only token" || se.ID == "" {
		t.Fatalf("Publish: %v", err)
	}
	ev := next(t, c)
	if ev.Type != client.EventError || !errors.As(ev.Err, &se) || se.Code != protocol.CodeBadJSON {
		t.Fatalf("error event %+v", ev)
	}
}

func TestFinalClosesAreNotRetried(t *testing.T) {
	for _, code := range []int{protocol.CloseUnauthorized, protocol.CloseForbidden, protocol.CloseSlowConsumer, protocol.CloseTooBig} {
		f := startFake(t, func(t *testing.T, n int, ws *websocket.Conn, q url.Values) {
			send(t, ws, welcome("e1", 0))
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, "because"), time.Now().Add(time.Second))
			waitGone(ws)
		})
		c := dial(t, f.URL, "r", nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Next(ctx)
		var ce *client.CloseError
		if !errors.As(err, &ce) || ce.Code != code || ce.Reason != "because" {
			t.Fatalf("close %d: Next gave %v", code, err)
		}
		if _, err := c.Publish(ctx, 1); !errors.As(err, &ce) {
			t.Fatalf("close %d: Publish gave %v", code, err)
		}
		cancel()
		if n := f.connections(); n != 1 {
			t.Fatalf("close %d: %d connections, want no reconnect", code, n)
		}
		c.Close()
	}
}

func TestCloseRightAfterTheUpgrade(t *testing.T) {
	f := startFake(t, func(t *testing.T, n int, ws *websocket.Conn, q url.Values) {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseUnauthorized, "bad token"), time.Now().Add(time.Second))
		waitGone(ws)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, f.URL, "r", &client.Options{Token: "t0k"})
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Code != protocol.CloseUnauthorized || ce.Reason != "bad token" {
		t.Fatalf("Dial: %v", err)
	}
}

func TestMovedWithoutReconnect(t *testing.T) {
	f := startFake(t, func(t *testing.T, n int, ws *websocket.Conn, q url.Values) {
		send(t, ws, welcome("e1", 3))
		reason, _ := json.Marshal(protocol.MovedReason{Node: "n9", Epoch: "e1", Seq: 3})
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseMoved, string(reason)), time.Now().Add(time.Second))
		waitGone(ws)
	})
	c := dial(t, f.URL, "r", &client.Options{DisableReconnect: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Next(ctx)
	var ce *client.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("Next: %v", err)
	}
	if m, ok := ce.Moved(); !ok || m.Node != "n9" || m.Epoch != "e1" || m.Seq != 3 {
		t.Fatalf("moved reason %+v", m)
	}
	if c.LastSeq() != 3 || c.Epoch() != "e1" {
		t.Fatalf("resume point %d %q", c.LastSeq(), c.Epoch())
	}
}

func TestReconnectGivesUp(t *testing.T) {
	var f *fakeServer
	f = startFake(t, func(t *testing.T, n int, ws *websocket.Conn, q url.Values) {
		send(t, ws, welcome("e1", 0))
		f.refuse.Store(true) // from now on the server answers 503 to everything
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseGoingAway, "bye"), time.Now().Add(time.Second))
		waitGone(ws)
	})
	c := dial(t, f.URL, "r", &client.Options{MaxReconnectWait: 300 * time.Millisecond, MaxReconnectDelay: 50 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Next(ctx)
	var he *client.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "gave up") {
		t.Fatalf("Next: %v", err)
	}
}

func TestRedirectLoopIsBounded(t *testing.T) {
	var hops int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hops++
		mu.Unlock()
		http.Redirect(w, r, r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Dial starts over while the loop may be a ring converging, within HandshakeTimeout.
	start := time.Now()
	if _, err := client.Dial(ctx, srv.URL, "r", &client.Options{HandshakeTimeout: 300 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "redirects") {
		t.Fatalf("Dial: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Dial took %s with a 300ms handshake timeout", took)
	}
	mu.Lock()
	hops = 0
	mu.Unlock()
	if _, err := client.Resolve(ctx, srv.URL, "r", nil); err == nil || !strings.Contains(err.Error(), "redirects") {
		t.Fatalf("Resolve: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if hops != 6 {
		t.Fatalf("%d requests, want 6 for Resolve", hops)
	}
}

func TestCloseDuringReconnect(t *testing.T) {
	f := startFake(t, func(t *testing.T, n int, ws *websocket.Conn, q url.Values) {
		if n > 0 {
			waitGone(ws) // upgrade, then never send the welcome: the dial hangs
			return
		}
		send(t, ws, welcome("e1", 0))
		_ = ws.NetConn().Close()
	})
	c := dial(t, f.URL, "r", &client.Options{HandshakeTimeout: time.Minute})
	wait.Eventually(t, 5*time.Second, "a second connection", func() bool { return f.connections() > 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := c.Publish(ctx, 1); !errors.Is(err, client.ErrClosed) {
			t.Errorf("Publish during Close: %v", err)
		}
	}()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	c.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %s while a dial hung", d)
	}
	<-done
	if _, err := c.Next(ctx); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Next: %v", err)
	}
}

func TestCloseSendsNormalClosure(t *testing.T) {
	got := make(chan error, 1)
	f := startFake(t, func(t *testing.T, n int, ws *websocket.Conn, q url.Values) {
		send(t, ws, welcome("e1", 0))
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				got <- err
				return
			}
		}
	})
	c := dial(t, f.URL, "r", nil)
	c.Close()
	if err := <-got; !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("the server saw %v, want a 1000 close", err)
	}
}

func TestUnreadableFramesAreSkipped(t *testing.T) {
	f := startFake(t, func(t *testing.T, n int, ws *websocket.Conn, q url.Values) {
		send(t, ws, welcome("e1", 0))
		_ = ws.WriteMessage(websocket.TextMessage, []byte("{not json"))
		_ = ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2})
		send(t, ws, map[string]any{"type": "from-the-future"})
		send(t, ws, message(1, "ok"))
		waitGone(ws)
	})
	c := dial(t, f.URL, "r", nil)
	for range 2 {
		ev := next(t, c)
		var se *client.ServerError
		if ev.Type != client.EventError || !errors.As(ev.Err, &se) || se.Code != client.CodeBadFrame {
			t.Fatalf("want a bad_frame error event, got %+v", ev)
		}
	}
	if ev := next(t, c); ev.Type != client.EventMessage || ev.ID != "ok" {
		t.Fatalf("after the bad frames: %+v", ev)
	}
}

func TestAlternatesAreTriedInOrder(t *testing.T) {
	f := startFake(t, func(t *testing.T, n int, ws *websocket.Conn, q url.Values) {
		send(t, ws, welcome("e1", 0))
		waitGone(ws)
	})
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // nothing listens there any more
	c := dial(t, deadURL, "r", &client.Options{Alternates: []string{f.URL}})
	if c.Welcome().Node != "fake" {
		t.Fatalf("welcome %+v", c.Welcome())
	}
}
