package main

import (
	"context"
	"fmt"
	"slices"
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
	node, err := startServer(ctx, append([]string{"node", "--id", "bench-n1", "--gossip", "127.0.0.1:0", "--tcp", "127.0.0.1:0"}, roostServerFlags...)...)
	if err != nil {
		return nil, err
	}
	defer node.stop()
	gossip, err := gossipOf(node)
	if err != nil {
		return nil, err
	}
	rt, err := startServer(ctx, "router", "--id", "bench-r1", "--gossip", "127.0.0.1:0", "--join", gossip,
		"--log-level", "warn", "--max-addr-conns", "1000000", "--probe-interval", "1s", "--probe-timeout", "500ms")
	if err != nil {
		return nil, err
	}
	defer rt.stop()

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
	direct, routed := "ws://"+node.addr, "ws://"+rt.addr
	// The router learns of the node by gossip: wait until it routes.
	for deadline := time.Now().Add(15 * time.Second); ; {
		if _, err := handshake(routed, "hs-warmup"); err == nil {
			break
		} else if time.Now().After(deadline) {
			return nil, fmt.Errorf("handshake through the router: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var viaDirect, viaRouter []time.Duration
	for i := range n {
		for _, path := range []struct {
			base string
			took *[]time.Duration
		}{{direct, &viaDirect}, {routed, &viaRouter}} {
			d, err := handshake(path.base, fmt.Sprintf("hs-%d-%d", i, len(*path.took)))
			if err != nil {
				return nil, err
			}
			*path.took = append(*path.took, d)
		}
	}
	ms := func(ds []time.Duration, q float64) float64 {
		slices.Sort(ds)
		return float64(ds[int(q*float64(len(ds)-1))]) / float64(time.Millisecond)
	}
	p50d, p50r := ms(viaDirect, 0.5), ms(viaRouter, 0.5)
	name := fmt.Sprintf("edge handshake (%d each way)", n)
	return []benchRow{{Workload: name, Metric: "p50 ms dial → welcome", Roost: p50r, Baseline: p50d, Ratio: p50r / p50d,
		Goal: "≤ 1.2× direct", Met: p50r <= 1.2*p50d,
		Detail: map[string]float64{"p99_ms_router": ms(viaRouter, 0.99), "p99_ms_direct": ms(viaDirect, 0.99)}}}, nil
}
