package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/roost-dev/roost/internal/proc"
	"golang.org/x/time/rate"
)

// benchQuiet is where chat lives: many small rooms, each quiet. 500 rooms of 4 subscribers at a
// fixed 4,000 messages per second in all (8 a second per room: a connection gets a frame every
// 125 ms, so nothing batches and whatever is paid per message is paid per delivery). The server's
// CPU per delivery and the delivery latency, roost against the minimal broadcast server, each
// measured at that rate in the same run.
func benchQuiet(ctx context.Context, d time.Duration, quick bool) ([]benchRow, error) {
	rooms, subs, perSecond := 500, 4, 4000.0
	if quick {
		rooms, perSecond = 100, 800
	}
	// The two servers alternate, three runs each (one when quick), and the medians are
	// compared: on two cores shared with the load generator one run's figures swing by a fifth.
	rounds := 3
	if quick {
		rounds = 1
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var roosts, bases []fanoutResult
	for range rounds {
		node, err := startBenchNode(ctx)
		if err != nil {
			return nil, err
		}
		r, err := runQuiet(ctx, "roost", "ws://"+node.HTTP, node.Pid(), rooms, subs, perSecond, d)
		node.Stop(stopTimeout)
		if err != nil {
			return nil, err
		}
		b, err := proc.Start(ctx, proc.Spec{Binary: self, Role: "baseline", Ready: "/readyz"})
		if err != nil {
			return nil, err
		}
		bl, err := runQuiet(ctx, "baseline", "ws://"+b.HTTP, b.Pid(), rooms, subs, perSecond, d)
		b.Stop(stopTimeout)
		if err != nil {
			return nil, err
		}
		roosts, bases = append(roosts, r), append(bases, bl)
	}
	cpu := func(r fanoutResult) float64 { return r.CPUPerDeliver }
	p50 := func(r fanoutResult) float64 { return r.P50ms }
	p99 := func(r fanoutResult) float64 { return r.P99ms }
	roost := fanoutResult{CPUPerDeliver: medianOf(roosts, cpu), P50ms: medianOf(roosts, p50), P99ms: medianOf(roosts, p99)}
	base := fanoutResult{CPUPerDeliver: medianOf(bases, cpu), P50ms: medianOf(bases, p50), P99ms: medianOf(bases, p99)}
	for _, r := range roosts {
		roost.Lost += r.Lost
		roost.Duplicated += r.Duplicated
		roost.Reordered += r.Reordered
	}
	name := fmt.Sprintf("quiet rooms %d×%d at %.0f msg/s", rooms, subs, perSecond)
	clean := roost.Lost == 0 && roost.Duplicated == 0 && roost.Reordered == 0
	ratio := roost.CPUPerDeliver / base.CPUPerDeliver
	return []benchRow{
		{Workload: name, Metric: fmt.Sprintf("server CPU µs/delivery (median of %d)", rounds), Roost: roost.CPUPerDeliver, Baseline: base.CPUPerDeliver, Ratio: ratio,
			Goal: "≤ 1.0× baseline, 0 lost", Met: clean && ratio <= 1, Detail: map[string][]fanoutResult{"roost": roosts, "baseline": bases}},
		{Workload: name, Metric: fmt.Sprintf("p50 ms (median of %d)", rounds), Roost: roost.P50ms, Baseline: base.P50ms, Ratio: roost.P50ms / base.P50ms, Goal: "report"},
		{Workload: name, Metric: fmt.Sprintf("p99 ms (median of %d)", rounds), Roost: roost.P99ms, Baseline: base.P99ms, Ratio: roost.P99ms / base.P99ms, Goal: "≤ 2 ms", Met: roost.P99ms <= 2},
	}, nil
}

// runQuiet connects rooms×subs subscribers and a publisher per room to base and publishes
// perSecond messages in all, spread evenly over the rooms, for d: the server's CPU time (pid)
// per delivery and the delivery latency meanwhile; then checks every subscriber got every
// message once, in order.
func runQuiet(ctx context.Context, server, base string, pid, rooms, subs int, perSecond float64, d time.Duration) (fanoutResult, error) {
	res := fanoutResult{Server: server}
	rig, err := dialFanout(ctx, base, rooms, subs)
	if err != nil {
		return res, err
	}
	defer rig.close()
	perRoom := perSecond / float64(rooms)
	cpu0, err := cpuTime(pid)
	if err != nil {
		return res, err
	}
	n0, t0 := rig.received(), time.Now()
	rig.sampling.Store(true)
	if err := rig.publish(ctx, d, func() *rate.Limiter { return paced(perRoom) }); err != nil {
		return res, err
	}
	rig.sampling.Store(false)
	rig.catchUp(30 * time.Second)
	n1, t1 := rig.received(), time.Now()
	cpu1, _ := cpuTime(pid)
	res.Deliveries = n1 - n0
	res.PerSecond = float64(res.Deliveries) / t1.Sub(t0).Seconds()
	if res.Deliveries > 0 {
		res.CPUPerDeliver = float64((cpu1 - cpu0).Microseconds()) / float64(res.Deliveries)
	}
	rig.tally(&res)
	return res, nil
}

// paced is a limiter of perSecond publishes at a phase of its own, as people type: rooms that
// all published at the same instants would send the server bursts of every room at once, and a
// latency measured so would be the burst's queue.
func paced(perSecond float64) *rate.Limiter {
	l := rate.NewLimiter(rate.Limit(perSecond), 1)
	l.ReserveN(time.Now().Add(-rand.N(time.Duration(float64(time.Second)/perSecond))), 1)
	return l
}
