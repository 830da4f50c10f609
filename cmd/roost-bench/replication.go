package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// The replication workload: what a replica costs (--room-replicas 1 against 0, each cluster alone
// on the machine in turn), how soon an heir serves a killed owner's rooms, and how long the
// cluster takes to replicate every room again after a node dies or joins.

// benchReplication runs the three parts in turn.
func benchReplication(ctx context.Context, d time.Duration, quick bool) ([]benchRow, error) {
	rows, err := replicationCost(ctx, d, quick)
	if err != nil {
		return rows, err
	}
	more, err := replicationCrash(ctx, quick)
	rows = append(rows, more...)
	if err != nil {
		return rows, err
	}
	more, err = replicationReseed(ctx, quick)
	return append(rows, more...), err
}

// ownedBy names n rooms (prefix0, prefix1, …) that the member owner owns among the nodes ids:
// placement is a pure function of the members.
func ownedBy(owner, prefix string, n int, ids ...string) []string {
	var ms []ring.Member
	for _, id := range ids {
		ms = append(ms, ring.Member{ID: id, State: ring.StateAlive, Meta: ring.Meta{Role: ring.RoleNode}})
	}
	p := ring.NewPlacement(ms, ring.DefaultPlacementConfig())
	var names []string
	for i := 0; len(names) < n; i++ {
		name := fmt.Sprint(prefix, i)
		if o, _ := p.Owner(name); o.ID == owner {
			names = append(names, name)
		}
	}
	return names
}

// startReplicaPair starts two nodes with --room-replicas replicas (and a router joined to them
// when withRouter), and waits until every member sees both nodes.
func startReplicaPair(ctx context.Context, replicas int, withRouter bool) (a, b, rt *proc.Proc, stop func(), err error) {
	var started []*proc.Proc
	stop = func() {
		for _, p := range slices.Backward(started) {
			p.Stop(stopTimeout)
		}
	}
	flags := append(slices.Clone(roostServerFlags), "--room-replicas", strconv.Itoa(replicas))
	if a, err = startRoost(ctx, "node", "rep-a", "", flags...); err != nil {
		return nil, nil, nil, stop, err
	}
	started = append(started, a)
	if b, err = startRoost(ctx, "node", "rep-b", a.Gossip, flags...); err != nil {
		return nil, nil, nil, stop, err
	}
	started = append(started, b)
	if withRouter {
		if rt, err = startBenchRouter(ctx, a); err != nil {
			return nil, nil, nil, stop, err
		}
		started = append(started, rt)
	}
	return a, b, rt, stop, proc.WaitRing(ctx, started, 2, 30*time.Second)
}

