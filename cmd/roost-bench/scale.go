package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/ring"
)

// benchScale runs clusters of sizes nodes (25 by default) on loopback with the default
// failure detection, holding rooms rooms with a little history each, and measures what the
// issue asks of a larger cluster:
//
//   - gossip: the loopback bytes per node per second in a quiet window (no client, no poll),
//     and false verdicts and ring changes in it;
//   - a join: the time until every member lists the new node alive, until they all agree on the
//     new ring, the rooms handed off against the ideal 1/(N+1) and against what the pure
//     placement code predicts for the same rooms, and the hand-off bytes;
//   - a kill -9: the time until every survivor lists the node dead (suspicion grows with
//     log10 N).
//
// Where it may (root, Linux), it runs in a network namespace of its own, so that the loopback
// counters hold this cluster's traffic only; elsewhere it shares the machine's loopback and says so.
func benchScale(ctx context.Context, sizes []int, rooms int) ([]benchRow, error) {
	if os.Getenv(scaleNetnsEnv) == "" {
		rows, err := scaleInNetns(ctx, sizes, rooms)
		if err == nil || errors.Is(err, errScaleRan) {
			return rows, err
		}
		fmt.Fprintf(os.Stderr, "scale: no network namespace of its own (%v): sharing the machine's loopback, whose counters then include other traffic\n", err)
	} else if err := loopbackUp(); err != nil {
		return nil, fmt.Errorf("bringing lo up in the namespace: %w", err)
	}
	var rows []benchRow
	for _, n := range sizes {
		got, err := scaleRun(ctx, n, rooms)
		if err != nil {
			return rows, fmt.Errorf("%d nodes: %w", n, err) // the sizes done so far are still figures
		}
		rows = append(rows, got...)
	}
	return rows, nil
}

// scaleNetnsEnv marks the copy of roost-bench that runs inside the new network namespace.
const scaleNetnsEnv = "ROOST_BENCH_SCALE_NETNS"

// scaleInNetns runs the workload in a copy of this program in a new network namespace and reads
// its rows back from its JSON lines.
func scaleInNetns(ctx context.Context, sizes []int, rooms int) ([]benchRow, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ss := make([]string, len(sizes))
	for i, n := range sizes {
		ss[i] = strconv.Itoa(n)
	}
	cmd := exec.CommandContext(ctx, self, "--roost", roostBin, "--workloads", "scale",
		"--scale-nodes", strings.Join(ss, ","), "--scale-rooms", strconv.Itoa(rooms))
	cmd.Env = append(os.Environ(), scaleNetnsEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var rows []benchRow
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line := sc.Bytes(); len(line) > 0 && line[0] == '{' {
			var r benchRow
			if err := json.Unmarshal(line, &r); err != nil {
				return nil, fmt.Errorf("a row from the namespace: %w", err)
			}
			rows = append(rows, r)
		}
	}
	for i := range rows {
		if d, ok := rows[i].Detail.(map[string]any); ok {
			d["own_netns"] = 1
		}
	}
	if err := cmd.Wait(); err != nil {
		// Started, so the namespace was made: its failure is the workload's, not a reason to
		// run again outside.
		return rows, errors.Join(errScaleRan, err)
	}
	return rows, nil
}

var errScaleRan = errors.New("the scale workload failed in its namespace")

// loopbackUp sets lo up, which a new network namespace starts without (ip link set lo up).
func loopbackUp() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var ifr [40]byte // struct ifreq: the name, then the flags as a short
	copy(ifr[:], "lo")
	*(*uint16)(unsafe.Pointer(&ifr[syscall.IFNAMSIZ])) = syscall.IFF_UP | syscall.IFF_RUNNING
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		return e
	}
	return nil
}

// loopback reads lo's transmitted bytes and packets from /proc/net/dev (on lo every byte sent
// is received once, so one side counts the traffic).
func loopback() (bytes, packets uint64, err error) {
	b, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) != "lo" {
			continue
		}
		f := strings.Fields(rest) // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets …
		if len(f) < 10 {
			break
		}
		bytes, _ = strconv.ParseUint(f[8], 10, 64)
		packets, _ = strconv.ParseUint(f[9], 10, 64)
		return bytes, packets, nil
	}
	return 0, 0, errors.New("/proc/net/dev lists no lo")
}

// scaleBatch is how many nodes start at once while a cluster is built.
const scaleBatch = 8

// scaleQuiet is the window in which nothing but the cluster itself talks.
const scaleQuiet = 20 * time.Second

