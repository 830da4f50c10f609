package test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/netns"
	"github.com/roost-dev/roost/internal/proc"
)

// startNetCluster starts nodes n1…n(nodes) and a router r1, each in a network namespace of its
// own on net (nodes with nodeFlags added), and waits until they agree on the ring.
func startNetCluster(t *testing.T, net *netns.Net, nodes int, nodeFlags ...string) (ns []*proc.Proc, rt *proc.Proc) {
	t.Helper()
	hosts := net.Hosts()
	start := func(role, id string, h *netns.Host, join string) *proc.Proc {
		args := faultArgs(role)
		if role == "node" {
			args = append(args, nodeFlags...)
		}
		return proc.StartT(t, proc.Spec{Binary: proc.Roost(t), Role: role, ID: id, Join: join, Host: h.Addr, Wrap: h.Command(),
			Args: args, HTTP: quickHTTP})
	}
	for i := range nodes {
		join := ""
		if i > 0 {
			join = ns[0].Gossip
		}
		ns = append(ns, start("node", fmt.Sprintf("n%d", i+1), hosts[i], join))
	}
	rt = start("router", "r1", hosts[nodes], ns[0].Gossip)
	proc.WaitRingT(t, append(ns, rt), nodes)
	return ns, rt
}

// TestPartitionHeals cuts one node's link both ways for longer than memberlist remembers the
// dead (ROOST_PARTITION_SECONDS, 8 s by default: detection plus GossipToTheDeadTime's 5 s), while
// clients start the cut node's rooms afresh on the majority. Once the link is back, the two
// sides must find each other again: every member agrees on one ring of all the nodes, and every
// room is held by one node only. Before the ring looked for dead members again, both sides went
// on alone for good, each serving its own copy of every room. And only one side takes writes:
// the history checker holds every client's acks and deliveries to one writer per room.
func TestPartitionHeals(t *testing.T) {
	cut := 8 * time.Second
	if s := os.Getenv("ROOST_PARTITION_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("ROOST_PARTITION_SECONDS=%q", s)
		}
		cut = time.Duration(n) * time.Second
	}
	net := netns.New(t, 4)
	nodes, rt := startNetCluster(t, net, 3)
	victim, victimHost := nodes[2], net.Hosts()[2]
	rooms := roomsByOwner(t, rt, "part-", 4, victim.ID)
	dial := func(room string, timeout time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		c, err := client.Dial(ctx, rt.URL(), room, &client.Options{Discard: true})
		if err != nil {
			t.Fatalf("dial %s: %v", room, err)
		}
		defer c.Close()
		if _, err := c.Publish(ctx, "hello"); err != nil {
			t.Fatalf("publish to %s: %v", room, err)
		}
	}
	for room := range rooms {
		dial(room, 10*time.Second)
	}
	// Clients that stay the whole time, logged for the history checker: in the cut node's rooms
	// and in two rooms of a node on the other side, through the router and straight to the
	// owner, each with a subscriber and a publisher.
	var h history
	traffic, stopTraffic := context.WithCancel(t.Context())
	var clients sync.WaitGroup
	logged := roomsByOwner(t, rt, "part-live-", 2, nodes[0].ID)
	for room, owner := range rooms {
		logged[room] = owner
	}
	for room, owner := range logged {
		direct := nodes[0]
		if owner == victim.ID {
			direct = victim
		}
		for _, at := range []*proc.Proc{rt, direct} {
			who := room + "@" + at.ID
			sub, err := client.Dial(t.Context(), at.URL(), room, &client.Options{ClientID: who + "-sub", MaxReconnectDelay: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			pub, err := client.Dial(t.Context(), at.URL(), room, &client.Options{ClientID: who + "-pub", Discard: true, MaxReconnectDelay: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			clients.Go(func() { defer sub.Close(); h.subscribe(traffic, who+"-sub", room, sub) })
			clients.Go(func() {
				defer pub.Close()
				for i := 0; traffic.Err() == nil; i++ {
					_ = h.publish(traffic, who+"-pub", room, pub, fmt.Sprintf("%s-%d", who, i), 2*time.Second)
					time.Sleep(50 * time.Millisecond)
				}
			})
		}
	}

	victimHost.Cut()
	cutAt := time.Now()
	proc.WaitRingT(t, []*proc.Proc{nodes[0], nodes[1], rt}, 2)
	placedAfter := time.Since(cutAt)
	for room := range rooms { // the cut node's rooms start afresh on the majority
		dial(room, 30*time.Second)
	}
	time.Sleep(time.Until(cutAt.Add(cut)))
	victimHost.Heal()
	healedAt := time.Now()

	all := append(append([]*proc.Proc(nil), nodes...), rt)
	deadline := healedAt.Add(30 * time.Second)
	for {
		held, ok := 0.0, proc.Agree(all, len(nodes))
		for _, n := range nodes {
			v, err := unlabelled(n, "roost_rooms")
			held, ok = held+v, ok && err == nil
		}
		if ok && held == float64(len(logged)) {
			break
		}
		if time.Now().After(deadline) {
			var views []string
			for _, p := range all {
				c, err := p.Cluster()
				views = append(views, fmt.Sprintf("%s: ring %s nodes %v err %v", p.ID, c.Ring, c.Rooms, err))
			}
			t.Fatalf("30 s after the heal: %d rooms held for %d, views %v", int(held), len(logged), views)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("partition of %s healed: one ring and one copy of each room %s after the link came back", cut, time.Since(healedAt).Round(100*time.Millisecond))
	for room := range rooms { // and the rooms serve again
		dial(room, 10*time.Second)
	}
	time.Sleep(2 * time.Second) // traffic on the healed cluster, for the checker to see through
	stopTraffic()
	clients.Wait()
	v := h.check(time.Second, time.Second)
	t.Logf("history: %s", v)
	for _, d := range v.details {
		t.Logf("  %s", d)
	}
	if v.acks == 0 || v.deliveries == 0 {
		t.Fatalf("the checker saw no traffic: %s", v)
	}
	// The cut node finds itself in a minority (it lost both peers at once) and stops acking
	// before the majority declares it dead and serves its rooms afresh; at the heal its copies,
	// demoted, give way to the majority's. So no two epochs of a room take writes side by side
	// beyond a second of convergence, and every acked write reaches every subscriber that stayed
	// connected, unless a reset it saw says the numbering changed.
	if v.forks != 0 || v.jumps != 0 || v.twice != 0 || v.lost != 0 || v.overlap != 0 {
		t.Fatalf("history violations: %s", v)
	}
	stopped, ok := loggedAt(victim, "lost touch with most of the cluster")
	if !ok {
		t.Fatalf("%s never logged that it found itself in a minority", victim.ID)
	}
	t.Logf("two epochs of one room took writes side by side for %s at most; %s stopped taking writes %s after the cut, the majority placed its rooms %s after the cut",
		h.check(0, time.Second).overlap.Round(10*time.Millisecond), victim.ID, stopped.Sub(cutAt).Round(10*time.Millisecond), placedAfter.Round(10*time.Millisecond))
	// Clients of the cut node's rooms through the router hear from their rooms again during the
	// cut: the router drops its legs to a node the ring declares dead and re-dials the rooms' new
	// owners, rather than waiting out a silent leg's read deadline.
	h.mu.Lock()
	heard := map[string]bool{}
	for _, r := range h.records {
		if rooms[r.room] != "" && r.who == r.room+"@"+rt.ID+"-sub" && r.kind == "message" && r.at.After(cutAt) && r.at.Before(healedAt) {
			heard[r.room] = true
		}
	}
	h.mu.Unlock()
	if len(heard) != len(rooms) {
		t.Fatalf("through the router, %d of the cut node's %d rooms were heard from during the cut", len(heard), len(rooms))
	}
}

// loggedAt is when p first logged a line containing msg (its time= field).
func loggedAt(p *proc.Proc, msg string) (time.Time, bool) {
	for _, line := range strings.Split(p.Log(), "\n") {
		if !strings.Contains(line, msg) {
			continue
		}
		f, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, f)
		return at, err == nil
	}
	return time.Time{}, false
}