// replicationCost runs the fan-out shapes on two nodes, every room owned by the first, with one
// replica (each message appended on the second before it is delivered) and with none: the CPU
// of both nodes per delivery, replicas 1 against 0; then publish → ack latency through a router
// at a light fixed rate, the same two ways.
func replicationCost(ctx context.Context, d time.Duration, quick bool) ([]benchRow, error) {
	shapes := []struct {
		rooms, subs int
		goal        float64
	}{{1, 1000, 1.15}, {1000, 10, 1.3}}
	latRooms := 100
	if quick {
		shapes[0].subs, shapes[1].rooms, latRooms = 100, 100, 20
	}
	run := func(replicas, rooms, subs int, viaRouter bool, light float64) (fanoutResult, error) {
		a, b, rt, stop, err := startReplicaPair(ctx, replicas, viaRouter)
		defer stop()
		if err != nil {
			return fanoutResult{}, err
		}
		target := a
		if viaRouter {
			target = rt
		}
		names := ownedBy(a.ID, "bench-", rooms, a.ID, b.ID)
		return runFanoutOn(ctx, fmt.Sprintf("roost, --room-replicas %d", replicas), "ws://"+target.HTTP,
			[]int{a.Pid(), b.Pid()}, names, subs, d, light)
	}
	var rows []benchRow
	for _, sh := range shapes {
		off, err := run(0, sh.rooms, sh.subs, false, 0)
		if err != nil {
			return rows, err
		}
		on, err := run(1, sh.rooms, sh.subs, false, 0)
		if err != nil {
			return rows, err
		}
		clean := on.Lost == 0 && on.Duplicated == 0 && on.Reordered == 0
		name := fmt.Sprintf("replication fan-out %d×%d", sh.rooms, sh.subs)
		ratio := on.CPUPerDeliver / off.CPUPerDeliver
		rows = append(rows,
			benchRow{Workload: name, Metric: "server CPU µs/delivery, replicas 1 vs 0", Roost: on.CPUPerDeliver, Baseline: off.CPUPerDeliver,
				Ratio: ratio, Goal: fmt.Sprintf("≤ %.2f×, 0 lost", sh.goal), Met: clean && ratio <= sh.goal,
				Detail: map[string]fanoutResult{"replicas_1": on, "replicas_0": off}},
			benchRow{Workload: name, Metric: "deliveries/s, replicas 1 vs 0", Roost: on.PerSecond, Baseline: off.PerSecond,
				Ratio: on.PerSecond / off.PerSecond, Goal: "report"})
	}
	// Publish → ack through a router at a fixed 20 messages per second per room (2,000 in all,
	// 20,000 deliveries per second): at half of what the router saturates at, on two cores
	// shared with the load generator, the CPU's queue is the latency (tens of ms either way).
	light := 20 * float64(latRooms)
	off, err := run(0, latRooms, 10, true, light)
	if err != nil {
		return rows, err
	}
	on, err := run(1, latRooms, 10, true, light)
	if err != nil {
		return rows, err
	}
	name := fmt.Sprintf("replication via router %d×10 at %.0f msg/s", latRooms, light)
	return append(rows,
		benchRow{Workload: name, Metric: "p50 ms publish → ack, replicas 1 vs 0", Roost: on.AckP50ms, Baseline: off.AckP50ms,
			Ratio: on.AckP50ms / off.AckP50ms, Goal: "≤ +0.5 ms", Met: on.AckP50ms <= off.AckP50ms+0.5,
			Detail: map[string]fanoutResult{"replicas_1": on, "replicas_0": off}},
		benchRow{Workload: name, Metric: "p99 ms publish → ack, replicas 1 vs 0", Roost: on.AckP99ms, Baseline: off.AckP99ms,
			Ratio: on.AckP99ms / off.AckP99ms, Goal: "report"}), nil
}

