package test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/testcluster"
)

// TestDrainLiveRooms drains a node holding live rooms (each with a client and some history) and
// reports how long the drain took and how long each hand-off batch kept its rooms frozen, which
// bounds the write pause of every room in it. ROOST_DRAIN_ROOMS sets the number of rooms across
// the cluster (default 300; the figures in the README use 3000, about 1000 on the drained node).
func TestDrainLiveRooms(t *testing.T) {
	rooms := 300
	if v, err := strconv.Atoi(os.Getenv("ROOST_DRAIN_ROOMS")); err == nil && v > 0 {
		rooms = v
	}
	c := testcluster.New(t, testcluster.Config{Nodes: 3, Routers: 0})
	victim := c.Nodes()[0]
	var wg sync.WaitGroup
	conns := make([]*client.Conn, rooms)
	epochs := make([]string, rooms) // each room's epoch, as its publisher's welcome gave it
	for i := range rooms {
		wg.Go(func() {
			conn, err := client.Dial(t.Context(), c.Nodes()[i%3].URL(), fmt.Sprint("drain-", i), &client.Options{Discard: true})
			if err != nil {
				t.Error(err)
				return
			}
			conns[i], epochs[i] = conn, conn.Welcome().Epoch
			for k := range 5 {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				if _, err := conn.Publish(ctx, map[string]any{"k": k, "pad": "0123456789abcdef0123456789abcdef"}); err != nil {
					t.Errorf("room drain-%d, publish %d: %v", i, k, err)
				}
				cancel()
			}
		})
	}
	wg.Wait()
	moved := map[string]bool{}
	for _, r := range victim.Node.Rooms() {
		moved[r.Name] = true
	}
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	held := len(victim.Node.Rooms())
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	if err := victim.Node.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	p50, p99, batches := handoffQuantiles(t, victim.URL())
	t.Logf("drained %d live rooms in %s; %d hand-off batches, each freezing its rooms for p50 ≤ %s, p99 ≤ %s",
		held, took.Round(time.Millisecond), batches, p50, p99)

	// Every moved room lives on elsewhere as it was: its epoch, and its five messages in order,
	// replayed to a client resuming from the start of that epoch (no reset, no gap).
	zero := uint64(0)
	for i := range rooms {
		name := fmt.Sprint("drain-", i)
		if !moved[name] {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			conn, err := client.Dial(ctx, c.Nodes()[1].URL(), name, &client.Options{Since: &zero, Epoch: epochs[i], DisableReconnect: true})
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			if w := conn.Welcome(); w.Node == victim.ID || w.Epoch != epochs[i] || w.Seq != 5 {
				t.Errorf("%s after the drain: welcome %+v, want epoch %s seq 5 off %s", name, w, epochs[i], victim.ID)
				return
			}
			for k := range 5 {
				ev, err := conn.Next(ctx)
				if err != nil || ev.Type != client.EventMessage || ev.Seq != uint64(k+1) || !strings.Contains(string(ev.Data), fmt.Sprintf(`"k":%d`, k)) {
					t.Errorf("%s after the drain: event %d is %+v (%v), want message %d", name, k, ev, err, k+1)
					return
				}
			}
		})
	}
	wg.Wait()
	if len(moved) == 0 {
		t.Fatal("the drained node held no room: the test checked nothing")
	}
}

// handoffQuantiles reads the hand-off duration histogram from a node's /metrics and returns the
// bucket bounds holding its p50 and p99.
func handoffQuantiles(t *testing.T, base string) (p50, p99 time.Duration, count uint64) {
	t.Helper()
	families, err := scrape(base)
	if err != nil {
		t.Fatal(err)
	}
	f := families["roost_handoff_duration_seconds"]
	if f == nil || len(f.Metric) == 0 {
		t.Fatal("no roost_handoff_duration_seconds")
	}
	h := f.Metric[0].GetHistogram()
	count = h.GetSampleCount()
	buckets := h.GetBucket()
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].GetUpperBound() < buckets[j].GetUpperBound() })
	at := func(q float64) time.Duration {
		for _, b := range buckets {
			if float64(b.GetCumulativeCount()) >= q*float64(count) {
				return time.Duration(b.GetUpperBound() * float64(time.Second))
			}
		}
		return -1
	}
	return at(0.5), at(0.99), count
}
