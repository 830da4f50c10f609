package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/protocol"
)

// edgeSub is one subscriber of the edge test: a bare WebSocket that follows the room's seqs and
// fails on a hole, a duplicate, a gap, a reset or a close it was not told to expect.
type edgeSub struct {
	name    string
	ws      *websocket.Conn
	welcome protocol.Welcome
	mu      sync.Mutex
	last    uint64
	msgs    int
	err     error
	done    chan struct{}
}

func dialEdgeSub(t *testing.T, name, base, room string) *edgeSub {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.DialContext(t.Context(), "ws"+strings.TrimPrefix(base, "http")+"/v1/rooms/"+room+"/ws", nil)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { ws.Close() })
	s := &edgeSub{name: name, ws: ws, done: make(chan struct{})}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.ReadJSON(&s.welcome); err != nil || s.welcome.Type != protocol.TypeWelcome {
		t.Fatalf("%s: welcome: %v %+v", name, err, s.welcome)
	}
	s.last = s.welcome.Seq
	return s
}

// read follows the room until the connection ends (the test closes it at the end).
func (s *edgeSub) read() {
	defer close(s.done)
	for {
		_ = s.ws.SetReadDeadline(time.Now().Add(60 * time.Second))
		_, b, err := s.ws.ReadMessage()
		if err != nil {
			s.fail(fmt.Errorf("connection ended: %w", err))
			return
		}
		var f protocol.Incoming
		if err := json.Unmarshal(b, &f); err != nil {
			s.fail(fmt.Errorf("frame %q: %w", b, err))
			return
		}
		switch f.Type {
		case protocol.TypeMessage:
			s.mu.Lock()
			if f.Seq != s.last+1 {
				s.mu.Unlock()
				s.fail(fmt.Errorf("seq %d after %d: a hole or a duplicate", f.Seq, s.last))
				return
			}
			s.last = f.Seq
			s.msgs++
			s.mu.Unlock()
		case protocol.TypeGap, protocol.TypeReset, protocol.TypeError:
			s.fail(fmt.Errorf("unexpected frame %s", b))
			return
		}
	}
}

func (s *edgeSub) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *edgeSub) state() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.err
}

