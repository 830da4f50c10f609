package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/roost-dev/roost/internal/loop"
	"github.com/roost-dev/roost/internal/proc"
	"golang.org/x/time/rate"
)

// benchSoak runs, for each set of failure-detection settings in turn, three nodes and a router
// under saturating fan-out for d, kills nothing, and counts false verdicts: a member some node saw
// as dead (or left) while every process was running. It also counts ring changes, pauses the
// nodes' watchdogs noticed and rooms they dropped for one, which a false verdict or a stall would
// cause, and the machine's CPU use meanwhile, which must be high for the rows to mean anything.
// Each set's cluster has the machine to itself (with its load generator), as the soak always had:
// run together, two clusters starve each other twice as hard as one cluster does.
func benchSoak(ctx context.Context, d time.Duration, quick bool, nodeFlags []string, sets []detection) ([]benchRow, error) {
	var rows []benchRow
	for i, set := range sets {
		c, err := startSoakCluster(ctx, fmt.Sprintf("soak%d", i+1), quick, set, nodeFlags)
		if err != nil {
			if c != nil {
				c.stop()
			}
			return nil, fmt.Errorf("%s defaults: %w", set.name, err)
		}
		busy0, total0, err := machineCPU()
		if err != nil {
			c.stop()
			return nil, err
		}
		err = c.run(ctx, d)
		busy1, total1, _ := machineCPU()
		c.stop()
		if err != nil {
			return nil, fmt.Errorf("%s defaults: %w", set.name, err)
		}
		cpu := 100 * float64(busy1-busy0) / float64(max(total1-total0, 1))
		name := fmt.Sprintf("soak %s, 3 nodes + router, no kill", d)
		if len(sets) > 1 {
			name += set.label()
		}
		goal := "0"
		if !set.goal {
			goal = "report"
		}
		rows = append(rows,
			benchRow{Workload: name, Metric: "false dead verdicts", Roost: float64(c.watch.dead), Goal: goal, Met: c.watch.dead == 0 && cpu >= 80,
				Detail: map[string]float64{"machine_cpu_pct": cpu, "suspect_seen": float64(c.watch.suspect), "dead_verdicts_on_router": float64(c.watch.deadRouters),
					"ring_changes": c.changes, "pauses_noticed": c.pauses, "stale_node_drops": c.stale, "publishers_cut": float64(c.pubErrs),
					"deliveries_per_s": float64(c.delivered) / d.Seconds(), "polls": float64(c.watch.polls)}},
			benchRow{Workload: name, Metric: "machine CPU %", Roost: cpu, Goal: "≥ 80", Met: cpu >= 80})
	}
	return rows, nil
}

// soakCluster is one set's cluster in the soak: its members, the load on them, what was seen.
type soakCluster struct {
	set     detection
	members []*proc.Proc // the router first
	rig     *fanoutRig
	watch   *verdicts

	changes, pauses, stale float64
	delivered              int64
	pubErrs                int // publishers whose connection failed (the rest go on)
}

func startSoakCluster(ctx context.Context, prefix string, quick bool, set detection, nodeFlags []string) (c *soakCluster, err error) {
	rooms, subs := 100, 10
	if quick {
		rooms = 20
	}
	flags := []string{"--log-level", "warn", "--publish-rate", "1e12", "--publish-burst", "1000000000",
		"--send-queue", "65536", "--max-addr-conns", "1000000", "--max-room-conns", "1000000"}
	c = &soakCluster{set: set}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	var nodes []*proc.Proc
	seed := ""
	for i := range 3 {
		s, err := startRoost(ctx, "node", fmt.Sprintf("%s-n%d", prefix, i+1), seed, slices.Concat(flags, set.nodeArgs(nodeFlags))...)
		if err != nil {
			return c, err
		}
		nodes = append(nodes, s)
		c.members = append(c.members, s)
		if seed == "" {
			seed = s.Gossip
		}
	}
	rt, err := startRoost(ctx, "router", prefix+"-r1", seed, slices.Concat([]string{"--log-level", "warn", "--max-addr-conns", "1000000"}, set.ring)...)
	if err != nil {
		return c, err
	}
	c.members = append([]*proc.Proc{rt}, nodes...)
	if err := proc.WaitRing(ctx, c.members, 3, 30*time.Second); err != nil {
		return c, err
	}
	c.rig, err = dialFanout(ctx, "ws://"+rt.HTTP, rooms, subs)
	return c, err
}

