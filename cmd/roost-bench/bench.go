package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/ring"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	if args := os.Args[1:]; len(args) > 0 && args[0] == "baseline" { // started by the fan-out workloads
		err = runBaseline(ctx, args[1:])
	} else {
		err = runBench(ctx, args)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "roost-bench:", err)
		os.Exit(1)
	}
}

// benchOut is where bench prints; a variable so tests can capture it.
var benchOut io.Writer = os.Stdout

// benchRow is one line of the table: a workload, roost's figure, the baseline's, their ratio.
type benchRow struct {
	Workload string  `json:"workload"`
	Metric   string  `json:"metric"`
	Roost    float64 `json:"roost"`
	Baseline float64 `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"`
	Goal     string  `json:"goal"`
	Met      bool    `json:"met"`
	Detail   any     `json:"detail,omitempty"`
}

// benchWorkloads run by default; allWorkloads adds the ones that take long enough to be asked for
// by name (scale: 25 nodes, about 2 minutes; more with --scale-nodes).
const (
	benchWorkloads = "fanout,quiet,edge,handshake,serverapi,idle,storm,failure,soak,handoff,replication,placement,rebalance"
	allWorkloads   = benchWorkloads + ",scale,replication-cost,replication-crash,replication-reseed"
)

func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("roost-bench", flag.ContinueOnError)
	roost := fs.String("roost", "", "the roost binary to run nodes and routers with (default: the one next to roost-bench, else roost on PATH)")
	which := fs.String("workloads", benchWorkloads, "comma-separated workloads to run, of "+allWorkloads)
	dur := fs.Duration("duration", 3*time.Second, "how long each measured phase runs")
	quick := fs.Bool("quick", false, "small sizes (100 subscribers, 100 rooms × 10, 3 kill trials), for a smoke test")
	nodeFlags := fs.String("failure-node-flags", "", "more flags for the failure and soak workloads' nodes, space-separated (e.g. --suspicion-max-mult 2)")
	detect := fs.String("detection", "default,fast", "failure-detection settings the failure and soak workloads measure, side by side: default, fast (sub-second detection where members are not starved), or name=flags (flags for nodes and routers; --stale-after for nodes only)")
	soak := fs.Duration("soak", 2*time.Minute, "how long the soak workload runs the cluster at full load (the issue's figure is 10m)")
	scaleNodes := fs.String("scale-nodes", "25", "cluster sizes the scale workload runs, comma-separated (35 and 50 did not converge on 2 cores)")
	scaleRooms := fs.Int("scale-rooms", 5000, "rooms the scale workload opens (each with one 1 KiB message)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var sizes []int
	for _, f := range strings.Split(*scaleNodes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			return fmt.Errorf("--scale-nodes: %q is not a cluster size of 2 or more", f)
		}
		sizes = append(sizes, n)
	}
	sets, err := parseDetections(*detect)
	if err != nil {
		return err
	}
	if roostBin, err = findRoost(*roost); err != nil {
		return err
	}
	raiseFileLimit()
	var rows []benchRow
	for _, w := range strings.FieldsFunc(*which, func(r rune) bool { return r == ',' || r == ' ' }) {
		var got []benchRow
		var err error
		switch w {
		case "fanout":
			got, err = benchFanout(ctx, *dur, *quick, false)
		case "edge":
			got, err = benchFanout(ctx, *dur, *quick, true)
		case "quiet":
			got, err = benchQuiet(ctx, 2*(*dur), *quick)
		case "handshake":
			got, err = benchHandshake(ctx, *quick)
		case "serverapi":
			got, err = benchServerAPI(ctx, *dur, *quick)
		case "idle":
			got, err = benchIdle(ctx, *quick)
		case "storm":
			got, err = benchStorm(ctx, *quick)
		case "handoff":
			got, err = benchHandoff(ctx, *quick)
		case "replication":
			got, err = benchReplication(ctx, *dur, *quick)
		case "replication-cost": // the parts of replication, one at a time
			got, err = replicationCost(ctx, *dur, *quick)
		case "replication-crash":
			got, err = replicationCrash(ctx, *quick)
		case "replication-reseed":
			got, err = replicationReseed(ctx, *quick)
		case "failure":
			got, err = benchFailure(ctx, *quick, strings.Fields(*nodeFlags), sets)
		case "soak":
			got, err = benchSoak(ctx, *soak, *quick, strings.Fields(*nodeFlags), sets)
		case "scale":
			got, err = benchScale(ctx, sizes, *scaleRooms)
		case "placement":
			got = benchPlacement()
		case "rebalance":
			got = benchRebalance()
		default:
			return fmt.Errorf("--workloads: unknown workload %q (have %s)", w, allWorkloads)
		}
		for _, r := range got { // a workload that failed part way may still have figures
			fmt.Fprintln(benchOut, jsonLine(r))
		}
		if err != nil {
			return fmt.Errorf("workload %s: %w", w, err)
		}
		rows = append(rows, got...)
	}
	fmt.Fprintln(benchOut)
	tw := tabwriter.NewWriter(benchOut, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tmetric\troost\tbaseline\tratio\tgoal\tmet\t")
	for _, r := range rows {
		base, ratio := "-", "-"
		if r.Baseline != 0 {
			base, ratio = fmt.Sprintf("%.4g", r.Baseline), fmt.Sprintf("%.2f×", r.Ratio)
		}
		met := "no"
		switch {
		case r.Goal == "report":
			met = "-" // a figure to report, with no goal of its own
		case r.Met:
			met = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.4g\t%s\t%s\t%s\t%s\t\n", r.Workload, r.Metric, r.Roost, base, ratio, r.Goal, met)
	}
	return tw.Flush()
}

// roostBin is the roost binary the workloads run nodes and routers with.
var roostBin string

// findRoost returns the roost binary to use: flag when given, else the roost next to this
// executable (make build puts both in bin/), else roost on PATH.
func findRoost(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if self, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(self), "roost"); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("roost"); err == nil {
		return p, nil
	}
	return "", errors.New("found no roost binary next to roost-bench nor on PATH: build both with make build, or name one with --roost")
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// fileLimit is this process's open-file limit (its children inherit it).
func fileLimit() int {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return 1024
	}
	return int(min(l.Cur, 1<<20))
}

