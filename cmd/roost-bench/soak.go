package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/roost-dev/roost/internal/proc"
	"golang.org/x/time/rate"
)

// benchSoak runs three nodes with the default failure-detection settings and a router under
// saturating fan-out for d, kills nothing, and counts false verdicts: a member some node saw as
// dead (or left) while every process was running. It also counts ring changes and rooms dropped
// by the pause watchdog, which a false verdict or a stall would cause, and the machine's CPU use
// meanwhile, which must be high for the row to mean anything.
func benchSoak(ctx context.Context, d time.Duration, quick bool, nodeFlags []string) ([]benchRow, error) {
	rooms, subs := 100, 10
	if quick {
		rooms = 20
	}
	flags := []string{"--log-level", "warn", "--publish-rate", "1e12", "--publish-burst", "1000000000",
		"--send-queue", "65536", "--max-addr-conns", "1000000", "--max-room-conns", "1000000"}
	var nodes []*proc.Proc
	defer func() {
		for _, s := range nodes {
			s.Stop(stopTimeout)
		}
	}()
	seed := ""
	for i := range 3 {
		s, err := startRoost(ctx, "node", fmt.Sprintf("soak-n%d", i+1), seed, append(flags, nodeFlags...)...)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, s)
		if seed == "" {
			seed = s.Gossip
		}
	}
	rt, err := startRoost(ctx, "router", "soak-r1", seed, "--log-level", "warn", "--max-addr-conns", "1000000")
	if err != nil {
		return nil, err
	}
	members := append([]*proc.Proc{rt}, nodes...)
	defer rt.Stop(stopTimeout)
	if err := proc.WaitRing(ctx, members, 3, 30*time.Second); err != nil {
		return nil, err
	}
	rig, err := dialFanout(ctx, "ws://"+rt.HTTP, rooms, subs)
	if err != nil {
		return nil, err
	}
	defer rig.close()

	before, err := soakCounters(members)
	if err != nil {
		return nil, err
	}
	busy0, total0, err := machineCPU()
	if err != nil {
		return nil, err
	}
	n0 := rig.received()
	watch := &verdicts{start: time.Now()}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { watch.run(wctx, members) })
	err = rig.publish(ctx, d, func() *rate.Limiter { return nil })
	stop()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	delivered := rig.received() - n0
	busy1, total1, _ := machineCPU()
	after, err := soakCounters(members)
	if err != nil {
		return nil, err
	}
	cpu := 100 * float64(busy1-busy0) / float64(max(total1-total0, 1))
	changes, stale := 0.0, 0.0
	for i := range members {
		changes += after[i].ringChanges - before[i].ringChanges
		stale += after[i].staleDrops - before[i].staleDrops
	}
	name := fmt.Sprintf("soak %s, 3 nodes + router, no kill", d)
	return []benchRow{
		{Workload: name, Metric: "false dead verdicts", Roost: float64(watch.dead), Goal: "0", Met: watch.dead == 0 && cpu >= 80,
			Detail: map[string]float64{"machine_cpu_pct": cpu, "suspect_seen": float64(watch.suspect), "dead_verdicts_on_router": float64(watch.deadRouters), "ring_changes": changes,
				"stale_node_drops": stale, "deliveries_per_s": float64(delivered) / d.Seconds(), "polls": float64(watch.polls)}},
		{Workload: name, Metric: "machine CPU %", Roost: cpu, Goal: "≥ 80", Met: cpu >= 80},
	}, nil
}

// verdicts polls every member's view of the cluster and counts members seen in a state other
// than alive: dead or left (a false verdict, as nobody was stopped) and suspect.
type verdicts struct {
	start                             time.Time
	dead, deadRouters, suspect, polls int
}

func (v *verdicts) run(ctx context.Context, members []*proc.Proc) {
	was := map[string]string{} // observer/member -> state at the last poll
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
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
	}
}

type soakCount struct{ ringChanges, staleDrops float64 }

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
