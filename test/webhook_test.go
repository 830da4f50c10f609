package test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/internal/wait"
)

// hookEvent is a webhook event as a receiver reads it.
type hookEvent struct {
	ID, Type, Room, Epoch, Client string
	Seq                           uint64
	Time                          time.Time
	Message                       json.RawMessage
}

// hookReceiver is a real HTTP receiver that refuses its first posts, then every fifth, and every
// one while down is set, and keeps every event it took, in the order they came, checking every
// signature.
type hookReceiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret string
	posts  atomic.Int64
	failed atomic.Int64
	down   atomic.Bool

	mu     sync.Mutex
	events []hookEvent
}

func newHookReceiver(t *testing.T, secret string, failFirst int) *hookReceiver {
	h := &hookReceiver{t: t, secret: secret}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		if r.Header.Get("X-Roost-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			t.Errorf("a webhook POST whose signature does not hold: %q", r.Header.Get("X-Roost-Signature"))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if n := h.posts.Add(1); n <= int64(failFirst) || n%5 == 0 || h.down.Load() {
			h.failed.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable) // the events are posted again
			return
		}
		var b struct{ Events []hookEvent }
		if err := json.Unmarshal(body, &b); err != nil || len(b.Events) == 0 {
			t.Errorf("a webhook body that is not {\"events\":[...]}: %.200s", body)
		}
		h.mu.Lock()
		h.events = append(h.events, b.Events...)
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// byRoom is every room's events, each id once (its first arrival), in the order they came;
// duplicates (redeliveries) must be equal to the first.
func (h *hookReceiver) byRoom() map[string][]hookEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[string]hookEvent{}
	out := map[string][]hookEvent{}
	for _, e := range h.events {
		if first, ok := seen[e.ID]; ok {
			if first.Seq != e.Seq || first.Type != e.Type || first.Room != e.Room || first.Client != e.Client {
				h.t.Errorf("event id %s delivered twice with different content: %+v and %+v", e.ID, first, e)
			}
			continue
		}
		seen[e.ID] = e
		out[e.Room] = append(out[e.Room], e)
	}
	return out
}