// raiseFileLimit lifts this process's open-file limit, and so its children's: a router holds two
// sockets per client, and the 1000×10 shapes open 11,000 clients. It asks for a million (which
// root may set), else settles for the hard limit.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return
	}
	want := syscall.Rlimit{Cur: 1 << 20, Max: max(l.Max, 1<<20)}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) == nil {
		return
	}
	// Set it even when it is already the hard limit: the Go runtime raises the soft limit for
	// itself but gives children the original one back, unless the program set it.
	l.Cur = l.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}

// benchFanout runs the fan-out shapes against one roost node and against the baseline server,
// each alone on the machine in turn. With viaRouter, roost's clients go through a router instead
// and the baseline is roost direct: the edge's overhead.
func benchFanout(ctx context.Context, d time.Duration, quick, viaRouter bool) ([]benchRow, error) {
	shapes := []struct{ rooms, subs int }{{1, 1000}, {1000, 10}}
	if viaRouter {
		shapes[1].subs = 8 // the edge issue's shape (#21)
	}
	if quick {
		shapes = []struct{ rooms, subs int }{{1, 100}, {100, 10}}
	}
	var rows []benchRow
	for _, sh := range shapes {
		if viaRouter {
			// A router holds two sockets per client; keep within the file limit a process gets
			// here (20,000 on our CI machines), shrinking the rooms' sizes if needed.
			if room := (fileLimit()-2000)/2/sh.rooms - 1; room < sh.subs {
				sh.subs = max(room, 1)
			}
		}
		name := fmt.Sprintf("fan-out %d×%d", sh.rooms, sh.subs)
		roost, err := fanoutOnRoost(ctx, sh.rooms, sh.subs, d, viaRouter)
		if err != nil {
			return nil, err
		}
		var base fanoutResult
		if viaRouter {
			name = "edge " + name
			base, err = fanoutOnRoost(ctx, sh.rooms, sh.subs, d, false)
		} else {
			base, err = fanoutOnBaseline(ctx, sh.rooms, sh.subs, d)
		}
		if err != nil {
			return nil, err
		}
		clean := roost.Lost == 0 && roost.Duplicated == 0 && roost.Reordered == 0
		ratio := roost.PerSecond / base.PerSecond
		detail := map[string]fanoutResult{"roost": roost, "baseline": base}
		if viaRouter {
			// The router's edge leg: the owner writes each message once for the router, which
			// fans it out; so the owner's CPU per delivery is a fraction of a direct one's.
			cpu := roost.CPUPerDeliver / base.CPUPerDeliver
			rows = append(rows,
				benchRow{Workload: name, Metric: "deliveries/s", Roost: roost.PerSecond, Baseline: base.PerSecond, Ratio: ratio,
					Goal: "≥ 1.0× direct, 0 lost", Met: clean && ratio >= 1.0, Detail: detail},
				ownerCPU(name, sh.rooms, roost, base, cpu),
				benchRow{Workload: name, Metric: "p50 ms (half load)", Roost: roost.P50ms, Baseline: base.P50ms, Ratio: roost.P50ms / base.P50ms,
					Goal: "≤ direct + 0.1 ms", Met: roost.P50ms <= base.P50ms+0.1},
				benchRow{Workload: name, Metric: "p99 ms (half load)", Roost: roost.P99ms, Baseline: base.P99ms, Ratio: roost.P99ms / base.P99ms,
					Goal: "≤ direct + 1 ms", Met: roost.P99ms <= base.P99ms+1})
			continue
		}
		rows = append(rows,
			benchRow{Workload: name, Metric: "deliveries/s", Roost: roost.PerSecond, Baseline: base.PerSecond, Ratio: ratio,
				Goal: "≥ 0.85× baseline, 0 lost", Met: clean && ratio >= 0.85, Detail: detail},
			benchRow{Workload: name, Metric: "server CPU µs/delivery", Roost: roost.CPUPerDeliver, Baseline: base.CPUPerDeliver,
				Ratio: roost.CPUPerDeliver / base.CPUPerDeliver, Goal: "≤ 10 (stretch 4)", Met: roost.CPUPerDeliver <= 10},
			benchRow{Workload: name, Metric: "p50 ms (half load)", Roost: roost.P50ms, Baseline: base.P50ms, Ratio: roost.P50ms / base.P50ms, Goal: "report"},
			benchRow{Workload: name, Metric: "p99 ms (half load)", Roost: roost.P99ms, Baseline: base.P99ms, Ratio: roost.P99ms / base.P99ms, Goal: "report"})
	}
	return rows, nil
}