// run loads the cluster for d while watching every member's view of the others.
func (c *soakCluster) run(ctx context.Context, d time.Duration) error {
	before, err := soakCounters(c.members)
	if err != nil {
		return err
	}
	n0 := c.rig.received()
	c.watch = &verdicts{start: time.Now()}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { c.watch.run(wctx, c.members) })
	err = c.rig.publish(ctx, d, func() *rate.Limiter { return nil })
	stop()
	wg.Wait()
	if err != nil {
		// A publisher's socket can fail under this much starvation (a pong not written within
		// gorilla's second while the router applies backpressure); the others went on, and the
		// verdicts are what this workload counts.
		c.pubErrs++
		fmt.Fprintf(os.Stderr, "soak: %s defaults: a publisher stopped: %v\n", c.set.name, err)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	c.delivered = c.rig.received() - n0
	after, err := soakCounters(c.members)
	if err != nil {
		return err
	}
	for i := range c.members {
		c.changes += after[i].ringChanges - before[i].ringChanges
		c.pauses += after[i].pauses - before[i].pauses
		c.stale += after[i].staleDrops - before[i].staleDrops
	}
	return nil
}

func (c *soakCluster) stop() {
	if c.rig != nil {
		c.rig.close()
	}
	for _, s := range c.members {
		s.Stop(stopTimeout)
		if os.Getenv("ROOST_BENCH_LOGS") != "" {
			fmt.Fprintf(os.Stderr, "--- %s log:\n%s\n", s.ID, s.Log())
		}
	}
}

// verdicts polls every member's view of the cluster and counts members seen in a state other
// than alive: dead or left (a false verdict, as nobody was stopped) and suspect.
type verdicts struct {
	start                             time.Time
	dead, deadRouters, suspect, polls int
}

func (v *verdicts) run(ctx context.Context, members []*proc.Proc) {
	was := map[string]string{} // observer/member -> state at the last poll
	loop.Every(ctx, 100*time.Millisecond, func(time.Time) {
		for _, s := range members {
			c, err := s.Cluster()
			if err != nil {
				continue // a slow answer under load is not a verdict
			}
			v.polls++
			for _, m := range c.Members {
				key := c.Self + "/" + m.ID
				if m.State != was[key] {
					switch m.State {
					case "dead", "left":
						v.dead++
						if m.Role == "router" {
							v.deadRouters++
						}
						fmt.Fprintf(os.Stderr, "soak: %s: %s sees %s %s %s\n", time.Since(v.start).Round(100*time.Millisecond), c.Self, m.Role, m.ID, m.State)
					case "suspect":
						v.suspect++
					}
				}
				was[key] = m.State
			}
		}
	})
}

type soakCount struct{ ringChanges, pauses, staleDrops float64 }

func soakCounters(members []*proc.Proc) ([]soakCount, error) {
	out := make([]soakCount, len(members))
	for i, s := range members {
		fams, err := scrape(s.URL())
		if err != nil {
			return nil, err
		}
		for _, name := range []string{"roost_ring_changes_total", "roost_router_ring_changes_total"} {
			if f := fams[name]; f != nil && len(f.Metric) > 0 {
				out[i].ringChanges = f.Metric[0].GetCounter().GetValue()
			}
		}
		if f := fams["roost_pauses_total"]; f != nil {
			for _, m := range f.Metric {
				out[i].pauses += m.GetCounter().GetValue()
			}
		}
		if f := fams["roost_drops_total"]; f != nil {
			for _, m := range f.Metric {
				for _, l := range m.Label {
					if l.GetName() == "reason" && l.GetValue() == "stale_node" {
						out[i].staleDrops = m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	return out, nil
}

// machineCPU reads the busy and total jiffies of all CPUs from /proc/stat.
func machineCPU() (busy, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	for i, f := range fields[1:] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, nil
}
