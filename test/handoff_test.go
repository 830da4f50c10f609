package test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/testcluster"
	"github.com/roost-dev/roost/internal/wait"
)

// roomLoad is the traffic of one room during a membership change: a publisher and two
// subscribers (one through the router, one direct), all Go clients that reconnect by themselves.
type roomLoad struct {
	room  string
	pub   *client.Conn
	subs  [2]*client.Conn
	acked sync.Map // id → seq
	fails []string // what a subscriber saw that it must not
	mu    sync.Mutex
	got   [2]map[string]uint64 // per subscriber: id → seq
}

func (l *roomLoad) fail(f string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.fails) < 5 {
		l.fails = append(l.fails, fmt.Sprintf(f, args...))
	}
}

// subscribe reads one subscriber's events until ctx ends, checking order: within one epoch every
// message is the one after the last, and there is no gap or reset (state must survive moves).
func (l *roomLoad) subscribe(ctx context.Context, i int) {
	c := l.subs[i]
	var last uint64
	epoch := c.Welcome().Epoch
	for {
		ev, err := c.Next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				l.fail("subscriber %d ended: %v", i, err)
			}
			return
		}
		switch ev.Type {
		case client.EventMessage:
			if last != 0 && ev.Seq != last+1 {
				l.fail("subscriber %d: seq %d after %d (epoch %s)", i, ev.Seq, last, epoch)
			}
			last = ev.Seq
			l.mu.Lock()
			if _, dup := l.got[i][ev.ID]; dup {
				l.fails = append(l.fails, fmt.Sprintf("subscriber %d: %s twice", i, ev.ID))
			}
			l.got[i][ev.ID] = ev.Seq
			l.mu.Unlock()
		case client.EventReconnected:
			if i == 0 {
				l.fail("subscriber through the router saw its connection end: %v", ev.Err)
			}
			if ev.Welcome.Epoch != epoch {
				l.fail("subscriber %d: epoch %s after reconnecting, was %s", i, ev.Welcome.Epoch, epoch)
			}
		case client.EventGap, client.EventReset:
			l.fail("subscriber %d: %s event %+v", i, ev.Type, ev)
		}
	}
}