// ownerCPU is the edge row of the owner's CPU per delivery. In one big room the owner writes each
// message once for the router instead of once per client: at most a tenth of direct. In many small
// rooms its cost per message (reading the publisher, sequencing, the ack) stays and is shared by
// few deliveries: reported.
func ownerCPU(name string, rooms int, roost, base fanoutResult, ratio float64) benchRow {
	r := benchRow{Workload: name, Metric: "owner CPU µs/delivery", Roost: roost.CPUPerDeliver, Baseline: base.CPUPerDeliver, Ratio: ratio, Goal: "report"}
	if rooms == 1 {
		r.Goal, r.Met = "≤ 0.1× direct", ratio <= 0.1
	}
	return r
}

// roostServerFlags let the load generator saturate the server: no publish rate, a deep send queue
// (the baseline's is as deep), no per-address cap. The server shares the machine's cores with the
// load generator, which starves it for over a second at times: with the default failure
// detection (a silent member is suspect after 150 ms) the router could declare the node dead in
// the middle of a throughput measurement. Failure detection has its own workloads (failure,
// soak); here it is relaxed. The pause watchdog runs at its default: a node alone in its ring
// keeps its rooms after a stall.
var roostServerFlags = []string{"--log-level", "warn", "--publish-rate", "1e12", "--publish-burst", "1000000000",
	"--send-queue", "65536", "--max-addr-conns", "1000000", "--max-room-conns", "1000000",
	"--probe-interval", "1s", "--probe-timeout", "500ms"}

