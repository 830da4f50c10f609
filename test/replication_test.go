package test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/proc"
)

// startReplicatedCluster starts n nodes with --room-replicas replicas, and a router.
func startReplicatedCluster(t *testing.T, n, replicas int) ([]*proc.Proc, *proc.Proc) {
	t.Helper()
	var nodes []*proc.Proc
	for i := 1; i <= n; i++ {
		join := ""
		if i > 1 {
			join = nodes[0].Gossip
		}
		nodes = append(nodes, startProc(t, "node", fmt.Sprintf("n%d", i), join, "--room-replicas", fmt.Sprint(replicas)))
	}
	rt := startProc(t, "router", "r1", nodes[0].Gossip)
	proc.WaitRingT(t, append(nodes, rt), n)
	return nodes, rt
}

// TestCrashLosesNothingAcknowledged: with one replica per room, kill -9 the owner of six rooms
// mid-traffic. Its heirs serve the rooms in the same epoch with every acked message: no client
// sees a reset, none misses an acked message or gets one twice, and a publish is acked once.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	nodes, rt := startReplicatedCluster(t, 3, 1)
	victim := nodes[0]
	rooms := roomsByOwner(t, rt, "rep-", 6, victim.ID)
	var h history
	traffic, stop := context.WithCancel(t.Context())
	var clients sync.WaitGroup
	for room := range rooms {
		for _, at := range []*proc.Proc{rt, nodes[1]} {
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
			clients.Go(func() { defer sub.Close(); h.subscribe(traffic, who+"-sub", room, sub) })
			clients.Go(func() {
				defer pub.Close()
				for i := 0; traffic.Err() == nil; i++ {
					_ = h.publish(traffic, who+"-pub", room, pub, fmt.Sprintf("%s-%d", who, i), 5*time.Second)
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
	}
	time.Sleep(1500 * time.Millisecond)
	victim.Signal(syscall.SIGKILL)
	<-victim.Exited()
	killed := time.Now()
	proc.WaitRingT(t, []*proc.Proc{nodes[1], nodes[2], rt}, 2)
	t.Logf("the survivors placed the rooms without %s %s after the kill", victim.ID, time.Since(killed).Round(10*time.Millisecond))
	time.Sleep(3 * time.Second)
	stop()
	clients.Wait()

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
	for _, r := range h.records {
		if r.kind == "ack" && r.at.After(killed) {
			after++
		}
	}
	h.mu.Unlock()
	if after == 0 {
		t.Fatal("no publish was acked after the kill")
	}
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