// TestWebhooksAcrossMoves: a receiver that fails the first attempts (and every fifth after) gets
// every event at least once — each room's occupied, member joins, every acknowledged message, the
// leaves and vacated at the end — with signatures that hold and each room's events in order by
// seq, while the rooms' owner is drained mid-stream and then every node is restarted in turn.
func TestWebhooksAcrossMoves(t *testing.T) {
	const secret = "hook-secret-hook-secret"
	h := newHookReceiver(t, secret, 3)
	flags := []string{"--webhook-url", h.srv.URL + "/hook", "--webhook-secret", secret,
		"--webhook-events", "room.occupied,room.vacated,member.join,member.leave,message",
		"--webhook-backoff-min", "20ms", "--webhook-backoff-max", "300ms", "--webhook-grace", "3s", "--drain-timeout", "20s"}
	nodes, rt := startProcClusterWithRouter(t, 3, flags...)

	rooms := []string{"hook-a", "hook-b", "hook-c", "hook-d"}
	var members []*client.Conn
	for i, room := range rooms {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		c, err := client.Dial(ctx, rt.URL(), room, &client.Options{Discard: true, ClientID: fmt.Sprint("member-", i)})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, c)
	}
	defer func() {
		for _, c := range members {
			c.Close()
		}
	}()

	// Publishers: one per room, through the router's server API, retrying with the same id
	// until acknowledged.
	acked := make([][]uint64, len(rooms))
	stop := make(chan struct{})
	var pubs sync.WaitGroup
	for i, room := range rooms {
		pubs.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				for attempt := 0; ; attempt++ {
					code, a := apiPublish(t, rt.URL(), room, fmt.Sprint("m", k), k)
					if code == 200 {
						acked[i] = append(acked[i], a.Seq)
						break
					}
					if attempt > 50 {
						t.Errorf("room %s message %d never acknowledged: %d %+v", room, k, code, a)
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	time.Sleep(time.Second)

	// Drain the owner of hook-a mid-stream, and bring a node in in its place.
	o, err := ownerFrom(t.Context(), rt, rooms[0])
	if err != nil {
		t.Fatal(err)
	}
	next := 4
	replace := func(id string) {
		t.Helper()
		i := slices.IndexFunc(nodes, func(p *proc.Proc) bool { return p.ID == id })
		// The receiver is down from before the drain until the new node is in: the events of
		// the draining node's rooms are pending when they move.
		h.down.Store(true)
		defer h.down.Store(false)
		time.Sleep(300 * time.Millisecond)
		pending, err := unlabelled(nodes[i], "roost_webhook_pending")
		if err != nil || pending == 0 {
			t.Fatalf("%s about to drain with %v events pending (%v), want some", id, pending, err)
		}
		t.Logf("draining %s with %.0f events pending", id, pending)
		if !nodes[i].Stop(40 * time.Second) {
			t.Fatalf("%s did not drain and stop: %s", id, nodes[i].Log())
		}
		rest := slices.Delete(slices.Clone(nodes), i, i+1)
		n := startProc(t, "node", fmt.Sprintf("n%d", next), rest[0].Gossip, flags...)
		next++
		nodes = append(rest, n)
		proc.WaitRingT(t, append(slices.Clone(nodes), rt), 3)
		time.Sleep(500 * time.Millisecond) // the stream goes on meanwhile
	}
	replace(o.Node)
	t.Logf("drained %s, the owner of %s; now a rolling restart", o.Node, rooms[0])
	for _, id := range []string{nodes[0].ID, nodes[1].ID, nodes[2].ID} {
		replace(id)
	}
	close(stop)
	pubs.Wait()
	for _, c := range members {
		c.Close()
	}

	checkHookEvents(t, h, rooms, acked)
	h.mu.Lock()
	total := len(h.events)
	h.mu.Unlock()
	t.Logf("%d POSTs (%d refused by the receiver, retried), %d events taken in all (with redeliveries)", h.posts.Load(), h.failed.Load(), total)
}

// checkHookEvents waits until every room's events have arrived, up to its room.vacated, and
// checks them: room.occupied first, the member's joins and leaves paired, a message event for
// every acknowledged seq, each room's events in order by seq.
func checkHookEvents(t *testing.T, h *hookReceiver, rooms []string, acked [][]uint64) {
	t.Helper()
	// Every room's events arrive: its occupied first, its member's join, a message event for
	// every acknowledged seq, and, once the member left, its leave and the room's vacated.
	var got map[string][]hookEvent
	wait.Eventually(t, 30*time.Second, "every room's events delivered, up to its room.vacated", func() bool {
		got = h.byRoom()
		for _, room := range rooms {
			evs := got[room]
			if len(evs) == 0 || evs[len(evs)-1].Type != "room.vacated" {
				return false
			}
		}
		return true
	})
	for i, room := range rooms {
		evs := got[room]
		msgs := map[uint64]string{} // seq → event id
		joins, leaves := 0, 0
		for j, e := range evs {
			if j > 0 && e.Seq < evs[j-1].Seq {
				t.Errorf("room %s: event %d (%s seq %d) after one of seq %d: out of order", room, j, e.Type, e.Seq, evs[j-1].Seq)
			}
			if e.Epoch == "" || e.ID == "" || e.Time.IsZero() {
				t.Errorf("room %s: event %+v lacks an id, epoch or time", room, e)
			}
			switch e.Type {
			case "message":
				var m struct {
					Type string
					Seq  uint64
				}
				if json.Unmarshal(e.Message, &m) != nil || m.Type != "message" || m.Seq != e.Seq {
					t.Errorf("room %s: message event %+v: its message frame is not the message's", room, e)
				}
				if id, ok := msgs[e.Seq]; ok {
					t.Errorf("room %s: two message events for seq %d, ids %s and %s (a receiver deduplicating by id would take both)", room, e.Seq, id, e.ID)
				}
				msgs[e.Seq] = e.ID
			case "member.join":
				joins++
			case "member.leave":
				leaves++
			}
			if (e.Type == "member.join" || e.Type == "member.leave") && e.Client != fmt.Sprint("member-", i) {
				t.Errorf("room %s: %s of client %q, want member-%d", room, e.Type, e.Client, i)
			}
		}
		for _, seq := range acked[i] {
			if msgs[seq] == "" {
				t.Errorf("room %s: no message event for acknowledged seq %d", room, seq)
			}
		}
		if evs[0].Type != "room.occupied" || joins < 1 || leaves < 1 || joins != leaves {
			t.Errorf("room %s: first event %s, %d joins and %d leaves; want room.occupied first and the member's joins and leaves paired", room, evs[0].Type, joins, leaves)
		}
		t.Logf("room %s: %d acknowledged messages, %d distinct events (%d joins)", room, len(acked[i]), len(evs), joins)
	}
}

// TestWebhooksAcrossCrash: the outbox is replicated with its room, so when the owner is killed
// (kill -9) with events pending (the receiver is down) the room's new owner — its replica —
// delivers every event not delivered yet: none lost (a message event for every acknowledged
// seq), none out of order, and the member, back through the router, neither joins nor leaves
// twice.
func TestWebhooksAcrossCrash(t *testing.T) {
	const secret = "hook-secret-hook-secret"
	h := newHookReceiver(t, secret, 3)
	flags := []string{"--webhook-url", h.srv.URL + "/hook", "--webhook-secret", secret,
		"--webhook-events", "room.occupied,room.vacated,member.join,member.leave,message",
		"--webhook-backoff-min", "20ms", "--webhook-backoff-max", "300ms", "--webhook-grace", "3s"}
	nodes, rt := startProcClusterWithRouter(t, 3, flags...)
	rooms := []string{"crash-a"}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	member, err := client.Dial(ctx, rt.URL(), rooms[0], &client.Options{Discard: true, ClientID: "member-0"})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	acked := make([][]uint64, 1)
	publish := func(k int) {
		for attempt := 0; ; attempt++ {
			code, a := apiPublish(t, rt.URL(), rooms[0], fmt.Sprint("m", k), k)
			if code == 200 {
				acked[0] = append(acked[0], a.Seq)
				return
			}
			if attempt > 100 {
				t.Fatalf("message %d never acknowledged: %d %+v", k, code, a)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for k := range 100 {
		publish(k)
	}
	// The receiver goes down: the next messages' events wait in the owner's outbox when it dies.
	h.down.Store(true)
	for k := 100; k < 130; k++ {
		publish(k)
	}
	o, err := ownerFrom(t.Context(), rt, rooms[0])
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(nodes, func(p *proc.Proc) bool { return p.ID == o.Node })
	var pending float64
	wait.Eventually(t, 10*time.Second, "the owner's outbox holding the undelivered events", func() bool {
		pending, err = unlabelled(nodes[i], "roost_webhook_pending")
		return err == nil && pending >= 30
	})
	nodes[i].Kill()
	rest := slices.Delete(slices.Clone(nodes), i, i+1)
	t.Logf("killed %s (kill -9) with %.0f events pending in its outbox", o.Node, pending)
	for k := 130; k < 150; k++ {
		publish(k)
	}
	h.down.Store(false)
	proc.WaitRingT(t, append(rest, rt), 2)
	member.Close()
	checkHookEvents(t, h, rooms, acked)
}