// startRoost starts a roost node or router (role) with flags, joined to join when it is set, and
// waits until it is ready (/readyz).
func startRoost(ctx context.Context, role, id, join string, flags ...string) (*proc.Proc, error) {
	return proc.Start(ctx, proc.Spec{Binary: roostBin, Role: role, ID: id, Join: join, Args: flags, Ready: "/readyz"})
}

// stopTimeout is how long a server stopped with SIGTERM has to exit before it is killed.
const stopTimeout = 10 * time.Second

// startBenchNode starts the one node of a bench run.
func startBenchNode(ctx context.Context) (*proc.Proc, error) {
	return startRoost(ctx, "node", "bench-n1", "", roostServerFlags...)
}

// startBenchPair starts the one node of a bench run, with the extra flags, and a router joined
// to it; stop stops both.
func startBenchPair(ctx context.Context, extra ...string) (node, rt *proc.Proc, stop func(), err error) {
	node, err = startRoost(ctx, "node", "bench-n1", "", append(slices.Clone(roostServerFlags), extra...)...)
	if err != nil {
		return nil, nil, nil, err
	}
	if rt, err = startBenchRouter(ctx, node); err != nil {
		node.Stop(stopTimeout)
		return nil, nil, nil, err
	}
	return node, rt, func() { rt.Stop(stopTimeout); node.Stop(stopTimeout) }, nil
}

// startBenchRouter starts a router joined to node.
func startBenchRouter(ctx context.Context, node *proc.Proc) (*proc.Proc, error) {
	return startRoost(ctx, "router", "bench-r1", node.Gossip,
		"--log-level", "warn", "--max-addr-conns", "1000000", "--probe-interval", "1s", "--probe-timeout", "500ms",
		"--send-queue", "65536") // as deep as the node's, for its clients on edge legs
}

func fanoutOnRoost(ctx context.Context, rooms, subs int, d time.Duration, viaRouter bool) (fanoutResult, error) {
	node, err := startBenchNode(ctx)
	if err != nil {
		return fanoutResult{}, err
	}
	defer node.Stop(stopTimeout)
	target, server := node, "roost"
	if viaRouter {
		rt, err := startBenchRouter(ctx, node)
		if err != nil {
			return fanoutResult{}, err
		}
		defer func() {
			rt.Stop(stopTimeout)
			if os.Getenv("ROOST_BENCH_LOGS") != "" {
				fmt.Fprintf(os.Stderr, "--- router log:\n%s\n", rt.Log())
			}
		}()
		target, server = rt, "roost via router"
	}
	res, err := runFanout(ctx, server, "ws://"+target.HTTP, node.Pid(), rooms, subs, d)
	if os.Getenv("ROOST_BENCH_LOGS") != "" {
		fmt.Fprintf(os.Stderr, "--- node log:\n%s\n", node.Log())
	}
	return res, err
}

func fanoutOnBaseline(ctx context.Context, rooms, subs int, d time.Duration) (fanoutResult, error) {
	self, err := os.Executable()
	if err != nil {
		return fanoutResult{}, err
	}
	b, err := proc.Start(ctx, proc.Spec{Binary: self, Role: "baseline", Ready: "/readyz"})
	if err != nil {
		return fanoutResult{}, err
	}
	defer b.Stop(stopTimeout)
	return runFanout(ctx, "baseline", "ws://"+b.HTTP, b.Pid(), rooms, subs, d)
}