// TestEdgeOneRoomBehindTwoRouters: 600 clients of one room behind two routers and 10 straight on
// its owner. The owner serves two edge legs, not 600 connections, and every client gets every
// message in order. Then the owner is drained while clients behind the routers publish: the
// routers re-attach their legs at the new owner, and none of their clients sees a close, a hole
// or a duplicate; every publish is acked once.
func TestEdgeOneRoomBehindTwoRouters(t *testing.T) {
	secret := []string{"--cluster-secret", "edge-test-cluster-secret"}
	n1 := startProc(t, "node", "n1", "", secret...)
	n2 := startProc(t, "node", "n2", n1.Gossip, secret...)
	r1 := startProc(t, "router", "r1", n1.Gossip, secret...)
	r2 := startProc(t, "router", "r2", n1.Gossip, secret...)
	proc.WaitRingT(t, []*proc.Proc{n1, n2, r1, r2}, 2)
	var room string
	for r := range roomsByOwner(t, r1, "edge-", 1, "n1") {
		room = r
	}

	const perRouter, direct = 300, 10
	var subs []*edgeSub
	for i := range perRouter {
		subs = append(subs, dialEdgeSub(t, fmt.Sprint("r1-", i), r1.URL(), room), dialEdgeSub(t, fmt.Sprint("r2-", i), r2.URL(), room))
	}
	var directs []*edgeSub
	for i := range direct {
		directs = append(directs, dialEdgeSub(t, fmt.Sprint("n1-", i), n1.URL(), room))
	}
	for _, s := range append(subs, directs...) {
		go s.read()
	}
	// The owner: 2 legs, 610 clients; each router: 1 leg, 300 clients.
	wait.Eventually(t, 10*time.Second, "n1 to serve 2 edge legs carrying 600 clients, and 10 direct", func() bool {
		return gauge(t, n1, "roost_edge_legs") == 2 && gauge(t, n1, "roost_edge_clients") == 2*perRouter &&
			gauge(t, n1, "roost_connections") == 2*perRouter+direct
	})
	for _, r := range []*proc.Proc{r1, r2} {
		if l, c := gauge(t, r, "roost_router_edge_legs"), gauge(t, r, "roost_router_connections"); l != 1 || c != perRouter {
			t.Fatalf("%s: %v legs, %v connections; want 1 and %d", r.ID, l, c, perRouter)
		}
	}
	wait.Eventually(t, 10*time.Second, "/v1/cluster to count n1's 2 edges and 610 conns", func() bool {
		c, err := r1.Cluster()
		if err != nil {
			return false
		}
		for _, m := range c.Members {
			if m.ID == "n1" {
				return m.Edges != nil && *m.Edges == 2 && m.Conns == 2*perRouter+direct
			}
		}
		return false
	})

	// Phase 1: steady traffic from publishers behind both routers and one direct.
	pubs := make([]*client.Conn, 0, 5)
	for i, base := range []string{r1.URL(), r2.URL(), r1.URL(), r2.URL(), n2.URL()} {
		c, err := client.Dial(t.Context(), base, room, &client.Options{Discard: true, ClientID: fmt.Sprint("pub-", i)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		pubs = append(pubs, c)
	}
	var total uint64
	publish := func(phase string, each int, during func()) uint64 {
		t.Helper()
		var wg sync.WaitGroup
		var top atomic.Uint64
		var acked atomic.Int64
		for p, c := range pubs {
			wg.Go(func() {
				for i := range each {
					ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
					seq, err := c.PublishID(ctx, fmt.Sprintf("%s-%d-%d", phase, p, i), i)
					cancel()
					if err != nil {
						t.Errorf("%s: publisher %d: %v", phase, p, err)
						return
					}
					acked.Add(1)
					for old := top.Load(); seq > old && !top.CompareAndSwap(old, seq); old = top.Load() {
					}
					time.Sleep(5 * time.Millisecond)
				}
			})
		}
		if during != nil {
			during()
		}
		wg.Wait()
		if int(acked.Load()) != each*len(pubs) {
			t.Fatalf("%s: %d publishes acked, want %d", phase, acked.Load(), each*len(pubs))
		}
		total += uint64(each * len(pubs))
		if top.Load() != total {
			// Every publish has an id of its own: a room at another seq took one twice, or lost one.
			t.Fatalf("%s: the room is at seq %d after %d publishes", phase, top.Load(), total)
		}
		return top.Load()
	}
	top := publish("steady", 40, nil)
	caughtUp := func(what string, subs []*edgeSub, seq uint64) {
		t.Helper()
		wait.Eventually(t, 20*time.Second, what, func() bool {
			for _, s := range subs {
				if last, err := s.state(); err != nil || last < seq {
					return false
				}
			}
			return true
		})
		for _, s := range subs {
			if _, err := s.state(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		}
	}
	caughtUp("every client to have every message up to the last acked", append(subs, directs...), top)
	t.Logf("steady: %d messages to %d clients in order, through %v legs on n1", top, len(subs)+len(directs), gauge(t, n1, "roost_edge_legs"))

	// Phase 2: the owner drains while clients behind the routers publish. The direct clients go
	// first: they would rightly get the owner's 4001.
	for _, s := range directs {
		s.ws.Close()
		<-s.done
	}
	top = publish("drain", 100, func() {
		time.Sleep(100 * time.Millisecond)
		n1.Signal(syscall.SIGTERM)
	})
	<-n1.Exited()
	caughtUp("every client behind the routers to have every message through the drain", subs, top)
	for _, r := range []*proc.Proc{r1, r2} {
		if v := labelled(t, r, "roost_router_redials_total", "result", "ok"); v < 1 {
			t.Errorf("%s re-attached its leg %v times, want ≥ 1", r.ID, v)
		}
	}
	wait.Eventually(t, 10*time.Second, "n2 to serve the 2 legs now", func() bool {
		return gauge(t, n2, "roost_edge_legs") == 2 && gauge(t, n2, "roost_edge_clients") >= 2*perRouter
	})
	t.Logf("drain: %d messages in all, every client behind the routers in order with no close, hole or duplicate", top)
}

// TestEdgeSlowClientAloneIsDropped: behind a router, a client that reads nothing is closed with
// 4008 by the router alone; the room's other clients on the same leg get every message.
func TestEdgeSlowClientAloneIsDropped(t *testing.T) {
	n1 := startProc(t, "node", "n1", "")
	r1 := startProc(t, "router", "r1", n1.Gossip, "--send-queue", "64")
	proc.WaitRingT(t, []*proc.Proc{n1, r1}, 1)
	const room = "edge-slow"
	lazyDialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: smallReceiveBuffer}
	lazy, _, err := lazyDialer.DialContext(t.Context(), "ws://"+r1.HTTP+"/v1/rooms/"+room+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lazy.Close() })
	var readers []*edgeSub
	for i := range 10 {
		s := dialEdgeSub(t, fmt.Sprint("reader-", i), r1.URL(), room)
		go s.read()
		readers = append(readers, s)
	}
	pub, err := client.Dial(t.Context(), r1.URL(), room, &client.Options{Discard: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	blob := strings.Repeat("x", 64<<10)
	var top uint64
	for i := 0; labelled(t, r1, "roost_drops_total", "reason", "slow_consumer") == 0; i++ {
		if i == 600 {
			t.Fatal("600 messages of 64 KiB and the client that reads nothing is still in")
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		top, err = pub.PublishID(ctx, fmt.Sprint("m", i), blob)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // within --publish-rate
	}
	wait.Eventually(t, 20*time.Second, "the readers to have every message", func() bool {
		for _, s := range readers {
			if last, err := s.state(); err != nil || last < top {
				return false
			}
		}
		return true
	})
	for _, s := range readers {
		if _, err := s.state(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	if v := labelled(t, n1, "roost_drops_total", "reason", "slow_consumer"); v != 0 {
		t.Fatalf("the owner dropped %v connections as slow: the leg should never wait for one client", v)
	}
	if gauge(t, r1, "roost_router_edge_legs") != 1 {
		t.Fatal("the leg went with the slow client")
	}
	// The lazy client reads what was in flight, then the router's 4008.
	for msgs := 0; ; msgs++ {
		_ = lazy.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := lazy.ReadMessage()
		if err == nil {
			if !bytes.HasPrefix(b, []byte(`{"type":"`)) {
				t.Fatalf("lazy client: frame %.40q", b)
			}
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != protocol.CloseSlowConsumer {
			t.Fatalf("lazy client ended with %v after %d frames, want 4008", err, msgs)
		}
		t.Logf("lazy client: %d frames in flight, then %d %q; %d messages to the 10 others", msgs, ce.Code, ce.Text, top)
		break
	}
}

// TestEdgeRoomBiggerThanANode: one room's audience spread over 4 routers; the owner serves 4
// legs whatever the audience, and every subscriber gets every message in order. 2,000
// subscribers by default; ROOST_EDGE_SUBSCRIBERS=16000 is the demonstration.
func TestEdgeRoomBiggerThanANode(t *testing.T) {
	total := 2000
	if v := os.Getenv("ROOST_EDGE_SUBSCRIBERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 4 {
			t.Fatalf("ROOST_EDGE_SUBSCRIBERS=%q: want a number of subscribers ≥ 4", v)
		}
		total = n
	}
	n1 := startProc(t, "node", "n1", "")
	routers := make([]*proc.Proc, 4)
	for i := range routers {
		routers[i] = startProc(t, "router", fmt.Sprint("r", i+1), n1.Gossip)
	}
	proc.WaitRingT(t, append([]*proc.Proc{n1}, routers...), 1)
	const room = "edge-big"
	subs := make([]*edgeSub, total)
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range subs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			subs[i] = dialEdgeSub(t, fmt.Sprint("sub-", i), routers[i%len(routers)].URL(), room)
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	joined := time.Since(start)
	for _, s := range subs {
		go s.read()
	}
	if legs, clients := gauge(t, n1, "roost_edge_legs"), gauge(t, n1, "roost_edge_clients"); legs != 4 || int(clients) != total {
		t.Fatalf("the owner serves %v legs carrying %v clients; want 4 and %d", legs, clients, total)
	}
	pub, err := client.Dial(t.Context(), routers[0].URL(), room, &client.Options{Discard: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	const msgs = 100
	cpu0 := gauge(t, n1, "process_cpu_seconds_total")
	sent := time.Now()
	var top uint64
	for i := range msgs {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		top, err = pub.PublishID(ctx, fmt.Sprint("big-", i), i)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // within --publish-rate
	}
	published := time.Since(sent)
	wait.Eventually(t, 60*time.Second, "every subscriber to have every message", func() bool {
		for _, s := range subs {
			if last, err := s.state(); err != nil || last < top {
				return false
			}
		}
		return true
	})
	took := time.Since(sent)
	for _, s := range subs {
		if _, err := s.state(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	cpu := gauge(t, n1, "process_cpu_seconds_total") - cpu0
	t.Logf("%d subscribers over 4 routers (joined in %s): %d messages each (published and acked in %s), all in order in %s; the owner held 4 legs and its process spent %.0f ms of CPU in all",
		total, joined.Round(time.Millisecond), msgs, published.Round(time.Millisecond), took.Round(time.Millisecond), cpu*1000)
}
