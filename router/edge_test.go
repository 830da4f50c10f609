package router_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/router"
)

// awaitEdge waits until the router knows its node serves edge legs (gossiped just after the node
// joins: a client before that is proxied on a connection of its own).
func awaitEdge(t *testing.T, f *fixture) {
	t.Helper()
	wait.Eventually(t, 5*time.Second, "the router to use edge legs", func() bool {
		c, _ := f.dial(t, "edge-probe")
		defer c.Close()
		return f.rt.Legs() == 1
	})
	wait.Eventually(t, 5*time.Second, "the probe's leg to end", func() bool { return f.rt.Legs() == 0 })
}

// Clients of one room behind a router share one edge leg to the owner, and each still sees its
// own welcome and its own acks.
func TestEdgeClientsShareOneLeg(t *testing.T) {
	f := start(t, router.DefaultConfig())
	awaitEdge(t, f)
	const n = 5
	conns := make([]*websocket.Conn, n)
	ids := map[string]bool{}
	for i := range conns {
		c, w := f.dial(t, "shared")
		if w.Node != "n1" || w.Room != "shared" || w.Client == "" || ids[w.Client] {
			t.Fatalf("welcome %d: %+v", i, w)
		}
		ids[w.Client] = true
		conns[i] = c
	}
	if got := f.rt.Legs(); got != 1 {
		t.Fatalf("router holds %d legs for one room, want 1", got)
	}
	if got := f.node.Edges(); got != 1 {
		t.Fatalf("owner serves %d legs, want 1", got)
	}
	if got := f.rt.Sessions(); got != n {
		t.Fatalf("router counts %d connections, want %d", got, n)
	}
	for i, c := range conns {
		if err := c.WriteJSON(map[string]any{"type": "publish", "id": fmt.Sprint("p", i), "data": i}); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range conns {
		var last uint64
		acks := 0
		for got := 0; got < n; {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			var m protocol.Incoming
			if err := c.ReadJSON(&m); err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
			switch m.Type {
			case protocol.TypeMessage:
				if m.Seq != last+1 {
					t.Fatalf("client %d: seq %d after %d", i, m.Seq, last)
				}
				last = m.Seq
				got++
			case protocol.TypeAck:
				if m.ID != fmt.Sprint("p", i) {
					t.Fatalf("client %d got the ack of %q", i, m.ID)
				}
				acks++
			}
		}
		if acks == 0 {
			// Its ack may come after the last message it reads: read on for it.
			if a := readUntil(t, c, protocol.TypeAck); a.ID != fmt.Sprint("p", i) {
				t.Fatalf("client %d got the ack of %q", i, a.ID)
			}
		}
	}
	// A client joining with the leg up resumes on its own: its replay reaches it alone.
	c, _, err := websocket.DefaultDialer.Dial("ws://"+f.addr+"/v1/rooms/shared/ws?since=2", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	readUntil(t, c, protocol.TypeWelcome)
	for want := uint64(3); want <= n; want++ {
		if m := readUntil(t, c, protocol.TypeMessage); m.Seq != want {
			t.Fatalf("resume: seq %d, want %d", m.Seq, want)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	c.Close()
	wait.Eventually(t, 5*time.Second, "the leg to end with its last client", func() bool { return f.rt.Legs() == 0 && f.node.Edges() == 0 })
}

// A client that reads nothing is closed with 4008 by the router, alone: the leg and the room's
// other clients carry on.
func TestEdgeSlowClientDroppedAlone(t *testing.T) {
	cfg := router.DefaultConfig()
	cfg.SendQueueBytes = 8 << 20
	cfg.WriteTimeout = time.Minute // the slow client reads its backlog late, slower still under -race
	f := start(t, cfg)
	awaitEdge(t, f)
	slow, _ := f.dial(t, "slow")
	fast, _ := f.dial(t, "slow")
	pub, _ := f.dial(t, "slow")
	// The slow client's socket buffers fill first: keep publishing until the router gives up on it.
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			var m protocol.Incoming
			_ = fast.SetReadDeadline(time.Now().Add(60 * time.Second)) // long: -race slows the 39 MB down
			if err := fast.ReadJSON(&m); err != nil {
				done <- err
				return
			}
			if m.Type == protocol.TypeMessage && m.ID == "last" {
				done <- nil
				return
			}
		}
	}()
	go func() { // pub's own frames are read so it is not slow itself
		for {
			_ = pub.SetReadDeadline(time.Now().Add(60 * time.Second))
			if _, _, err := pub.ReadMessage(); err != nil {
				t.Logf("publisher: %v", err)
				return
			}
		}
	}()
	payload := make([]byte, 128<<10)
	for i := range payload {
		payload[i] = 'x'
	}
	// 39 MB, far past what the slow client's socket buffers and its queue hold, paced within the
	// node's publish rate (burst 200, then 100/s).
	for i := 0; i < 300; i++ {
		if err := pub.WriteJSON(map[string]any{"type": "publish", "data": string(payload)}); err != nil {
			t.Fatal(err)
		}
		if i >= 190 {
			time.Sleep(11 * time.Millisecond)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if err := pub.WriteJSON(map[string]any{"type": "publish", "id": "last", "data": 1}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the fast client stopped receiving: %v", err)
	}
	// The slow one reads its backlog, then the router's 4008.
	for {
		_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := slow.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != protocol.CloseSlowConsumer {
				t.Fatalf("slow client ended with %v, want 4008", err)
			}
			break
		}
	}
	if f.rt.Legs() != 1 {
		t.Fatalf("the leg went with the slow client")
	}
}

// Over one shared leg each client keeps its own semantics: presence frames only for those that
// asked, an error frame for its own bad JSON, 1009 for its own oversized frame, and the others
// untouched by any of it.
func TestEdgePerClientSemantics(t *testing.T) {
	cfg := router.DefaultConfig()
	cfg.MaxFrame = 1 << 10
	f := start(t, cfg)
	awaitEdge(t, f)
	plain, _ := f.dial(t, "own")
	pc, _, err := websocket.DefaultDialer.Dial("ws://"+f.addr+"/v1/rooms/own/ws?presence=1&client=watcher", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	readUntil(t, pc, protocol.TypeWelcome)
	if st := readUntil(t, pc, protocol.TypePresence); st.Event != protocol.PresenceState {
		t.Fatalf("presence client: %+v, want its state first", st)
	}
	other, _, err := websocket.DefaultDialer.Dial("ws://"+f.addr+"/v1/rooms/own/ws?client=late", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if w := readUntil(t, other, protocol.TypeWelcome); w.Client != "late" || w.Count != 3 {
		t.Fatalf("welcome %+v, want client late, count 3", w)
	}
	if j := readUntil(t, pc, protocol.TypePresence); j.Event != protocol.PresenceJoin || j.Client != "late" {
		t.Fatalf("presence client: %+v, want late's join", j)
	}
	// Bad JSON: an error frame to its sender alone.
	if err := plain.WriteMessage(websocket.TextMessage, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if e := readUntil(t, plain, protocol.TypeError); e.Code != protocol.CodeBadJSON {
		t.Fatalf("bad json: %+v", e)
	}
	// An oversized frame closes its sender with 1009, and no one else.
	if err := other.WriteMessage(websocket.TextMessage, make([]byte, 2<<10)); err != nil {
		t.Fatal(err)
	}
	for {
		_ = other.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := other.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
				t.Fatalf("oversized: %v, want 1009", err)
			}
			break
		}
	}
	if l := readUntil(t, pc, protocol.TypePresence); l.Event != protocol.PresenceLeave || l.Client != "late" {
		t.Fatalf("presence client: %+v, want late's leave", l)
	}
	if err := plain.WriteJSON(map[string]any{"type": "publish", "id": "after", "data": 1}); err != nil {
		t.Fatal(err)
	}
	// The plain client sees the message and its ack, and never a presence frame.
	for seen := map[string]bool{}; !seen[protocol.TypeMessage] || !seen[protocol.TypeAck]; {
		_ = plain.SetReadDeadline(time.Now().Add(5 * time.Second))
		var m protocol.Incoming
		if err := plain.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		if m.Type == protocol.TypePresence {
			t.Fatalf("a client without presence=1 got %+v", m)
		}
		seen[m.Type] = true
	}
	if m := readUntil(t, pc, protocol.TypeMessage); m.ID != "after" {
		t.Fatalf("presence client: %+v", m)
	}
	if f.rt.Legs() != 1 {
		t.Fatalf("%d legs", f.rt.Legs())
	}
}