func scaleRun(ctx context.Context, n, rooms int) ([]benchRow, error) {
	flags := []string{"--log-level", "error", "--max-addr-conns", "1000000"}
	var nodes []*proc.Proc
	defer func() {
		var wg sync.WaitGroup
		for _, s := range nodes {
			wg.Go(func() { s.Stop(stopTimeout) })
		}
		wg.Wait()
	}()
	t0 := time.Now()
	seed, err := startRoost(ctx, "node", "s01", "", flags...)
	if err != nil {
		return nil, err
	}
	nodes = append(nodes, seed)
	// The others join in batches: each membership change costs every member a placement rebuild
	// (tens of milliseconds at 50 nodes), and a batch that joins within one --ring-debounce costs
	// one, where nodes joining one by one would cost every member n of them.
	for first := 2; first <= n; first += scaleBatch {
		batch := make([]*proc.Proc, min(scaleBatch, n-first+1))
		errs := make([]error, len(batch))
		var wg sync.WaitGroup
		for i := range batch {
			wg.Go(func() {
				batch[i], errs[i] = startRoost(ctx, "node", fmt.Sprintf("s%02d", first+i), seed.Gossip, flags...)
			})
		}
		wg.Wait()
		for i, s := range batch {
			if s != nil {
				nodes = append(nodes, s)
			} else if errs[i] != nil {
				return nil, errs[i]
			}
		}
	}
	if err := proc.WaitRing(ctx, nodes, n, 2*time.Minute); err != nil {
		return nil, err
	}
	started := time.Since(t0)

	// Rooms, each with one 1 KiB message of history, opened through every node in turn.
	if err := openRooms(ctx, nodes, rooms); err != nil {
		return nil, err
	}

	// Quiet: gossip only.
	time.Sleep(3 * time.Second) // the clients' sockets close, stats gossip settles
	before, err := scaleCounters(nodes)
	if err != nil {
		return nil, err
	}
	held := 0.0
	for _, c := range before {
		held += c.rooms
	}
	b0, p0, err := loopback()
	if err != nil {
		return nil, err
	}
	cpu0 := scaleCPU(nodes)
	time.Sleep(scaleQuiet)
	b1, p1, _ := loopback()
	cpuMS := float64((scaleCPU(nodes) - cpu0).Milliseconds()) / float64(n) / scaleQuiet.Seconds()
	quiet, err := scaleCounters(nodes)
	if err != nil {
		return nil, err
	}
	gossipBps := float64(b1-b0) / float64(n) / scaleQuiet.Seconds()
	pps := float64(p1-p0) / float64(n) / scaleQuiet.Seconds()
	falseDead, quietChanges := 0, 0.0
	for i, s := range nodes {
		quietChanges += quiet[i].ringChanges - before[i].ringChanges
		c, err := s.Cluster()
		if err != nil {
			return nil, err
		}
		for _, m := range c.Members {
			if m.State != "alive" {
				falseDead++
			}
		}
	}

	// A join.
	ideal := ring.NewPlacement(scaleMembers(nodes), ring.DefaultPlacementConfig())
	joinID := "s-join"
	seenAll := make(chan time.Duration, 1)
	jctx, stopPoll := context.WithCancel(ctx)
	tj := time.Now()
	go func() {
		seenAll <- waitAll(jctx, nodes, tj, func(p *proc.Proc) bool { return p.State(joinID) == "alive" })
	}()
	joiner, err := startRoost(ctx, "node", joinID, seed.Gossip, flags...)
	if err != nil {
		stopPoll()
		return nil, err
	}
	nodes = append(nodes, joiner)
	tSeen := <-seenAll
	stopPoll()
	if tSeen < 0 {
		return nil, fmt.Errorf("not every member listed %s alive within a minute", joinID)
	}
	if err := proc.WaitRing(ctx, nodes, n+1, time.Minute); err != nil {
		return nil, err
	}
	tRing := time.Since(tj)
	after, err := settledCounters(ctx, nodes)
	if err != nil {
		return nil, err
	}
	tSettled := time.Since(tj)
	var lost, handoffBytes float64
	for i := range nodes[:n] {
		lost += after[i].roomsLost - quiet[i].roomsLost
		handoffBytes += after[i].handoffBytes - quiet[i].handoffBytes
	}
	joined := ring.NewPlacement(scaleMembers(nodes), ring.DefaultPlacementConfig())
	predicted := 0
	for i := range rooms {
		room := scaleRoom(i)
		a, _ := ideal.Owner(room)
		b, _ := joined.Owner(room)
		if a.ID != b.ID {
			predicted++
		}
	}

	// A kill -9.
	victim := nodes[n/2]
	survivors := append(append([]*proc.Proc{}, nodes[:n/2]...), nodes[n/2+1:]...)
	tk := time.Now()
	victim.Kill()
	tDead := waitAll(ctx, survivors, tk, func(p *proc.Proc) bool { return p.State(victim.ID) == "dead" })
	nodes = survivors
	if tDead < 0 {
		return nil, fmt.Errorf("not every survivor listed %s dead within a minute", victim.ID)
	}

	name := fmt.Sprintf("scale %d nodes, %d rooms", n, rooms)
	perJoin := 1 / float64(n+1)
	movedFrac := lost / max(held, 1)
	return []benchRow{
		{Workload: name, Metric: "gossip bytes/s per node (quiet)", Roost: gossipBps, Goal: "report",
			Detail: map[string]float64{"packets_per_s_per_node": pps, "cpu_ms_per_s_per_node": cpuMS, "window_s": scaleQuiet.Seconds(), "start_all_s": started.Seconds()}},
		{Workload: name, Metric: "false verdicts (quiet)", Roost: float64(falseDead), Goal: "0", Met: falseDead == 0 && quietChanges == 0,
			Detail: map[string]float64{"ring_changes": quietChanges}},
		{Workload: name, Metric: "join: s until all list it alive", Roost: tSeen.Seconds(), Goal: "report",
			Detail: map[string]float64{"ring_agreed_s": tRing.Seconds(), "handoffs_done_s": tSettled.Seconds()}},
		{Workload: name, Metric: "join: rooms moved / ideal 1/(N+1)", Roost: movedFrac / perJoin, Goal: "≤ 1.25", Met: movedFrac/perJoin <= 1.25,
			Detail: map[string]float64{"rooms_held": held, "rooms_moved": lost, "placement_predicts": float64(predicted),
				"handoff_bytes": handoffBytes, "handoff_bytes_per_room": handoffBytes / max(lost, 1)}},
		{Workload: name, Metric: "kill -9: s until all list it dead", Roost: tDead.Seconds(), Goal: "report"},
	}, nil
}