// replicationCrash kills -9 the owner of rooms that each hold ten messages, in a cluster of three
// nodes with one replica per room, trials times (a fresh node joins in the victim's place after
// each), and measures, per room, how long after the survivors declared the owner dead its heir
// served it in the same epoch with all ten messages.
func replicationCrash(ctx context.Context, quick bool) ([]benchRow, error) {
	trials, perTrial := 10, 20
	if quick {
		trials, perTrial = 2, 5
	}
	flags := []string{"--log-level", "error", "--room-replicas", "1"}
	nodes, err := startNodes(ctx, "c", 3, flags)
	defer func() { stopAll(nodes) }()
	if err != nil {
		return nil, err
	}
	seed := nodes[0].Gossip
	var dead, gap []time.Duration
	resets, lost := 0, 0
	for trial := range trials {
		if err := proc.WaitRing(ctx, nodes, 3, 30*time.Second); err != nil {
			return nil, err
		}
		victim, survivors := nodes[len(nodes)-1], slices.Clone(nodes[:len(nodes)-1])
		ids := []string{nodes[0].ID, nodes[1].ID, nodes[2].ID}
		names := ownedBy(victim.ID, fmt.Sprintf("crash-%d-", trial), perTrial, ids...)
		members, err := fillRooms(ctx, names, func(string) string { return "ws://" + victim.HTTP })
		closeMembers(members)
		if err != nil {
			return nil, err
		}
		if err := waitReplicated(ctx, nodes, 30*time.Second); err != nil {
			return nil, fmt.Errorf("trial %d: %w", trial, err)
		}
		t0 := time.Now()
		victim.Kill()
		nodes = survivors
		served := make([]time.Duration, len(names))
		var tDead time.Duration
		for left := len(names); left > 0 || tDead == 0; {
			if time.Since(t0) > 30*time.Second {
				return nil, fmt.Errorf("trial %d: %d rooms not served again within 30s", trial, left)
			}
			if tDead == 0 && allSee(survivors, victim.ID, "dead") {
				tDead = time.Since(t0)
			}
			for i, name := range names {
				if served[i] != 0 {
					continue
				}
				switch w, ok := welcomeAt(ctx, survivors[0], name, members[i].epoch); {
				case !ok || w.Node == victim.ID:
				case w.Epoch != members[i].epoch:
					resets++
					served[i] = time.Since(t0)
					left--
				default:
					if w.Seq != 10 {
						lost++
					}
					served[i] = time.Since(t0)
					left--
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		dead = append(dead, tDead)
		for _, s := range served {
			gap = append(gap, max(s-tDead, 0))
		}
		p, err := startRoost(ctx, "node", fmt.Sprintf("c%d-%d", 3, trial), seed, flags...)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, p)
	}
	name := fmt.Sprintf("replication: kill -9 of an owner, %d trials × %d rooms", trials, perTrial)
	return []benchRow{{Workload: name, Metric: "p99 s dead → served by the heir, same epoch", Roost: quantile(gap, 0.99),
		Goal: "≤ 0.1 s, 0 reset, 0 lost", Met: quantile(gap, 0.99) <= 0.1 && resets == 0 && lost == 0,
		Detail: map[string]any{"p50_s": quantile(gap, 0.5), "max_s": quantile(gap, 1), "p99_s_to_dead": quantile(dead, 0.99),
			"reset": resets, "lost": lost}}}, nil
}

// replicationReseed fills a cluster of three nodes (one replica per room) with rooms of 10 KB,
// kills -9 one node and measures the time from the survivors' dead verdict (detection is the
// relaxed one of the throughput workloads, see roostServerFlags) until none of them counts a
// room under-replicated; then starts a fresh node and measures the same from its start.
func replicationReseed(ctx context.Context, quick bool) ([]benchRow, error) {
	rooms := 10_000
	if quick {
		rooms = 300
	}
	flags := append(slices.Clone(roostServerFlags), "--room-replicas", "1", "--room-idle", "10m", "--log-level", "info")
	nodes, err := startNodes(ctx, "s", 3, flags)
	defer func() { stopAll(nodes) }()
	if err != nil {
		return nil, err
	}
	seed := nodes[0].Gossip
	if err := proc.WaitRing(ctx, nodes, 3, 30*time.Second); err != nil {
		return nil, err
	}
	ids := []string{nodes[0].ID, nodes[1].ID, nodes[2].ID}
	owner := map[string]string{}
	var names []string
	for _, p := range nodes {
		for _, name := range ownedBy(p.ID, "seed-"+p.ID+"-", rooms/3, ids...) {
			owner[name] = "ws://" + p.HTTP
			names = append(names, name)
		}
	}
	members, err := fillRooms(ctx, names, func(room string) string { return owner[room] })
	closeMembers(members)
	if err != nil {
		return nil, err
	}
	if err := waitReplicated(ctx, nodes, 60*time.Second); err != nil {
		return nil, err
	}
	t0 := time.Now()
	victim := nodes[2]
	victim.Kill()
	nodes = nodes[:2]
	for !allSee(nodes, victim.ID, "dead") {
		if time.Since(t0) > 30*time.Second {
			return nil, fmt.Errorf("%s not declared dead within 30s", victim.ID)
		}
		time.Sleep(5 * time.Millisecond)
	}
	dead := time.Since(t0)
	if err := waitReplicated(ctx, nodes, 120*time.Second); err != nil {
		return nil, fmt.Errorf("after the kill: %w", err)
	}
	afterKill := time.Since(t0)
	if os.Getenv("ROOST_BENCH_LOGS") != "" {
		for _, p := range nodes {
			fmt.Fprintf(os.Stderr, "--- log of %s after the kill:\n%s\n", p.ID, p.Log())
		}
	}
	t1 := time.Now()
	p, err := startRoost(ctx, "node", "s4", seed, flags...)
	if err != nil {
		return nil, err
	}
	nodes = append(nodes, p)
	if err := proc.WaitRing(ctx, nodes, 3, 30*time.Second); err != nil {
		return nil, err
	}
	if err := waitReplicated(ctx, nodes, 120*time.Second); err != nil {
		return nil, fmt.Errorf("after the join: %w", err)
	}
	afterJoin := time.Since(t1)
	name := fmt.Sprintf("replication: re-seed %d rooms × 10 KB", len(names))
	return []benchRow{
		{Workload: name, Metric: "s from dead to none under-replicated", Roost: (afterKill - dead).Seconds(), Goal: "report",
			Detail: map[string]float64{"s_kill_to_dead": dead.Seconds(), "s_kill_to_replicated": afterKill.Seconds()}},
		{Workload: name, Metric: "s from a join to none under-replicated", Roost: afterJoin.Seconds(), Goal: "report"},
	}, nil
}

// startNodes starts n nodes, prefix1 … prefixN, with flags, each joined to the first; those it
// started are returned even when one fails.
func startNodes(ctx context.Context, prefix string, n int, flags []string) ([]*proc.Proc, error) {
	var nodes []*proc.Proc
	seed := ""
	for i := range n {
		p, err := startRoost(ctx, "node", fmt.Sprint(prefix, i+1), seed, flags...)
		if err != nil {
			return nodes, err
		}
		nodes = append(nodes, p)
		seed = nodes[0].Gossip
	}
	return nodes, nil
}

// stopAll stops every one of ps.
func stopAll(ps []*proc.Proc) {
	for _, p := range ps {
		p.Stop(stopTimeout)
	}
}

// allSee reports whether every one of ps sees member id in state.
func allSee(ps []*proc.Proc, id, state string) bool {
	for _, p := range ps {
		if p.State(id) != state {
			return false
		}
	}
	return true
}

// waitReplicated waits until none of ps counts a room under-replicated.
func waitReplicated(ctx context.Context, ps []*proc.Proc, d time.Duration) error {
	return waitUnder(ctx, ps, func(n float64) bool { return n == 0 }, d)
}

// waitUnder waits until the sum of roost_rooms_under_replicated over ps satisfies ok.
func waitUnder(ctx context.Context, ps []*proc.Proc, ok func(float64) bool, d time.Duration) error {
	deadline := time.Now().Add(d)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		sum, err := 0.0, error(nil)
		for _, p := range ps {
			var n float64
			if n, err = gauge(ctx, hc, p, "roost_rooms_under_replicated"); err != nil {
				break
			}
			sum += n
		}
		if err == nil && ok(sum) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rooms under-replicated: %v after %s (%v)", sum, d, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// gauge reads an unlabelled metric from p's /metrics.
func gauge(ctx context.Context, hc *http.Client, p *proc.Proc, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s in /metrics", p.ID, name)
}

// welcomeAt dials room through s (following its redirect to the owner, as the Go client does)
// resuming at seq 10 of epoch, and returns the welcome it gets.
func welcomeAt(ctx context.Context, s *proc.Proc, room, epoch string) (protocol.Welcome, bool) {
	d := websocket.Dialer{HandshakeTimeout: 500 * time.Millisecond}
	u := "ws://" + s.HTTP + "/v1/rooms/" + room + "/ws?since=10&epoch=" + epoch
	for range 3 {
		ws, resp, err := d.DialContext(ctx, u, nil)
		if err == nil {
			defer ws.Close()
			var w protocol.Welcome
			_ = ws.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			return w, ws.ReadJSON(&w) == nil
		}
		if resp == nil || resp.StatusCode != http.StatusTemporaryRedirect {
			return protocol.Welcome{}, false
		}
		u = resp.Header.Get("Location")
	}
	return protocol.Welcome{}, false
}
