package test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roost-dev/roost/internal/netns"
	"github.com/roost-dev/roost/internal/proc"
)

// TestFaultJoinsRacingDrains: rounds (3, or as many as fit in ROOST_FAULT_SECONDS) of two nodes
// joining while two others drain 150–300 ms later (or 0–150 ms earlier), the shape of a
// Kubernetes rollout, with
// fresh clients arriving every 100 ms and logged traffic through the router and directly. Each
// round ends when every member agrees on the ring; the history must hold throughout. (Unlike
// TestJoinsRacingAHandOff, where clients join one room during one hand-off, here nodes join.)
func TestFaultJoinsRacingDrains(t *testing.T) {
	total := faultFor(t, time.Second)
	net := netns.New(t, 6)
	hosts := net.Hosts()
	nodes, rt := startNetCluster(t, net, 3)
	nodeHosts := []*netns.Host{hosts[0], hosts[1], hosts[2], hosts[4], hosts[5]}
	on := map[*netns.Host]*proc.Proc{hosts[0]: nodes[0], hosts[1]: nodes[1], hosts[2]: nodes[2]}
	var urls []string
	for _, h := range nodeHosts {
		urls = append(urls, "http://"+h.Addr+":9000")
	}
	rooms := roomsByOwner(t, rt, "rollout-", 4, "n1", "n2", "n3")
	// Straight to any node's address, whichever node runs there by then (it redirects to the
	// owner), the others as fallbacks: fresh clients reach nodes that have just joined, as a
	// load balancer sends them to new pods, before those hold the rooms they gained.
	load := startLoad(t, rt, rooms, func(string) (string, []string) {
		return urls[rand.IntN(len(urls))], urls
	}, true)
	time.Sleep(time.Second)
	start, next := time.Now(), 4
	for round := 0; round < 3 || time.Since(start) < total; round++ {
		var free []*netns.Host
		for _, h := range nodeHosts {
			if on[h] == nil {
				free = append(free, h)
			}
		}
		old := nodes[:2]
		var joined, drained sync.WaitGroup
		var mu sync.Mutex
		join := func() {
			for _, h := range free[:2] {
				id := fmt.Sprint("n", next)
				next++
				joined.Go(func() {
					p, err := proc.Start(t.Context(), proc.Spec{Binary: proc.Roost(t), Role: "node", ID: id, Join: nodes[2].Gossip,
						Host: h.Addr, Wrap: h.Command(), Args: faultArgs("node"), HTTP: quickHTTP})
					if err != nil {
						t.Errorf("join %s: %v", id, err)
						return
					}
					t.Cleanup(func() {
						p.Kill()
						if t.Failed() {
							t.Logf("log of %s:\n%s", id, p.Log())
						}
					})
					mu.Lock()
					on[h] = p
					mu.Unlock()
				})
			}
		}
		drain := func() {
			for _, p := range old {
				drained.Go(func() {
					began := time.Now()
					p.Stop(60 * time.Second)
					t.Logf("round %d: %s drained in %s, exit code %d", round, p.ID, time.Since(began).Round(10*time.Millisecond), p.ExitCode())
				})
			}
		}
		// Every other round the drains go first: the newcomers then never see the drainers as
		// owners, only as draining.
		if round%2 == 0 {
			join()
			time.Sleep(150*time.Millisecond + rand.N(150*time.Millisecond))
			drain()
		} else {
			drain()
			time.Sleep(rand.N(150 * time.Millisecond))
			join()
		}
		joined.Wait()
		drained.Wait()
		if t.Failed() {
			t.FailNow()
		}
		nodes = nil
		for _, h := range nodeHosts {
			if p := on[h]; p != nil && slices.Contains(old, p) {
				on[h] = nil
			} else if p != nil {
				nodes = append(nodes, p)
			}
		}
		took := waitOneCopy(t, nodes, rt, len(rooms), 30*time.Second)
		t.Logf("round %d: one ring of %d nodes and one copy of each room %s after the drains", round, len(nodes), took.Round(100*time.Millisecond))
	}
	time.Sleep(2 * time.Second)
	load.finish(t, time.Second)
}
