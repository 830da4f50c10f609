package test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/protocol"
)

// TestKillNineIsDetected kills a node process with SIGKILL and measures how long the survivors
// keep it in their ring (until both report it dead) and until a room it owned is served again
// by its new owner. ROOST_KILL_TRIALS sets the number of trials (default 1; each starts a fresh
// cluster of 3 processes).
func TestKillNineIsDetected(t *testing.T) {
	trials := 1
	if v, err := strconv.Atoi(os.Getenv("ROOST_KILL_TRIALS")); err == nil && v > 0 {
		trials = v
	}
	var dead, served []time.Duration
	for trial := range trials {
		t.Run(fmt.Sprint("trial", trial), func(t *testing.T) {
			ps := startProcCluster(t, 3)
			victim, survivors := ps[2], ps[:2]
			// A room the victim owns.
			room := ""
			for i := range 1000 {
				r := fmt.Sprint("kill-", i)
				if o, err := ownerFrom(t.Context(), survivors[0], r); err == nil && o.Node == victim.ID {
					room = r
					break
				}
			}
			if room == "" {
				t.Fatal("no room on the victim")
			}
			start := time.Now()
			victim.Signal(syscall.SIGKILL)
			<-victim.Exited()
			wait.Eventually(t, 15*time.Second, "both survivors declare the victim dead", func() bool {
				return survivors[0].State(victim.ID) == "dead" && survivors[1].State(victim.ID) == "dead"
			})
			d := time.Since(start)
			wait.Eventually(t, 15*time.Second, "the victim's room served again", func() bool {
				c, err := client.Dial(t.Context(), survivors[0].URL(), room, &client.Options{DisableReconnect: true, HandshakeTimeout: time.Second})
				if err != nil {
					return false
				}
				defer c.Close()
				return c.Welcome().Node != victim.ID
			})
			s := time.Since(start)
			dead, served = append(dead, d), append(served, s)
			t.Logf("kill -9: dead on both survivors after %s, room served again after %s", d.Round(time.Millisecond), s.Round(time.Millisecond))
		})
	}
	if len(dead) > 1 {
		slices.Sort(dead)
		slices.Sort(served)
		q := func(ds []time.Duration, p float64) time.Duration {
			return ds[int(p*float64(len(ds)-1))].Round(time.Millisecond)
		}
		t.Logf("%d trials: dead p50 %s p99 %s max %s; served p50 %s p99 %s", len(dead),
			q(dead, .5), q(dead, .99), dead[len(dead)-1].Round(time.Millisecond), q(served, .5), q(served, .99))
	}
}

// TestSigtermShutsDownCleanly: SIGTERM makes a node leave the gossip (the others list it as
// "left", not "dead") and exit 0.
func TestSigtermShutsDownCleanly(t *testing.T) {
	ps := startProcCluster(t, 2)
	ps[1].Signal(syscall.SIGTERM)
	select {
	case <-ps[1].Exited():
	case <-time.After(15 * time.Second):
		t.Fatal("node did not exit within 15s of SIGTERM")
	}
	if code := ps[1].ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM\n%s", code, ps[1].Log())
	}
	wait.Eventually(t, 5*time.Second, "the survivor lists it as left", func() bool { return ps[0].State(ps[1].ID) == "left" })
}