// TestPlannedChangesUnderLoad: 3 nodes and a router with rooms under steady traffic; a 4th node
// joins, a node is drained (as on SIGTERM), then every node is restarted in turn. No subscriber
// may lose an acked message, see one twice, see a hole, or see its room's numbering restart; and
// a subscriber connected through the router never sees its connection end (the router re-dials
// the new owner for it).
func TestPlannedChangesUnderLoad(t *testing.T) {
	rooms := 500
	if v, err := strconv.Atoi(os.Getenv("ROOST_HANDOFF_ROOMS")); err == nil && v > 0 {
		rooms = v
	}
	c := testcluster.New(t, testcluster.Config{Nodes: 3, Routers: 1})
	rt := c.Routers()[0]
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	opts := func(id string) *client.Options {
		return &client.Options{ClientID: id, MaxReconnectDelay: 100 * time.Millisecond, Alternates: []string{rt.URL()}}
	}

	loads := make([]*roomLoad, rooms)
	var dials sync.WaitGroup
	for i := range loads {
		l := &roomLoad{room: fmt.Sprintf("load-%d", i), got: [2]map[string]uint64{{}, {}}}
		loads[i] = l
		dials.Go(func() {
			var err error
			bases := []string{rt.URL(), c.Nodes()[i%3].URL()}
			for j, base := range bases {
				if l.subs[j], err = client.Dial(ctx, base, l.room, opts(fmt.Sprint(l.room, "-s", j))); err != nil {
					l.fail("dial: %v", err)
					return
				}
			}
			o := opts(l.room + "-p")
			o.Discard = true
			if l.pub, err = client.Dial(ctx, bases[i%2], l.room, o); err != nil { // publishers on both doors
				l.fail("dial: %v", err)
			}
		})
	}
	dials.Wait()
	t.Cleanup(func() {
		for _, l := range loads {
			for _, c := range append(l.subs[:], l.pub) {
				if c != nil {
					c.Close()
				}
			}
		}
	})
	for _, l := range loads {
		if len(l.fails) > 0 {
			t.Fatal(l.room, l.fails)
		}
	}

	var readers, writers sync.WaitGroup
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	for _, l := range loads {
		for i := range l.subs {
			readers.Go(func() { l.subscribe(readCtx, i) })
		}
	}
	var published atomic.Int64
	writeCtx, stopWriting := context.WithCancel(ctx)
	for _, l := range loads {
		writers.Go(func() {
			for k := 0; writeCtx.Err() == nil; k++ {
				id := fmt.Sprintf("%s-m%d", l.room, k)
				pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
				seq, err := l.pub.PublishID(pctx, id, k)
				pcancel()
				if err != nil {
					if writeCtx.Err() == nil {
						l.fail("publish %s: %v", id, err)
					}
					return
				}
				l.acked.Store(id, seq)
				published.Add(1)
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	settle := func(what string) {
		t.Helper()
		before := published.Load()
		wait.Eventually(t, 20*time.Second, "traffic flows after "+what, func() bool { return published.Load() > before+int64(rooms) })
	}
	settle("start")

	c.AddNode("n4")
	c.WaitConverged(4)
	settle("n4 joined")

	c.Drain(c.Member("n2"))
	c.WaitConverged(3)
	settle("n2 drained")

	for _, id := range []string{"n1", "n3", "n4"} {
		c.Drain(c.Member(id))
		c.AddNode(id + "b")
		c.WaitConverged(3)
		settle(id + " restarted")
	}

	stopWriting()
	writers.Wait()
	// Every acked message reaches both subscribers of its room.
	caughtUp := func() (missing []string) {
		for _, l := range loads {
			l.acked.Range(func(id, _ any) bool {
				l.mu.Lock()
				defer l.mu.Unlock()
				for i := range l.got {
					if _, ok := l.got[i][id.(string)]; !ok {
						missing = append(missing, fmt.Sprintf("%s sub %d (%s)", id, i, l.subs[i].Welcome().Node))
					}
				}
				return len(missing) < 10
			})
			if len(missing) >= 10 {
				break
			}
		}
		return missing
	}
	deadline := time.Now().Add(30 * time.Second)
	for missing := caughtUp(); len(missing) > 0; missing = caughtUp() {
		if time.Now().After(deadline) {
			for _, l := range loads {
				if len(l.fails) > 0 {
					t.Errorf("%s: %v", l.room, l.fails)
				}
			}
			t.Fatalf("acked messages never reached their subscribers, e.g. %v", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopReading()
	readers.Wait()
	for _, l := range loads {
		if len(l.fails) > 0 {
			t.Errorf("%s: %v", l.room, l.fails)
		}
		l.acked.Range(func(id, seq any) bool {
			for i := range l.got {
				if got := l.got[i][id.(string)]; got != seq.(uint64) {
					t.Errorf("%s subscriber %d: %s at seq %d, acked as %d", l.room, i, id, got, seq)
					return false
				}
			}
			return true
		})
	}
	t.Logf("%d rooms, %d messages acked through a join, a drain and a rolling restart of 3 nodes", rooms, published.Load())
}

// TestJoinsRacingAHandOff: clients keep joining a room, through the router and directly, while
// it moves from a draining owner to its new one. Every client ends on the current owner and they
// all see one sequence: one epoch, no hole, no duplicate, no reset.
func TestJoinsRacingAHandOff(t *testing.T) {
	c := testcluster.New(t, testcluster.Config{Nodes: 3, Routers: 1})
	rt := c.Routers()[0]
	room := ""
	for i := 0; room == ""; i++ {
		if o, _ := rt.Ring.Placement().Owner(fmt.Sprint("race-", i)); o.ID == "n1" {
			room = fmt.Sprint("race-", i)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	pub, err := client.Dial(ctx, rt.URL(), room, &client.Options{Discard: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	epoch := pub.Welcome().Epoch
	stop := make(chan struct{})
	var published sync.WaitGroup
	published.Go(func() {
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := pub.PublishID(ctx, fmt.Sprint("m", k), k); err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	})

	const joiners = 40
	conns := make([]*client.Conn, joiners)
	var joined sync.WaitGroup
	drained := make(chan struct{})
	go func() {
		c.Drain(c.Member("n1"))
		close(drained)
	}()
	for i := range joiners {
		joined.Go(func() {
			time.Sleep(time.Duration(i) * 5 * time.Millisecond) // spread over the hand-off
			base := rt.URL()
			if i%2 == 1 {
				base = c.Nodes()[i%len(c.Nodes())].URL()
			}
			conn, err := client.Dial(ctx, base, room, &client.Options{MaxReconnectDelay: 50 * time.Millisecond, Alternates: []string{rt.URL()}})
			if err != nil {
				t.Errorf("joiner %d: %v", i, err)
				return
			}
			conns[i] = conn
		})
	}
	joined.Wait()
	<-drained
	time.Sleep(100 * time.Millisecond)
	close(stop)
	published.Wait()
	lastID := fmt.Sprint("final")
	finalSeq, err := pub.PublishID(ctx, lastID, "end")
	if err != nil {
		t.Fatal(err)
	}
	owner, _ := rt.Ring.Placement().Owner(room)
	for i, conn := range conns {
		if conn == nil {
			continue
		}
		defer conn.Close()
		var last uint64
		for last != finalSeq {
			ev, err := conn.Next(ctx)
			if err != nil {
				t.Fatalf("joiner %d: %v", i, err)
			}
			switch ev.Type {
			case client.EventMessage:
				if last != 0 && ev.Seq != last+1 {
					t.Fatalf("joiner %d: seq %d after %d", i, ev.Seq, last)
				}
				last = ev.Seq
			case client.EventReset, client.EventGap:
				t.Fatalf("joiner %d: %s %+v", i, ev.Type, ev)
			case client.EventReconnected:
				if ev.Welcome.Epoch != epoch {
					t.Fatalf("joiner %d: epoch %s, want %s", i, ev.Welcome.Epoch, epoch)
				}
			}
		}
		// A direct client's welcome names the node it is on now. One behind the router keeps its
		// first welcome: the router moved it without a reconnect, and its single sequence above
		// is the proof that it follows the current owner.
		if w := conn.Welcome(); (i%2 == 1 && w.Node != owner.ID) || w.Epoch != epoch {
			t.Fatalf("joiner %d ended on %s epoch %s; owner %s epoch %s", i, w.Node, w.Epoch, owner.ID, epoch)
		}
	}
}
