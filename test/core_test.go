package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/testcluster"
	"github.com/roost-dev/roost/protocol"
)

// TestCoreManyRooms is the core contract on 3 nodes and a router: 200 rooms used at once, each by
// one client through the router and one connected directly (via a redirect from whichever node
// it asked). Every member names the same owner; redirect chains end at the owner; every message
// reaches every client of its room exactly once and in seq order; no non-owner holds a room.
func TestCoreManyRooms(t *testing.T) {
	c := testcluster.New(t, testcluster.Config{Nodes: 3, Routers: 1})
	rt, nodes := c.Routers()[0], c.Nodes()
	const rooms, perClient = 200, 3
	names := make([]string, rooms)
	for i := range names {
		names[i] = fmt.Sprintf("core-%d", i)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// Every member names the same owner for every room.
	owners := map[string]string{}
	for _, room := range names {
		o, ok := rt.Ring.Placement().Owner(room)
		if !ok {
			t.Fatal("router has no owner for", room)
		}
		owners[room] = o.ID
		for _, m := range c.Members() {
			if got, _ := m.Ring.Placement().Owner(room); got.ID != o.ID {
				t.Fatalf("%s: %s names %s, router names %s", room, m.ID, got.ID, o.ID)
			}
		}
	}

	// curl -L from any member ends at the owner, in at most one redirect.
	for _, room := range names[:50] {
		for _, m := range c.Members() {
			hops, status, body, err := followRedirects(ctx, m.URL()+"/v1/rooms/"+room)
			if err != nil || status != 200 {
				t.Fatalf("%s from %s: %v %d %s", room, m.ID, err, status, body)
			}
			o := decode[protocol.Owner](t, body)
			owner := c.Member(owners[room])
			if o.Node != owner.ID || o.Room != room || o.WSURL != "ws://"+owner.HTTP+"/v1/rooms/"+room+"/ws" || o.TCPAddr != owner.TCP || len(hops) > 2 {
				t.Fatalf("%s from %s: %+v after %v", room, m.ID, o, hops)
			}
		}
	}

	// Two clients per room: one through the router, one direct to a node (any node: a non-owner
	// redirects the upgrade to the owner).
	type roomClients struct {
		room  string
		conns [2]*client.Conn
	}
	all := make([]roomClients, rooms)
	var wg sync.WaitGroup
	errs := make(chan error, rooms*2)
	for i, room := range names {
		all[i].room = room
		for j, base := range []string{rt.URL(), nodes[i%len(nodes)].URL()} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := client.Dial(ctx, base, room, &client.Options{ClientID: fmt.Sprintf("%s-c%d", room, j)})
				if err != nil {
					errs <- fmt.Errorf("dial %s via %s: %w", room, base, err)
					return
				}
				all[i].conns[j] = conn
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, rc := range all {
			for _, conn := range rc.conns {
				conn.Close()
			}
		}
	})
	for _, rc := range all {
		for _, conn := range rc.conns {
			if w := conn.Welcome(); w.Node != owners[rc.room] {
				t.Fatalf("%s: connected to %s, owner is %s", rc.room, w.Node, owners[rc.room])
			}
		}
	}

	// Everyone publishes at once; then every client must hold every message of its room once.
	results := make(chan error, rooms*2)
	for _, rc := range all {
		for j, conn := range rc.conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range perClient {
					id := fmt.Sprintf("%s-c%d-m%d", rc.room, j, k)
					if _, err := conn.PublishID(ctx, id, map[string]any{"from": j, "k": k}); err != nil {
						results <- fmt.Errorf("%s: publish %s: %w", rc.room, id, err)
						return
					}
				}
				seen := map[string]bool{}
				var last uint64
				for len(seen) < 2*perClient {
					ev, err := conn.Next(ctx)
					if err != nil {
						results <- fmt.Errorf("%s client %d: after %d messages: %w", rc.room, j, len(seen), err)
						return
					}
					if ev.Type != client.EventMessage {
						results <- fmt.Errorf("%s client %d: unexpected %s event", rc.room, j, ev.Type)
						return
					}
					if ev.Seq != last+1 || seen[ev.ID] {
						results <- fmt.Errorf("%s client %d: seq %d (id %s) after %d, seen before: %v", rc.room, j, ev.Seq, ev.ID, last, seen[ev.ID])
						return
					}
					var d struct{ From, K int }
					if json.Unmarshal(ev.Data, &d) != nil || ev.ID != fmt.Sprintf("%s-c%d-m%d", rc.room, d.From, d.K) {
						results <- fmt.Errorf("%s client %d: message %s carries %s", rc.room, j, ev.ID, ev.Data)
						return
					}
					seen[ev.ID], last = true, ev.Seq
				}
			}()
		}
	}
	wg.Wait()
	close(results)
	for err := range results {
		t.Error(err)
	}

	// Only owners hold rooms.
	for _, room := range names {
		for _, n := range nodes {
			if n.Node.HasRoom(room) != (n.ID == owners[room]) {
				t.Fatalf("%s: held by %s = %v, owner %s", room, n.ID, n.Node.HasRoom(room), owners[room])
			}
		}
	}
}

// followRedirects does what curl -L does and reports every URL visited and the final body.
func followRedirects(ctx context.Context, start string) (hops []string, status int, body []byte, err error) {
	noFollow := &http.Client{Transport: quickHTTP.Transport, // trusts testCA
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	u := start
	for range 10 {
		hops = append(hops, u)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := noFollow.Do(req)
		if err != nil {
			return hops, 0, nil, err
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusTemporaryRedirect {
			return hops, resp.StatusCode, body, nil
		}
		u = resp.Header.Get("Location")
		if !strings.HasPrefix(u, "http") {
			return hops, resp.StatusCode, body, fmt.Errorf("relative Location %q", u)
		}
	}
	return hops, 0, nil, fmt.Errorf("redirect loop: %v", hops)
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}
