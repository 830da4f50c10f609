package main

import (
	"context"
	"fmt"
	"time"

	"github.com/gorilla/websocket"
)

// benchHandshake times a client's handshake, from dial to the room's welcome, straight to the
// owner and through a router, one client at a time and alternating between the two so that
// machine noise falls on both alike. Each client opens a room of its own, so both paths create a
// room; the router's path also dials the owner.
func benchHandshake(ctx context.Context, quick bool) ([]benchRow, error) {
	n := 400
	if quick {
		n = 50
	}
	node, rt, stop, err := startBenchPair(ctx)
	if err != nil {
		return nil, err
	}
	defer stop()

	dialer := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	handshake := func(base, room string) (time.Duration, error) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		start := time.Now()
		ws, _, err := dialer.DialContext(cctx, base+"/v1/rooms/"+room+"/ws", nil)
		if err != nil {
			return 0, err
		}
		defer ws.Close()
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := ws.ReadMessage(); err != nil { // the welcome
			return 0, err
		}
		return time.Since(start), nil
	}
	direct, routed := "ws://"+node.HTTP, "ws://"+rt.HTTP
	// The router learns of the node by gossip: wait until it routes.
	for deadline := time.Now().Add(15 * time.Second); ; {
		if _, err := handshake(routed, "hs-warmup"); err == nil {
			break
		} else if time.Now().After(deadline) {
			return nil, fmt.Errorf("handshake through the router: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	measure := func(room func(i int) string) (viaDirect, viaRouter []time.Duration, err error) {
		for i := range n {
			for _, path := range []struct {
				base string
				took *[]time.Duration
			}{{direct, &viaDirect}, {routed, &viaRouter}} {
				d, err := handshake(path.base, room(i))
				if err != nil {
					return nil, nil, err
				}
				*path.took = append(*path.took, d)
			}
		}
		return viaDirect, viaRouter, nil
	}
	row := func(name string, viaDirect, viaRouter []time.Duration) benchRow {
		p50d, p50r := msAt(viaDirect, 0.5), msAt(viaRouter, 0.5)
		return benchRow{Workload: name, Metric: "p50 ms dial → welcome", Roost: p50r, Baseline: p50d, Ratio: p50r / p50d,
			Goal: "≤ 1.2× direct", Met: p50r <= 1.2*p50d,
			Detail: map[string]float64{"p99_ms_router": msAt(viaRouter, 0.99), "p99_ms_direct": msAt(viaDirect, 0.99)}}
	}
	// A new room each time: the router dials the room's edge leg for the client.
	d1, r1, err := measure(func(i int) string { return fmt.Sprintf("hs-%d", i) })
	if err != nil {
		return nil, err
	}
	rows := []benchRow{row(fmt.Sprintf("edge handshake, new room (%d each way)", n), d1, r1)}
	// A room with a client in it on each path: the router's leg is up, so the welcome comes over
	// it with no dial to the owner.
	for _, base := range []string{direct, routed} {
		hold, _, err := dialer.DialContext(ctx, base+"/v1/rooms/hs-shared/ws", nil)
		if err != nil {
			return rows, err
		}
		defer hold.Close()
	}
	d2, r2, err := measure(func(int) string { return "hs-shared" })
	if err != nil {
		return rows, err
	}
	return append(rows, row(fmt.Sprintf("edge handshake, leg present (%d each way)", n), d2, r2)), nil
}