// benchPlacement measures Owner(room) like go test -bench does.
func benchPlacement() []benchRow {
	p := ring.NewPlacement(benchNodes(5), ring.DefaultPlacementConfig())
	rooms := make([]string, 1024)
	for i := range rooms {
		rooms[i] = fmt.Sprint("room-", i)
	}
	ns, allocs := measure(5_000_000, func(i int) { p.Owner(rooms[i&1023]) })
	ms := benchNodes(9)
	rebuild, _ := measure(2000, func(int) { ring.NewPlacement(ms, ring.DefaultPlacementConfig()) })
	rms := rebuild / 1e6
	return []benchRow{
		{Workload: "placement", Metric: "Owner ns/op", Roost: ns, Goal: "≤ 100 ns, 0 allocs", Met: ns <= 100 && allocs == 0,
			Detail: map[string]int64{"allocs_per_op": allocs}},
		{Workload: "placement", Metric: "rebuild ms (9 nodes)", Roost: rms, Goal: "≤ 1 ms", Met: rms <= 1},
	}
}

// measure runs f n times (after one warm-up run) and returns the time and heap allocations per
// run. The server binary does not link the testing package, so this is testing.Benchmark's core
// by hand; the figures match go test -bench's (see make bench, which runs both).
func measure(n int, f func(i int)) (nsPerOp float64, allocsPerOp int64) {
	f(0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	for i := range n {
		f(i)
	}
	d := time.Since(start)
	runtime.ReadMemStats(&after)
	return float64(d.Nanoseconds()) / float64(n), int64(after.Mallocs-before.Mallocs) / int64(n)
}

// benchRebalance measures the share of 100,000 rooms that move on membership changes, against
// the ideal 1/N, and how much of it moves between nodes that stayed.
func benchRebalance() []benchRow {
	rooms := make([]string, 100_000)
	for i := range rooms {
		rooms[i] = fmt.Sprint("room-", i)
	}
	var rows []benchRow
	for _, c := range []struct{ from, to int }{{3, 4}, {4, 3}, {8, 9}} {
		a := ring.NewPlacement(benchNodes(c.from), ring.DefaultPlacementConfig())
		b := ring.NewPlacement(benchNodes(c.to), ring.DefaultPlacementConfig())
		moved, between := 0, 0
		for _, r := range rooms {
			oa, _ := a.Owner(r)
			ob, _ := b.Owner(r)
			if oa.ID == ob.ID {
				continue
			}
			moved++
			_, aHasB := a.Member(ob.ID)
			_, bHasA := b.Member(oa.ID)
			if aHasB && bHasA {
				between++
			}
		}
		ideal := 1 / float64(max(c.from, c.to))
		frac := float64(moved) / float64(len(rooms))
		rows = append(rows, benchRow{Workload: fmt.Sprintf("rebalance %d→%d", c.from, c.to), Metric: "moved / ideal 1/N",
			Roost: frac / ideal, Goal: "≤ 1.25, ≤ 2% between survivors",
			Met:    frac/ideal <= 1.25 && float64(between)/float64(len(rooms)) <= 0.02,
			Detail: map[string]float64{"moved": frac, "between_survivors": float64(between) / float64(len(rooms))}})
	}
	return rows
}

func benchNodes(n int) []ring.Member {
	ms := make([]ring.Member, n)
	for i := range ms {
		ms[i] = ring.Member{ID: fmt.Sprintf("n%d", i+1), State: ring.StateAlive,
			Meta: ring.Meta{Role: ring.RoleNode, HTTP: fmt.Sprintf("10.0.0.%d:9000", i+1)}}
	}
	return ms
}
