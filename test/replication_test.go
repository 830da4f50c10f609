package test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/netns"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/ring"
)

// startReplicatedCluster starts n nodes with --room-replicas replicas (and extra flags), and a
// router.
func startReplicatedCluster(t *testing.T, n, replicas int, extra ...string) ([]*proc.Proc, *proc.Proc) {
	t.Helper()
	return startProcClusterWithRouter(t, n, append([]string{"--room-replicas", fmt.Sprint(replicas)}, extra...)...)
}

// traffic runs, for every room, a subscriber and a publisher (ids, 5 s per ack) through each of
// doors, logged for the history checker, until stop is called.
func traffic(t *testing.T, rooms map[string]string, doors ...*proc.Proc) (h *history, stop func()) {
	t.Helper()
	h = &history{}
	ctx, cancel := context.WithCancel(t.Context())
	var clients sync.WaitGroup
	for room := range rooms {
		for _, at := range doors {
			who := room + "@" + at.ID
			opts := func(role string, discard bool) *client.Options {
				return &client.Options{ClientID: who + "-" + role, Discard: discard, MaxReconnectDelay: 200 * time.Millisecond}
			}
			sub, err := client.Dial(t.Context(), at.URL(), room, opts("sub", false))
			if err != nil {
				t.Fatal(err)
			}
			pub, err := client.Dial(t.Context(), at.URL(), room, opts("pub", true))
			if err != nil {
				t.Fatal(err)
			}
			clients.Go(func() { defer sub.Close(); h.subscribe(ctx, who+"-sub", room, sub) })
			clients.Go(func() {
				defer pub.Close()
				for i := 0; ctx.Err() == nil; i++ {
					_ = h.publish(ctx, who+"-pub", room, pub, fmt.Sprintf("%s-%d", who, i), 5*time.Second)
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
	}
	return h, func() { cancel(); clients.Wait() }
}

// invisible fails t unless the history shows nothing of the crashes it lived through: no reset,
// no fork, no jump, nothing doubled, every acked message at every subscriber, and acks after at.
func invisible(t *testing.T, h *history, at time.Time) {
	t.Helper()
	v := h.check(0, time.Second)
	t.Logf("history: %s", v)
	for _, d := range v.details {
		t.Logf("  %s", d)
	}
	if v.acks == 0 || v.deliveries == 0 {
		t.Fatalf("the checker saw no traffic: %s", v)
	}
	if v.forks+v.jumps+v.twice+v.lost+v.resets != 0 || v.overlap != 0 {
		t.Fatalf("a crash with replication on must be invisible: %s", v)
	}
	h.mu.Lock()
	after := 0
	var first time.Time
	for _, r := range h.records {
		if r.kind == "ack" && r.at.After(at) {
			after++
			if first.IsZero() || r.at.Before(first) {
				first = r.at
			}
		}
	}
	h.mu.Unlock()
	if after == 0 {
		t.Fatal("no publish was acked after the last kill")
	}
	t.Logf("the first ack after the last kill came %s after it", first.Sub(at).Round(10*time.Millisecond))
}

// kill9 kills p and waits until the others agree on a ring of the nodes left, returning when
// it was killed.
func kill9(t *testing.T, p *proc.Proc, others []*proc.Proc, nodes int) time.Time {
	t.Helper()
	p.Signal(syscall.SIGKILL)
	<-p.Exited()
	at := time.Now()
	proc.WaitRingT(t, others, nodes)
	t.Logf("the survivors placed the rooms without %s %s after the kill", p.ID, time.Since(at).Round(10*time.Millisecond))
	return at
}

// heirsOf are room's owner and heirs (n of them in all) by the placement of nodes' ids.
func heirsOf(room string, n int, ids ...string) []string {
	var ms []ring.Member
	for _, id := range ids {
		ms = append(ms, ring.Member{ID: id, State: ring.StateAlive, Meta: ring.Meta{Role: ring.RoleNode}})
	}
	var out []string
	for _, m := range ring.NewPlacement(ms, ring.DefaultPlacementConfig()).Heirs(room, n) {
		out = append(out, m.ID)
	}
	return out
}

// TestCrashLosesNothingAcknowledged: with one replica per room, kill -9 the owner of six rooms
// mid-traffic. Its heirs serve the rooms in the same epoch with every acked message: no client
// sees a reset, none misses an acked message or gets one twice, and a publish is acked once.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	nodes, rt := startReplicatedCluster(t, 3, 1)
	rooms := roomsByOwner(t, rt, "rep-", 6, nodes[0].ID)
	h, stop := traffic(t, rooms, rt, nodes[1])
	time.Sleep(1500 * time.Millisecond)
	killed := kill9(t, nodes[0], []*proc.Proc{nodes[1], nodes[2], rt}, 2)
	time.Sleep(3 * time.Second)
	stop()
	invisible(t, h, killed)
}

// TestReplicaCrashThenOwnerCrash: kill -9 the heir of four rooms (not their owner): their acks
// wait only until the ring declares it dead, then a new heir is seeded; kill -9 the owner then,
// and the new heir serves the rooms with everything acked, before and after the first kill.
func TestReplicaCrashThenOwnerCrash(t *testing.T) {
	nodes, rt := startReplicatedCluster(t, 3, 1)
	ids := []string{nodes[0].ID, nodes[1].ID, nodes[2].ID}
	rooms := map[string]string{}
	for i := 0; len(rooms) < 4; i++ {
		room := fmt.Sprint("heir-", i)
		if hs := heirsOf(room, 2, ids...); hs[0] == ids[0] && hs[1] == ids[1] {
			rooms[room] = ids[0]
		}
	}
	h, stop := traffic(t, rooms, rt)
	time.Sleep(time.Second)
	kill9(t, nodes[1], []*proc.Proc{nodes[0], nodes[2], rt}, 2)
	wait.Eventually(t, 15*time.Second, "the owner's rooms replicated again", func() bool {
		v, err := unlabelled(nodes[0], "roost_rooms_under_replicated")
		return err == nil && v == 0
	})
	time.Sleep(time.Second)
	killed := kill9(t, nodes[0], []*proc.Proc{nodes[2], rt}, 1)
	// The router's legs, broken since the kill, re-dial on a backoff of up to 1 s: 3 s leaves
	// room for one more round after the heir serves (2 s was short in 1 run of 14).
	time.Sleep(3 * time.Second)
	stop()
	invisible(t, h, killed)
}

// TestTwoReplicasSurviveTwoKills: with --room-replicas 2, kill -9 a room's owner and its first
// heir at once; the second heir serves it, in the same epoch, with every acked message.
func TestTwoReplicasSurviveTwoKills(t *testing.T) {
	nodes, rt := startReplicatedCluster(t, 4, 2)
	ids := []string{nodes[0].ID, nodes[1].ID, nodes[2].ID, nodes[3].ID}
	rooms := map[string]string{}
	for i := 0; len(rooms) < 4; i++ {
		room := fmt.Sprint("two-", i)
		if hs := heirsOf(room, 2, ids...); hs[0] == ids[0] && hs[1] == ids[1] {
			rooms[room] = ids[0]
		}
	}
	h, stop := traffic(t, rooms, rt)
	time.Sleep(1500 * time.Millisecond)
	nodes[0].Signal(syscall.SIGKILL)
	killed := kill9(t, nodes[1], []*proc.Proc{nodes[2], nodes[3], rt}, 2)
	time.Sleep(3 * time.Second)
	stop()
	invisible(t, h, killed)
}

// TestNamedSourceSurvivesACrash: a TCP source that names itself streams into a room whose owner
// is killed mid-stream. It reconnects to the heir, hears how many of its frames the room holds
// ("OK <seq> <held>") and resends exactly the rest: a subscriber through the router gets every
// frame once, in order, in one epoch.
func TestNamedSourceSurvivesACrash(t *testing.T) {
	nodes, rt := startReplicatedCluster(t, 3, 1)
	victim := nodes[0]
	var name string
	for room := range roomsByOwner(t, rt, "src-", 1, victim.ID) {
		name = room
	}
	sub, err := client.Dial(t.Context(), rt.URL(), name, &client.Options{ClientID: "watcher", MaxReconnectDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	src, err := client.OpenStream(t.Context(), rt.URL(), name, &client.StreamOptions{Source: "camera-1", DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const frames = 600
	sent := make(chan error, 1)
	go func() {
		for i := range frames {
			if i == frames/3 {
				victim.Signal(syscall.SIGKILL)
			}
			if err := src.Send(t.Context(), []byte(fmt.Sprintf("frame-%04d", i))); err != nil {
				sent <- err
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		sent <- src.Finish(t.Context())
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	next, epoch := 0, sub.Welcome().Epoch
	for next < frames {
		ev, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("after %d frames: %v", next, err)
		}
		switch ev.Type {
		case client.EventBinary:
			if want := fmt.Sprintf("frame-%04d", next); string(ev.Payload) != want {
				t.Fatalf("got %q, want %q: a frame lost or doubled across the crash", ev.Payload, want)
			}
			next++
		case client.EventReset, client.EventGap:
			t.Fatalf("after %d frames: %s (epoch %s)", next, ev.Type, epoch)
		}
	}
	if err := <-sent; err != nil {
		t.Fatalf("the source: %v", err)
	}
	if src.Moves() == 0 {
		t.Fatal("the source never reconnected: the kill did not reach its room")
	}
}

// TestOwnerCutFromItsReplica blocks node-to-node calls between four rooms' owner and their heir
// (in network namespaces; gossip flows, so the ring declares nobody dead). Acks stall, bounded
// by --replica-timeout, and the rooms are counted under-replicated; then they go on without the
// heir. Nothing forks, nothing acked is lost, no client sees a reset.
func TestOwnerCutFromItsReplica(t *testing.T) {
	cut := faultFor(t, 8*time.Second)
	net := netns.New(t, 4)
	nodes, rt := startNetCluster(t, net, 3, "--room-replicas", "1")
	ids := []string{nodes[0].ID, nodes[1].ID, nodes[2].ID}
	rooms := map[string]string{}
	for i := 0; len(rooms) < 4; i++ {
		room := fmt.Sprint("cut-", i)
		if hs := heirsOf(room, 2, ids...); hs[0] == ids[0] && hs[1] == ids[1] {
			rooms[room] = ids[0]
		}
	}
	h, stop := traffic(t, rooms, rt)
	time.Sleep(time.Second)
	undo := net.BlockTCP(9000, net.Hosts()[0], net.Hosts()[1])
	blocked := time.Now()
	wait.Eventually(t, 30*time.Second, "the owner counts its rooms under-replicated", func() bool {
		v, err := unlabelled(nodes[0], "roost_rooms_under_replicated")
		return err == nil && v >= float64(len(rooms))
	})
	t.Logf("rooms counted under-replicated %s after the block", time.Since(blocked).Round(10*time.Millisecond))
	time.Sleep(time.Until(blocked.Add(cut)))
	undo()
	time.Sleep(2 * time.Second)
	stop()
	v := h.check(0, time.Second)
	t.Logf("history: %s", v)
	if v.forks+v.jumps+v.twice+v.lost+v.resets != 0 || v.overlap != 0 {
		t.Fatalf("history violations: %s", v)
	}
	// The longest gap between two acks of one publisher spans the stall.
	h.mu.Lock()
	last, longest := map[string]time.Time{}, time.Duration(0)
	for _, r := range h.records {
		if r.kind != "ack" {
			continue
		}
		if at, ok := last[r.who]; ok && r.at.Sub(at) > longest {
			longest = r.at.Sub(at)
		}
		last[r.who] = r.at
	}
	h.mu.Unlock()
	t.Logf("acks stalled %s at most (--replica-timeout 5s)", longest.Round(10*time.Millisecond))
	if longest > 9*time.Second {
		t.Fatalf("acks stalled %s: longer than --replica-timeout allows", longest)
	}
}

// TestDrainToTheReplicaSendsTheTail: a planned hand-off to a node that already holds the room
// as its replica is a promotion: the drained owner sends only the messages the replica lacked
// (its log says "sent=tail"), and the room goes on there in the same epoch with its whole
// history, which a client resuming from seq 0 gets, each message once.
func TestDrainToTheReplicaSendsTheTail(t *testing.T) {
	nodes, rt := startReplicatedCluster(t, 3, 1, "--log-level", "info")
	var name string
	for room := range roomsByOwner(t, rt, "tail-", 1, nodes[0].ID) {
		name = room
	}
	pub, err := client.Dial(t.Context(), rt.URL(), name, &client.Options{ClientID: "pub", Discard: true, MaxReconnectDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	const msgs = 200
	for i := range msgs {
		if _, err := pub.PublishID(t.Context(), fmt.Sprintf("m-%d", i), map[string]any{"n": i, "pad": strings.Repeat("x", 500)}); err != nil {
			t.Fatal(err)
		}
	}
	epoch := pub.Welcome().Epoch
	nodes[0].Stop(30 * time.Second)
	if !strings.Contains(nodes[0].Log(), "sent=tail") {
		t.Fatalf("the drained owner sent the room whole to its replica:\n%s", nodes[0].Log())
	}
	since := uint64(0)
	late, err := client.Dial(t.Context(), rt.URL(), name, &client.Options{ClientID: "late", Since: &since, Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if w := late.Welcome(); w.Epoch != epoch || w.Seq != msgs {
		t.Fatalf("after the drain the room is at %s/%d, want %s/%d", w.Epoch, w.Seq, epoch, msgs)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for want := uint64(1); want <= msgs; want++ {
		ev, err := late.Next(ctx)
		if err != nil {
			t.Fatalf("replay after seq %d: %v", want-1, err)
		}
		if ev.Type != client.EventMessage || ev.Seq != want {
			t.Fatalf("replay: got %s seq %d, want message %d", ev.Type, ev.Seq, want)
		}
	}
}

// TestKillDuringADrain: kill -9 a node while it drains, the moment the receiver has installed
// its rooms (the sender may not have the reply yet), and, in a second cluster, that receiver at
// the same moment. Rooms are served by the receiver, or promoted from their replicas: in both,
// nothing acked is lost, nothing doubled, no reset.
func TestKillDuringADrain(t *testing.T) {
	for _, end := range []string{"sender", "receiver"} {
		t.Run(end, func(t *testing.T) {
			nodes, rt := startReplicatedCluster(t, 3, 1, "--log-level", "info")
			ids := []string{nodes[0].ID, nodes[1].ID, nodes[2].ID}
			rooms := map[string]string{}
			for i := 0; len(rooms) < 12; i++ {
				room := fmt.Sprint("drainkill-", i)
				if hs := heirsOf(room, 2, ids...); hs[0] == ids[0] && hs[1] == ids[1] {
					rooms[room] = ids[0]
				}
			}
			h, stop := traffic(t, rooms, rt)
			time.Sleep(1500 * time.Millisecond)
			nodes[0].Signal(syscall.SIGTERM)
			wait.Eventually(t, 10*time.Second, "the receiver to install a room of the drain", func() bool {
				return strings.Contains(nodes[1].Log(), `msg="room arrived"`)
			})
			victim, others := nodes[0], []*proc.Proc{nodes[1], nodes[2], rt}
			if end == "receiver" {
				victim, others = nodes[1], []*proc.Proc{nodes[2], rt}
			}
			killed := kill9(t, victim, others, 1+map[string]int{"sender": 1, "receiver": 0}[end])
			time.Sleep(3 * time.Second)
			stop()
			invisible(t, h, killed)
		})
	}
}

// TestKillWhileReseeding: four nodes, one replica per room. Kill -9 the replica of an owner's
// rooms (heavy ones among them, so that seeding their next heir takes a while), and kill that
// next heir the moment the owner counts its rooms under-replicated — in the middle of seeding
// it. The owner seeds the heir after it, and once that one holds every room the owner is killed
// too: the last node serves every room in its epoch with every acked message, which holds only
// if what the re-seeding built is whole.
func TestKillWhileReseeding(t *testing.T) {
	nodes, rt := startReplicatedCluster(t, 4, 1, "--room-create-rate", "0")
	owner, replica, next, last := nodes[0], nodes[1], nodes[2], nodes[3]
	ids := []string{owner.ID, replica.ID, next.ID, last.ID}
	chain := func(room string) bool {
		hs := heirsOf(room, 4, ids...)
		return hs[0] == owner.ID && hs[1] == replica.ID && hs[2] == next.ID
	}
	rooms := map[string]string{}
	for i := 0; len(rooms) < 4; i++ {
		if room := fmt.Sprint("reseed-", i); chain(room) {
			rooms[room] = owner.ID
		}
	}
	// Ballast: rooms of the same chain with about 160 KB of history each.
	var ballast []string
	for i := 0; len(ballast) < 60; i++ {
		if room := fmt.Sprint("reseed-ballast-", i); chain(room) {
			ballast = append(ballast, room)
		}
	}
	blob := strings.Repeat("x", 8000)
	var fill sync.WaitGroup
	errs := make(chan error, len(ballast))
	for _, room := range ballast {
		fill.Go(func() {
			c, err := client.Dial(t.Context(), owner.URL(), room, &client.Options{Discard: true})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for i := range 20 {
				if _, err := c.PublishID(t.Context(), fmt.Sprint("b", i), blob); err != nil {
					errs <- fmt.Errorf("ballast %s: %w", room, err)
					return
				}
			}
		})
	}
	fill.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	h, stop := traffic(t, rooms, rt, last)
	time.Sleep(time.Second)
	replica.Signal(syscall.SIGKILL)
	<-replica.Exited()
	wait.Eventually(t, 15*time.Second, "the owner counts rooms under-replicated (seeding the next heir)", func() bool {
		v, err := unlabelled(owner, "roost_rooms_under_replicated")
		return err == nil && v > 0
	})
	killed := kill9(t, next, []*proc.Proc{owner, last, rt}, 2)
	wait.Eventually(t, 30*time.Second, "the owner's rooms replicated on the last node", func() bool {
		v, err := unlabelled(owner, "roost_rooms_under_replicated")
		return err == nil && v == 0
	})
	t.Logf("the second kill came while %s counted rooms under-replicated; re-seeded on %s %s after it",
		owner.ID, last.ID, time.Since(killed).Round(10*time.Millisecond))
	time.Sleep(time.Second)
	killed = kill9(t, owner, []*proc.Proc{last, rt}, 1)
	time.Sleep(2 * time.Second)
	stop()
	invisible(t, h, killed)
	for _, room := range ballast[:5] {
		c, err := client.Dial(t.Context(), last.URL(), room, &client.Options{Discard: true})
		if err != nil {
			t.Fatal(err)
		}
		if w := c.Welcome(); w.Seq != 20 || w.Node != last.ID {
			t.Errorf("ballast room %s on %s at seq %d, want %s at 20", room, w.Node, w.Seq, last.ID)
		}
		c.Close()
	}
}
