package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/roost-dev/roost/internal/proc"
)

// benchIdle opens idle subscribers (no traffic, as most of a big room's viewers are) straight to
// a node, then through a router, and reports the memory each costs the process holding it: RSS
// and Go heap in use, after minus before, per connection. The size is 50,000; a process
// may hold far fewer files on some machines, so it opens as many as fit and says how many.
func benchIdle(ctx context.Context, quick bool) ([]benchRow, error) {
	want := 50_000
	if quick {
		want = 500
	}
	direct := min(want, fileLimit()-3000)
	proxied := min(want, (fileLimit()-3000)/2)
	node, err := startBenchNode(ctx)
	if err != nil {
		return nil, err
	}
	defer node.Stop(stopTimeout)
	nodeRSS, nodeHeap, err := idleCost(ctx, node, "ws://"+node.HTTP, direct)
	if err != nil {
		return nil, fmt.Errorf("idle at the node: %w", err)
	}
	rt, err := startBenchRouter(ctx, node)
	if err != nil {
		return nil, err
	}
	defer rt.Stop(stopTimeout)
	rtRSS, rtHeap, err := idleCost(ctx, rt, "ws://"+rt.HTTP, proxied)
	if err != nil {
		return nil, fmt.Errorf("idle through the router: %w", err)
	}
	return []benchRow{
		{Workload: fmt.Sprintf("idle %d at the owner", direct), Metric: "KiB RSS/conn", Roost: nodeRSS, Goal: "≤ 10 (stretch 4)", Met: nodeRSS <= 10,
			Detail: map[string]float64{"heap_kib_per_conn": nodeHeap, "connections": float64(direct)}},
		{Workload: fmt.Sprintf("idle %d at the owner", direct), Metric: "KiB heap+stack/conn", Roost: nodeHeap, Goal: "report"},
		{Workload: fmt.Sprintf("idle %d at the router", proxied), Metric: "KiB RSS/conn", Roost: rtRSS, Goal: "≤ 8", Met: rtRSS <= 8,
			Detail: map[string]float64{"heap_kib_per_conn": rtHeap, "connections": float64(proxied)}},
		{Workload: fmt.Sprintf("idle %d at the router", proxied), Metric: "KiB heap+stack/conn", Roost: rtHeap, Goal: "report"},
	}, nil
}

// idleCost opens n idle subscribers to base, spread over 100 rooms, and returns what s's RSS and
// Go heap plus goroutine stacks grew by, per connection, in KiB.
func idleCost(ctx context.Context, s *proc.Proc, base string, n int) (rss, heap float64, err error) {
	settle := func() (float64, float64, error) {
		time.Sleep(time.Second)
		r, err := rssOf(s.Pid())
		if err != nil {
			return 0, 0, err
		}
		h, err := memstat(s.URL(), "go_memstats_heap_inuse_bytes")
		if err != nil {
			return 0, 0, err
		}
		st, err := memstat(s.URL(), "go_memstats_stack_inuse_bytes")
		return r, h + st, err
	}
	rss0, heap0, err := settle()
	if err != nil {
		return 0, 0, err
	}
	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, 64)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ws, resp, err := dialer(i).DialContext(ctx, fmt.Sprintf("%s/v1/rooms/idle-%d/ws", base, i%100), nil)
			if err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("connection %d: %w%s", i, err, answer(resp))
				}
				mu.Unlock()
				return
			}
			conns[i] = ws
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if first != nil {
		return 0, 0, first
	}
	rss1, heap1, err := settle()
	if err != nil {
		return 0, 0, err
	}
	return (rss1 - rss0) / float64(n), (heap1 - heap0) / float64(n), nil
}

// rssOf is a process's resident memory, in KiB.
func rssOf(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}

// memstat reads one of the Go runtime's gauges (go_memstats_…_bytes) from a member's /metrics,
// in KiB.
func memstat(base, name string) (float64, error) {
	fams, err := scrape(base)
	if err != nil {
		return 0, err
	}
	f := fams[name]
	if f == nil || len(f.Metric) == 0 {
		return 0, fmt.Errorf("%s/metrics has no %s", base, name)
	}
	return f.Metric[0].GetGauge().GetValue() / 1024, nil
}

// scrape reads a member's /metrics.
func scrape(base string) (map[string]*dto.MetricFamily, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}
