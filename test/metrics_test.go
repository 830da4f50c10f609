package test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/proc"
)

// TestMetricsMoveWithTraffic scrapes /metrics of real node and router processes after traffic,
// a refused request and a drain, and checks that each counter moved as much as it must.
func TestMetricsMoveWithTraffic(t *testing.T) {
	nodes, rt := startProcClusterWithRouter(t, 2)
	var room string
	for r := range roomsByOwner(t, rt, "metrics-", 1, "n1") {
		room = r
	}
	n1, n2 := nodes[0], nodes[1]

	sub, err := client.Dial(t.Context(), n1.URL(), room, &client.Options{DisableReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	pub, err := client.Dial(t.Context(), rt.URL(), room, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for i := range 20 {
		if _, err := pub.PublishID(t.Context(), fmt.Sprint("m", i), i); err != nil {
			t.Fatal(err)
		}
	}
	for got := 0; got < 20; {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		ev, err := sub.Next(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == client.EventMessage {
			got++
		}
	}
	if resp, err := quickHTTP.Get(n1.URL() + "/v1/rooms/bad%20room"); err == nil {
		resp.Body.Close()
	}

	atLeast := func(p *proc.Proc, name string, min float64, label ...string) {
		t.Helper()
		var v float64
		if len(label) == 2 {
			v = labelled(t, p, name, label[0], label[1])
		} else {
			v = gauge(t, p, name)
		}
		if v < min {
			t.Errorf("%s: %s%v = %v, want ≥ %v", p.ID, name, label, v, min)
		}
	}
	atLeast(n1, "roost_messages_total", 20)
	atLeast(n1, "roost_deliveries_total", 40) // to the subscriber and back to the publisher
	atLeast(n1, "roost_connections_opened_total", 2)
	atLeast(n1, "roost_connections", 2)
	atLeast(n1, "roost_rooms", 1)
	atLeast(n1, "roost_ring_nodes", 2)
	atLeast(n1, "roost_ring_changes_total", 1)
	atLeast(n1, "roost_refused_total", 1, "reason", "bad_room")
	atLeast(n1, "roost_rooms_gained_total", 1, "how", "fresh")
	atLeast(rt, "roost_router_connections_total", 1)
	atLeast(rt, "roost_router_connections", 1)
	atLeast(rt, "roost_router_dials_total", 1, "result", "ok")
	atLeast(rt, "roost_router_frames_total", 20, "direction", "up")
	atLeast(rt, "roost_router_frames_total", 20, "direction", "down")
	atLeast(rt, "roost_redirects_total", 1) // roomsByOwner resolved through it

	// Drain n1: its room is handed to n2 and the router re-dials there, and n2 adopts a new
	// placement (how many it adopted before depends on whether it joined before it subscribed).
	changes := gauge(t, n2, "roost_ring_changes_total")
	sub.Close()
	n1.Signal(syscall.SIGTERM)
	<-n1.Exited()
	if _, err := pub.PublishID(t.Context(), "after", "x"); err != nil {
		t.Fatal(err)
	}
	atLeast(n2, "roost_rooms_gained_total", 1, "how", "handoff")
	atLeast(n2, "roost_ring_changes_total", changes+1)
	atLeast(rt, "roost_router_redials_total", 1, "result", "ok")
	if v := gauge(t, n2, "roost_ring_nodes"); v != 1 {
		t.Errorf("n2: roost_ring_nodes = %v after the drain, want 1", v)
	}
}

// The readers of a process's /metrics that tests share.

// metrics reads p's /metrics.
func metrics(t *testing.T, p *proc.Proc) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := scrape(p.URL())
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// gauge reads one unlabelled gauge or counter from p's /metrics.
func gauge(t *testing.T, p *proc.Proc, name string) float64 {
	t.Helper()
	v, err := unlabelled(p, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// labelled reads the value of metric name{label="value"} from p's /metrics (0 when absent).
func labelled(t *testing.T, p *proc.Proc, name, label, value string) float64 {
	t.Helper()
	v, err := metricValue(p, name, label, value)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// metricValue is labelled for goroutines other than the test's: it returns its error.
func metricValue(p *proc.Proc, name, label, value string) (float64, error) {
	fams, err := scrape(p.URL())
	if err != nil {
		return 0, fmt.Errorf("%s /metrics: %w", p.ID, err)
	}
	for _, m := range fams[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue(), nil
			}
		}
	}
	return 0, nil
}

// unlabelled is gauge for goroutines other than the test's: it returns its error.
func unlabelled(p *proc.Proc, name string) (float64, error) {
	fams, err := scrape(p.URL())
	if err != nil {
		return 0, err
	}
	f := fams[name]
	if f == nil || len(f.Metric) == 0 {
		return 0, fmt.Errorf("%s has no metric %s", p.ID, name)
	}
	return f.Metric[0].GetGauge().GetValue() + f.Metric[0].GetCounter().GetValue(), nil
}

// heap is p's go_memstats_heap_alloc_bytes.
func heap(t *testing.T, p *proc.Proc) float64 { return gauge(t, p, "go_memstats_heap_alloc_bytes") }
