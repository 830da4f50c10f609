package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// benchStorm connects many clients at once, as after a node dies and its clients all come back,
// and measures upgrades per second per server core (the server's own CPU time), the p99 time
// from dial to welcome, and how many were refused. The size is 20,000; it takes as many
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
	refused := 0
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
			ws, _, err := d.DialContext(ctx, fmt.Sprintf("%s/v1/rooms/storm-%d/ws", base, i%100), nil)
			if err == nil {
				_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, _, err = ws.ReadMessage() // the welcome
			}
			took[i] = time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused++
				if ws != nil {
					ws.Close()
				}
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
	ok := n - refused
	slices.Sort(took)
	p99 := float64(took[n*99/100].Microseconds()) / 1000
	perCore := float64(ok) / max((cpu1-cpu0).Seconds(), 0.001)
	name := fmt.Sprintf("reconnect storm %d", n)
	return []benchRow{
		{Workload: name, Metric: "upgrades/s per server core", Roost: perCore, Goal: "≥ 10000, none refused", Met: perCore >= 10_000 && refused == 0,
			Detail: map[string]float64{"upgrades_per_s_wall": float64(ok) / wall.Seconds(), "refused": float64(refused), "server_cpu_s": (cpu1 - cpu0).Seconds()}},
		{Workload: name, Metric: "p99 ms dial → welcome", Roost: p99, Goal: "≤ 50 ms", Met: p99 <= 50,
			Detail: map[string]float64{"p50_ms": float64(took[n/2].Microseconds()) / 1000}},
	}, nil
}