// TestDrainThatLosesRoomsFails: a node that cannot hand its rooms off on SIGTERM (here, the last
// one) still leaves, but exits non-zero and says why: a drain that loses rooms must not look
// like success.
func TestDrainThatLosesRoomsFails(t *testing.T) {
	n := startProc(t, "node", "n1", "", "--drain-timeout", "1s")
	c, err := client.Dial(t.Context(), n.URL(), "last", &client.Options{DisableReconnect: true, Discard: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(t.Context(), "kept"); err != nil {
		t.Fatal(err)
	}
	n.Signal(syscall.SIGTERM)
	select {
	case <-n.Exited():
	case <-time.After(15 * time.Second):
		t.Fatal("node did not exit within 15s of SIGTERM")
	}
	c.Close()
	if code := n.ExitCode(); code == 0 || !strings.Contains(n.Log(), "drain incomplete") {
		t.Fatalf("a drain that handed off nothing exited %d:\n%s", code, n.Log())
	}
}

// chaosRoom is one room's traffic through a router process: a subscriber and a publisher.
type chaosRoom struct {
	name  string
	owner string
	sub   *client.Conn
	pub   *client.Conn
}

func openChaosRooms(t *testing.T, base string, owners map[string]string) []*chaosRoom {
	t.Helper()
	var out []*chaosRoom
	for name, owner := range owners {
		r := &chaosRoom{name: name, owner: owner}
		var err error
		opts := &client.Options{ClientID: name + "-sub", MaxReconnectDelay: 100 * time.Millisecond}
		if r.sub, err = client.Dial(t.Context(), base, name, opts); err != nil {
			t.Fatal(err)
		}
		if r.pub, err = client.Dial(t.Context(), base, name, &client.Options{ClientID: name + "-pub", Discard: true}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.sub.Close(); r.pub.Close() })
		out = append(out, r)
	}
	return out
}

// roomsByOwner picks n rooms owned by each node, asking through p.
func roomsByOwner(t *testing.T, p *proc.Proc, prefix string, n int, nodes ...string) map[string]string {
	t.Helper()
	want := map[string]int{}
	for _, id := range nodes {
		want[id] = n
	}
	out := map[string]string{}
	for i := 0; len(out) < n*len(nodes) && i < 10000; i++ {
		room := fmt.Sprint(prefix, i)
		o, err := ownerFrom(t.Context(), p, room)
		if err != nil {
			t.Fatal(err)
		}
		if want[o.Node] > 0 {
			want[o.Node]--
			out[room] = o.Node
		}
	}
	return out
}

// publishUntil publishes to the room until a publish is acked, and says how long that took.
func (r *chaosRoom) publishUntil(t *testing.T, id string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	if _, err := r.pub.PublishID(ctx, id, id); err != nil {
		t.Fatalf("%s: publish %s not acked within %s: %v", r.name, id, d, err)
	}
	return time.Since(start)
}

// TestKillOwnerMidTraffic: kill -9 a node process while rooms on every node are in use through
// a router. The dead node's rooms are served again by their heirs within a bound (measured
// detection time ~1.5 s, see TestKillNineIsDetected, plus slack), in the same epoch: their
// subscribers see no reset; rooms on the other nodes see no interruption beyond acks held until
// the ring declares the dead node gone (where it held their replica): their subscribers'
// connections never end and their sequences have no hole.
func TestKillOwnerMidTraffic(t *testing.T) {
	nodes, rt := startReplicatedCluster(t, 3, 1)
	rooms := openChaosRooms(t, rt.URL(), roomsByOwner(t, rt, "chaos-", 3, "n1", "n2", "n3"))
	for _, r := range rooms {
		r.publishUntil(t, r.name+"-before", 5*time.Second)
	}
	victim := nodes[2]
	start := time.Now()
	victim.Signal(syscall.SIGKILL)
	<-victim.Exited()
	const bound = 6 * time.Second
	var wg sync.WaitGroup
	for _, r := range rooms {
		wg.Go(func() {
			took := r.publishUntil(t, r.name+"-after", bound+2*time.Second)
			if r.owner == victim.ID && time.Since(start) > bound {
				t.Errorf("%s (on the killed node) served again only after %s", r.name, time.Since(start))
			}
			// A room on a live node whose replica was on the killed node holds its acks
			// until the ring declares that node dead (then goes on with a new replica).
			if r.owner != victim.ID && took > bound {
				t.Errorf("%s (on a live node) stalled %s", r.name, took)
			}
		})
	}
	wg.Wait()
	t.Logf("rooms of the killed node served again within %s of the kill", time.Since(start).Round(time.Millisecond))
	// Subscribers of the killed node's rooms (through the router, which re-dials the new owner
	// for them): the message before, then the message after, and nothing between: the heir
	// held the room's replica and serves it in the same epoch.
	for _, r := range rooms {
		if r.owner != victim.ID {
			continue
		}
		var seen []string
		for len(seen) == 0 || seen[len(seen)-1] != "message "+r.name+"-after" {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			ev, err := r.sub.Next(ctx)
			cancel()
			if err != nil {
				t.Fatalf("%s (killed owner): %v after %v", r.name, err, seen)
			}
			seen = append(seen, string(ev.Type)+" "+ev.ID)
		}
		if !slices.Equal(seen, []string{"message " + r.name + "-before", "message " + r.name + "-after"}) {
			t.Fatalf("%s (killed owner): subscriber saw %v, want the message before, then the message after", r.name, seen)
		}
	}
	// Subscribers of rooms on live nodes: both messages, in order, and no reconnect.
	for _, r := range rooms {
		if r.owner == victim.ID {
			continue
		}
		var got []string
		for len(got) < 2 {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			ev, err := r.sub.Next(ctx)
			cancel()
			if err != nil {
				t.Fatalf("%s: %v after %v", r.name, err, got)
			}
			if ev.Type != client.EventMessage {
				t.Fatalf("%s on a live node: unexpected %s event", r.name, ev.Type)
			}
			got = append(got, ev.ID)
		}
		if got[0] != r.name+"-before" || got[1] != r.name+"-after" {
			t.Fatalf("%s: got %v", r.name, got)
		}
	}
}

// TestStoppedNodeCausesNoSplitBrain: SIGSTOP a node past the failure timeout, let its rooms be
// taken over, then SIGCONT it. It must not take a write for a room it no longer owns (its old
// connections are closed, unacked), and it must rejoin the ring cleanly.
func TestStoppedNodeCausesNoSplitBrain(t *testing.T) {
	nodes, rt := startProcClusterWithRouter(t, 3)
	victim := nodes[2]
	var room string
	for r := range roomsByOwner(t, rt, "split-", 1, victim.ID) {
		room = r
	}
	// A client connected straight to the victim, which will not reconnect by itself.
	direct, err := client.Dial(t.Context(), victim.URL(), room, &client.Options{DisableReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if _, err := direct.PublishID(t.Context(), "before", 1); err != nil {
		t.Fatal(err)
	}

	victim.Signal(syscall.SIGSTOP)
	wait.Eventually(t, 15*time.Second, "every other member declares the stopped node dead", func() bool {
		return nodes[0].State(victim.ID) == "dead" && nodes[1].State(victim.ID) == "dead" && rt.State(victim.ID) == "dead"
	})
	// The room is served elsewhere meanwhile.
	via, err := client.Dial(t.Context(), rt.URL(), room, &client.Options{Discard: true})
	if err != nil {
		t.Fatal(err)
	}
	defer via.Close()
	if via.Welcome().Node == victim.ID {
		t.Fatal("the stopped node served a new connection")
	}
	if _, err := via.PublishID(t.Context(), "during", 2); err != nil {
		t.Fatal(err)
	}

	victim.Signal(syscall.SIGCONT)
	// The stale copy takes no write: the publish fails at once, refused (the connection is
	// closed with 4001) rather than left hanging.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	seq, err := direct.PublishID(ctx, "stale", 3)
	if err == nil {
		t.Fatalf("the node woken from SIGSTOP acked a write (seq %d) for a room it no longer owns", seq)
	}
	var closed *client.CloseError
	if !errors.As(err, &closed) || closed.Code != protocol.CloseMoved {
		t.Fatalf("the publish to the woken node ended with %v, want its connection closed with %d", err, protocol.CloseMoved)
	}
	proc.WaitRingT(t, append(nodes, rt), 3)
	if st := nodes[0].State(victim.ID); st != "alive" {
		t.Fatalf("after SIGCONT the node is %q, want alive", st)
	}
	// The room works, on one owner, for everyone.
	if _, err := via.PublishID(t.Context(), "after", 4); err != nil {
		t.Fatal(err)
	}
}

// TestKillNodesUntilOneIsLeft: kill -9 nodes one after the other; after each, rooms work again
// through the router, and on the last node everything still works.
func TestKillNodesUntilOneIsLeft(t *testing.T) {
	nodes, rt := startProcClusterWithRouter(t, 4)
	owners := map[string]string{}
	for i := range 12 {
		owners[fmt.Sprint("last-", i)] = ""
	}
	rooms := openChaosRooms(t, rt.URL(), owners)
	for round, victim := range nodes[:3] {
		victim.Signal(syscall.SIGKILL)
		<-victim.Exited()
		alive := append([]*proc.Proc{rt}, nodes[round+1:]...)
		proc.WaitRingT(t, alive, len(nodes)-round-1)
		for _, r := range rooms {
			r.publishUntil(t, fmt.Sprintf("%s-r%d", r.name, round), 10*time.Second)
		}
	}
	for _, r := range rooms {
		c, err := client.Dial(t.Context(), rt.URL(), r.name, &client.Options{DisableReconnect: true})
		if err != nil {
			t.Fatal(err)
		}
		if c.Welcome().Node != nodes[3].ID {
			t.Fatalf("%s served by %s, want the last node %s", r.name, c.Welcome().Node, nodes[3].ID)
		}
		c.Close()
	}
}
