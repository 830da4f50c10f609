package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/protocol"
)

// benchFailure kills a node (kill -9) of a cluster of 3 and of 5, trials times each, with the
// default failure-detection settings, and measures how long until every survivor marks it dead
// and until one of its rooms is served again by its new owner. After each trial a fresh node
// joins in its place.
func benchFailure(ctx context.Context, quick bool, nodeFlags []string) ([]benchRow, error) {
	trials := 20
	if quick {
		trials = 3
	}
	var rows []benchRow
	for _, n := range []int{3, 5} {
		dead, served, err := failureTrials(ctx, n, trials, nodeFlags)
		if err != nil {
			return nil, fmt.Errorf("%d nodes: %w", n, err)
		}
		p99 := func(ds []time.Duration) float64 {
			slices.Sort(ds)
			return ds[min(len(ds)-1, len(ds)*99/100)].Seconds()
		}
		p50 := func(ds []time.Duration) float64 { slices.Sort(ds); return ds[len(ds)/2].Seconds() }
		gap := make([]time.Duration, len(dead))
		for i := range dead {
			gap[i] = served[i] - dead[i]
		}
		name := fmt.Sprintf("kill -9, 1 of %d (%d trials)", n, trials)
		rows = append(rows,
			benchRow{Workload: name, Metric: "p99 s to dead on all", Roost: p99(dead), Goal: "≤ 2 s", Met: p99(dead) <= 2,
				Detail: map[string]float64{"p50_s": p50(dead)}},
			benchRow{Workload: name, Metric: "p99 s dead → served", Roost: p99(gap), Goal: "≤ 0.5 s", Met: p99(gap) <= 0.5,
				Detail: map[string]float64{"p50_s": p50(gap), "p99_s_to_served": p99(served)}})
	}
	return rows, nil
}

func failureTrials(ctx context.Context, n, trials int, nodeFlags []string) (dead, served []time.Duration, err error) {
	start := func(id, join string) (*proc.Proc, error) {
		return startRoost(ctx, "node", id, join, append([]string{"--log-level", "error"}, nodeFlags...)...)
	}
	var nodes []*proc.Proc
	defer func() {
		for _, s := range nodes {
			s.Stop(stopTimeout)
		}
	}()
	seed := ""
	for i := range n {
		s, err := start(fmt.Sprintf("f%d", i+1), seed)
		if err != nil {
			return nil, nil, err
		}
		nodes = append(nodes, s)
		if seed == "" {
			seed = s.Gossip
		}
	}
	hc := &http.Client{Timeout: time.Second}
	for trial := range trials {
		if err := proc.WaitRing(ctx, nodes, n, 30*time.Second); err != nil {
			return nil, nil, err
		}
		victim, survivors := nodes[len(nodes)-1], nodes[:len(nodes)-1]
		vid := victim.ID
		room, err := roomOn(hc, survivors[0], vid)
		if err != nil {
			return nil, nil, err
		}
		t0 := time.Now()
		victim.Kill()
		nodes = survivors
		var tDead time.Duration
		for tDead == 0 {
			if time.Since(t0) > 30*time.Second {
				return nil, nil, fmt.Errorf("trial %d: %s not declared dead within 30s", trial, vid)
			}
			all := true
			for _, s := range survivors {
				all = all && s.State(vid) == "dead"
			}
			if all {
				tDead = time.Since(t0)
			}
			time.Sleep(10 * time.Millisecond)
		}
		for {
			if time.Since(t0) > 30*time.Second {
				return nil, nil, fmt.Errorf("trial %d: room %s not served again within 30s", trial, room)
			}
			if servedElsewhere(ctx, survivors[0], room, vid) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		dead, served = append(dead, tDead), append(served, time.Since(t0))
		s, err := start(fmt.Sprintf("f%d-%d", n, trial), seed)
		if err != nil {
			return nil, nil, err
		}
		nodes = append(nodes, s)
	}
	return dead, served, nil
}

// roomOn finds a room that node id owns, asking s (which follows its redirect).
func roomOn(hc *http.Client, s *proc.Proc, id string) (string, error) {
	for i := range 10_000 {
		room := fmt.Sprint("failure-", i)
		resp, err := hc.Get(s.URL() + "/v1/rooms/" + room)
		if err != nil {
			return "", err
		}
		var o protocol.Owner
		err = json.NewDecoder(resp.Body).Decode(&o)
		resp.Body.Close()
		if err == nil && o.Node == id {
			return room, nil
		}
	}
	return "", fmt.Errorf("no room owned by %s", id)
}

// servedElsewhere reports whether room's WebSocket, reached through s, welcomes a client on a
// node other than gone.
func servedElsewhere(ctx context.Context, s *proc.Proc, room, gone string) bool {
	d := websocket.Dialer{HandshakeTimeout: 500 * time.Millisecond}
	u := "ws://" + s.HTTP + "/v1/rooms/" + room + "/ws"
	for range 3 { // follow the redirect to the owner, as the Go client does
		ws, resp, err := d.DialContext(ctx, u, nil)
		if err == nil {
			defer ws.Close()
			var w protocol.Welcome
			_ = ws.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			return ws.ReadJSON(&w) == nil && w.Node != gone
		}
		if resp == nil || resp.StatusCode != http.StatusTemporaryRedirect {
			return false
		}
		u = resp.Header.Get("Location")
	}
	return false
}
