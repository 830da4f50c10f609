package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/protocol"
)

// detection is a set of failure-detection flags the failure and soak workloads run with, so the
// defaults can be measured against an alternative in the same run.
type detection struct {
	name string
	ring []string // for nodes and routers
	node []string // for nodes only
	goal bool     // its rows carry the goals (the defaults); the others are reported
}

// detections are the sets --detection names: the defaults (probes every 250 ms with a 150 ms
// timeout, a suspicion of 4 intervals up to twice that, gossip every 100 ms, the pause watchdog
// at 1 s), and the fast set (100 ms probes, 90 ms timeout, a fixed suspicion of 6 intervals,
// 50 ms gossip, the watchdog at 500 ms), which detects a kill in under a second where members
// are not starved, and turns starvation into false verdicts where they are.
var detections = map[string]detection{
	"default": {name: "default", goal: true},
	"fast": {name: "fast", ring: []string{"--probe-interval", "100ms", "--probe-timeout", "90ms",
		"--suspicion-mult", "6", "--suspicion-max-mult", "1", "--gossip-interval", "50ms"}, node: []string{"--stale-after", "500ms"}},
}

// parseDetections reads --detection: comma-separated names of detections, or name=flags for a
// set of one's own ("try=--probe-interval 200ms --suspicion-mult 3"; --stale-after goes to the
// nodes only, every other flag to nodes and routers).
func parseDetections(list string) ([]detection, error) {
	var out []detection
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if name, flags, ok := strings.Cut(item, "="); ok {
			d := detection{name: strings.TrimSpace(name)}
			f := strings.Fields(flags)
			for i := 0; i < len(f); i++ {
				if f[i] == "--stale-after" && i+1 < len(f) {
					d.node = append(d.node, f[i], f[i+1])
					i++
					continue
				}
				d.ring = append(d.ring, f[i])
			}
			out = append(out, d)
			continue
		}
		d, ok := detections[item]
		if !ok {
			return nil, fmt.Errorf("--detection: unknown set %q (have new, old, or name=flags)", item)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--detection: name at least one of new, old, or name=flags")
	}
	return out, nil
}

// nodeArgs are the flags a node of this set runs with, extra (--failure-node-flags) last.
func (d detection) nodeArgs(extra []string) []string {
	return slices.Concat(d.ring, d.node, extra)
}

// label names the set in a row's workload, when more than the defaults are measured.
func (d detection) label() string {
	if d.goal {
		return ", defaults"
	}
	return ", " + d.name + " (" + strings.Join(slices.Concat(d.ring, d.node), " ") + ")"
}

// benchFailure kills a node (kill -9) of a cluster of 3 and of 5, trials times each, with each
// set of failure-detection settings, and measures how long until every survivor marks it dead
// and until one of its rooms is served again by its new owner. After each trial a fresh node
// joins in its place.
func benchFailure(ctx context.Context, quick bool, nodeFlags []string, sets []detection) ([]benchRow, error) {
	trials := 20
	if quick {
		trials = 3
	}
	var rows []benchRow
	for _, set := range sets {
		for _, n := range []int{3, 5} {
			dead, served, err := failureTrials(ctx, n, trials, set.nodeArgs(nodeFlags))
			if err != nil {
				return nil, fmt.Errorf("%d nodes, %s defaults: %w", n, set.name, err)
			}
			gap := make([]time.Duration, len(dead))
			for i := range dead {
				gap[i] = served[i] - dead[i]
			}
			name := fmt.Sprintf("kill -9, 1 of %d (%d trials)%s", n, trials, set.label())
			deadGoal, servedGoal := "≤ 1 s", "≤ 0.5 s"
			if !set.goal {
				deadGoal, servedGoal = "report", "report"
			}
			rows = append(rows,
				benchRow{Workload: name, Metric: "p99 s to dead on all", Roost: quantile(dead, 0.99), Goal: deadGoal, Met: quantile(dead, 0.99) <= 1,
					Detail: map[string]float64{"p50_s": quantile(dead, 0.5), "max_s": quantile(dead, 1)}},
				benchRow{Workload: name, Metric: "p99 s dead → served", Roost: quantile(gap, 0.99), Goal: servedGoal, Met: quantile(gap, 0.99) <= 0.5,
					Detail: map[string]float64{"p50_s": quantile(gap, 0.5), "p99_s_to_served": quantile(served, 0.99)}})
		}
	}
	return rows, nil
}

// quantile is the q-quantile of ds in seconds (nearest rank, as the rows have always used).
func quantile(ds []time.Duration, q float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*q))].Seconds()
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
