package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The server API workload: backends publishing over HTTP (keep-alive, one room each) into rooms
// with a WebSocket subscriber each, straight to the owner and through a router, in alternating
// phases so that machine noise falls on both alike. It measures publishes acknowledged per
// second, POST → ack and POST → delivered (at the subscriber) latency.

// apiPhase is one path's figures.
type apiPhase struct {
	acks      int64
	took      time.Duration
	ack, seen []time.Duration
}

func benchServerAPI(ctx context.Context, d time.Duration, quick bool) ([]benchRow, error) {
	publishers, rounds := 8, 3
	if quick {
		publishers, rounds = 4, 1
	}
	node, rt, stop, err := startBenchPair(ctx, "--api-publish-rate", "0")
	if err != nil {
		return nil, err
	}
	defer stop()

	rooms := make([]string, publishers)
	for i := range rooms {
		rooms[i] = fmt.Sprint("api-", i)
	}
	// Subscribers, on the owner: the POST → delivered time ends where a client reads it.
	var mu sync.Mutex
	var seen []time.Duration
	var readers sync.WaitGroup
	var subs []*websocket.Conn
	defer func() {
		for _, ws := range subs {
			ws.Close()
		}
		readers.Wait()
	}()
	for _, room := range rooms {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ws, resp, err := dialer(0).DialContext(cctx, "ws://"+node.HTTP+"/v1/rooms/"+room+"/ws", nil)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("subscribe to %s: %w%s", room, err, answer(resp))
		}
		subs = append(subs, ws)
		readers.Go(func() {
			for {
				_, b, err := ws.ReadMessage()
				if err != nil {
					return
				}
				if t, ok := sentAt(b); ok && bytes.HasPrefix(b, []byte(`{"type":"message"`)) {
					mu.Lock()
					seen = append(seen, time.Since(t))
					mu.Unlock()
				}
			}
		})
	}

	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = publishers
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	post := func(base, room string) (time.Duration, error) {
		body := fmt.Appendf(nil, `{"data":{"t":%d}}`, time.Now().UnixNano())
		start := time.Now()
		resp, err := hc.Post(base+"/v1/rooms/"+room+"/messages", "application/json", bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("POST %s: %s %s", room, resp.Status, b)
		}
		return time.Since(start), nil
	}
	direct, routed := "http://"+node.HTTP, "http://"+rt.HTTP
	// The router learns of the node by gossip: wait until it routes.
	for deadline := time.Now().Add(15 * time.Second); ; {
		if _, err := post(routed, rooms[0]); err == nil {
			break
		} else if time.Now().After(deadline) {
			return nil, fmt.Errorf("server API through the router: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	phase := func(base string, into *apiPhase) error {
		mu.Lock()
		seen = seen[:0]
		mu.Unlock()
		var acks atomic.Int64
		var wg sync.WaitGroup
		lat := make([][]time.Duration, len(rooms))
		errs := make([]error, len(rooms))
		start := time.Now()
		until := start.Add(d)
		for i, room := range rooms {
			wg.Go(func() {
				for time.Now().Before(until) && ctx.Err() == nil {
					took, err := post(base, room)
					if err != nil {
						errs[i] = err
						return
					}
					lat[i] = append(lat[i], took)
					acks.Add(1)
				}
			})
		}
		wg.Wait()
		into.took += time.Since(start)
		if err := errors.Join(errs...); err != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond) // the last deliveries land
		into.acks += acks.Load()
		for _, l := range lat {
			into.ack = append(into.ack, l...)
		}
		mu.Lock()
		into.seen = append(into.seen, seen...)
		mu.Unlock()
		return ctx.Err()
	}
	var viaDirect, viaRouter apiPhase
	for range rounds {
		if err := phase(direct, &viaDirect); err != nil {
			return nil, err
		}
		if err := phase(routed, &viaRouter); err != nil {
			return nil, err
		}
	}
	rateD := float64(viaDirect.acks) / viaDirect.took.Seconds()
	rateR := float64(viaRouter.acks) / viaRouter.took.Seconds()
	ackD, ackD99 := latencyMs(viaDirect.ack)
	ackR, ackR99 := latencyMs(viaRouter.ack)
	seenD, seenD99 := latencyMs(viaDirect.seen)
	seenR, seenR99 := latencyMs(viaRouter.seen)
	name := "server API publish (" + strconv.Itoa(publishers) + " keep-alive publishers, 1 room each)"
	return []benchRow{
		{Workload: name, Metric: "acks/s via router", Roost: rateR, Baseline: rateD, Ratio: rateR / rateD,
			Goal: "≥ 0.5× direct", Met: rateR >= 0.5*rateD, Detail: map[string]int64{"acks_router": viaRouter.acks, "acks_direct": viaDirect.acks}},
		{Workload: name, Metric: "p50 ms POST → ack via router", Roost: ackR, Baseline: ackD, Ratio: ackR / ackD,
			Goal: "≤ 2× direct", Met: ackR <= 2*ackD, Detail: map[string]float64{"p99_ms_router": ackR99, "p99_ms_direct": ackD99}},
		{Workload: name, Metric: "p50 ms POST → delivered via router", Roost: seenR, Baseline: seenD, Ratio: seenR / seenD,
			Goal: "≤ 2× direct", Met: seenR <= 2*seenD, Detail: map[string]float64{"p99_ms_router": seenR99, "p99_ms_direct": seenD99}},
	}, nil
}