// waitAll polls every process until ok holds for it and returns the time from t0 until it held
// for the last one, or -1 after a minute (or when ctx ends). Each is polled every 50 ms until
// it holds, so the load of the polls falls as the news spreads.
func waitAll(ctx context.Context, ps []*proc.Proc, t0 time.Time, ok func(*proc.Proc) bool) time.Duration {
	var mu sync.Mutex
	var last time.Duration
	failed := false
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			for !ok(p) {
				if ctx.Err() != nil || time.Since(t0) > time.Minute {
					mu.Lock()
					failed = true
					mu.Unlock()
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			mu.Lock()
			last = max(last, time.Since(t0))
			mu.Unlock()
		})
	}
	wg.Wait()
	if failed {
		return -1
	}
	return last
}

func scaleRoom(i int) string { return fmt.Sprint("scale-", i) }

// openRooms creates rooms rooms, each with one 1 KiB message, dialing through the nodes in turn
// (a node that does not own a room redirects the dial to its owner).
func openRooms(ctx context.Context, nodes []*proc.Proc, rooms int) error {
	payload := strings.Repeat("x", 1024)
	sem := make(chan struct{}, 16)
	errs := make(chan error, rooms)
	var wg sync.WaitGroup
	for i := range rooms {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs <- openRoom(ctx, nodes[i%len(nodes)].URL(), scaleRoom(i), payload)
		})
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when there was none
}

// openRoom opens room with one message through url. On a loaded machine a cluster of 25 that
// agrees on its ring can still be moving a room (503 not_ready) or slow to answer (a read
// timeout): those are tried again, every 200 ms for up to scaleOpenTimeout, as a user would.
func openRoom(ctx context.Context, url, room, payload string) error {
	ctx, cancel := context.WithTimeout(ctx, scaleOpenTimeout)
	defer cancel()
	for {
		err := func() error {
			c, err := client.Dial(ctx, url, room, &client.Options{Discard: true})
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.PublishID(ctx, "scale", payload) // the same id: a retry is not a second message
			return err
		}()
		var he *client.HTTPError
		if err == nil || (errors.As(err, &he) && !he.Retryable()) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("room %s not opened within %s: %w", room, scaleOpenTimeout, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// scaleOpenTimeout bounds the tries to open one room of the scale workload.
const scaleOpenTimeout = time.Minute

func scaleMembers(ps []*proc.Proc) []ring.Member {
	ms := make([]ring.Member, len(ps))
	for i, p := range ps {
		ms[i] = ring.Member{ID: p.ID, State: ring.StateAlive, Meta: ring.Meta{Role: ring.RoleNode, HTTP: p.HTTP}}
	}
	return ms
}

type scaleCount struct{ ringChanges, roomsLost, handoffBytes, rooms float64 }

func scaleCounters(ps []*proc.Proc) ([]scaleCount, error) {
	out := make([]scaleCount, len(ps))
	for i, p := range ps {
		fams, err := scrape(p.URL())
		if err != nil {
			return nil, err
		}
		get := func(name string) float64 {
			if f := fams[name]; f != nil && len(f.Metric) > 0 {
				return f.Metric[0].GetCounter().GetValue()
			}
			return 0
		}
		out[i] = scaleCount{get("roost_ring_changes_total"), get("roost_rooms_lost_total"), get("roost_handoff_bytes_total"), 0}
		if f := fams["roost_rooms"]; f != nil && len(f.Metric) > 0 {
			out[i].rooms = f.Metric[0].GetGauge().GetValue()
		}
	}
	return out, nil
}

// settledCounters reads the counters until the rooms handed off stay the same for a second.
func settledCounters(ctx context.Context, ps []*proc.Proc) ([]scaleCount, error) {
	var last float64 = -1
	for {
		c, err := scaleCounters(ps)
		if err != nil {
			return nil, err
		}
		sum := 0.0
		for _, x := range c {
			sum += x.roomsLost
		}
		if sum == last {
			return c, nil
		}
		last = sum
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// scaleCPU is the CPU time the processes used so far.
func scaleCPU(ps []*proc.Proc) (d time.Duration) {
	for _, p := range ps {
		if t, err := cpuTime(p.Pid()); err == nil {
			d += t
		}
	}
	return d
}
