package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// benchStorm connects many clients at once, as after a node dies and its clients all come back,
// and measures upgrades per second per server core (the server's own CPU time), the p99 time
// from dial to welcome (retries after a 503 included), how many were refused and retried, and
// the ramp: the share welcomed by each mark. The size is 20,000; it takes as many
// as the file limit allows.
func benchStorm(ctx context.Context, quick bool) ([]benchRow, error) {
	n := min(20_000, fileLimit()-3000)
	if quick {
		n = 1000
	}
	node, err := startBenchNode(ctx)
	if err != nil {
		return nil, err
	}
	defer node.Stop(stopTimeout)
	base := "ws://" + node.HTTP
	// The rooms exist already, as they would after a failover: the storm is about upgrades.
	for r := range 100 {
		ws, _, err := dialer(r).DialContext(ctx, fmt.Sprintf("%s/v1/rooms/storm-%d/ws", base, r), nil)
		if err != nil {
			return nil, err
		}
		defer ws.Close()
	}
	conns := make([]*websocket.Conn, n)
	took := make([]time.Duration, n)
	failed, retried := 0, 0
	var mu sync.Mutex
	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	for i := range n {
		wg.Go(func() {
			d := dialer(i)
			d.HandshakeTimeout = 30 * time.Second
			ready.Done()
			<-start
			t0 := time.Now()
			ws, tries, err := dialStorm(ctx, d, fmt.Sprintf("%s/v1/rooms/storm-%d/ws", base, i%100))
			took[i] = time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			retried += tries - 1
			if err != nil {
				failed++
				return
			}
			conns[i] = ws
		})
	}
	ready.Wait()
	cpu0, err := cpuTime(node.Pid())
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	wall := time.Since(t0)
	cpu1, _ := cpuTime(node.Pid())
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	ok := n - failed
	slices.Sort(took)
	p99 := float64(took[n*99/100].Microseconds()) / 1000
	perCore := float64(ok) / max((cpu1-cpu0).Seconds(), 0.001)
	// The ramp: how many had their welcome by each mark, from the moment all dialed at once.
	ramp := map[string]float64{}
	for _, mark := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second} {
		at, _ := slices.BinarySearch(took, mark)
		ramp["welcomed_by_"+mark.String()] = float64(at) / float64(n)
	}
	ramp["p50_ms"] = float64(took[n/2].Microseconds()) / 1000
	name := fmt.Sprintf("reconnect storm %d", n)
	return []benchRow{
		{Workload: name, Metric: "upgrades/s per server core", Roost: perCore, Goal: "≥ 10000, none lost", Met: perCore >= 10_000 && failed == 0,
			Detail: map[string]float64{"upgrades_per_s_wall": float64(ok) / wall.Seconds(), "lost": float64(failed),
				"refused_then_retried": float64(retried), "server_cpu_s": (cpu1 - cpu0).Seconds()}},
		{Workload: name, Metric: "p99 ms dial → welcome", Roost: p99, Goal: "≤ 50 ms", Met: p99 <= 50, Detail: ramp},
	}, nil
}

// dialStorm dials u and reads the welcome; a 503 with Retry-After (the member has as many
// handshakes in progress as --max-handshakes allows) is tried again after that wait with
// jitter, as roost's clients do. It returns the attempts made.
func dialStorm(ctx context.Context, d *websocket.Dialer, u string) (*websocket.Conn, int, error) {
	for tries := 1; ; tries++ {
		ws, resp, err := d.DialContext(ctx, u, nil)
		if err == nil {
			_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, _, err = ws.ReadMessage(); err != nil { // the welcome
				ws.Close()
				return nil, tries, err
			}
			return ws, tries, nil
		}
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			return nil, tries, err
		}
		after, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		wait := time.Duration(max(after, 1)) * time.Second
		select {
		case <-ctx.Done():
			return nil, tries, ctx.Err()
		case <-time.After(wait + rand.N(wait)):
		}
	}
}
