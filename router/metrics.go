package router

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/roost-dev/roost/internal/httpapi"
)

// metrics are the router's Prometheus metrics, in a registry of its own.
type metrics struct {
	reg       *prometheus.Registry
	opened    prometheus.Counter
	dials     *prometheus.CounterVec
	frames    *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	redirects prometheus.Counter
	refused   *prometheus.CounterVec
	redials   *prometheus.CounterVec
	legs      *prometheus.CounterVec
	drops     *prometheus.CounterVec
}

func newMetrics(rt *Router) *metrics {
	reg := httpapi.NewRegistry(rt.ring)
	f := promauto.With(reg) // registers each metric as it is made
	m := &metrics{
		reg: reg,
		opened: f.NewCounter(prometheus.CounterOpts{Name: "roost_router_connections_total",
			Help: "WebSocket connections proxied."}),
		dials: f.NewCounterVec(prometheus.CounterOpts{Name: "roost_router_dials_total",
			Help: "Dials to room owners, by result (ok, redirect, error, refused)."}, []string{"result"}),
		frames: f.NewCounterVec(prometheus.CounterOpts{Name: "roost_router_frames_total",
			Help: "Frames proxied, by direction (up: client to owner, down: owner to client)."}, []string{"direction"}),
		bytes: f.NewCounterVec(prometheus.CounterOpts{Name: "roost_router_bytes_total",
			Help: "Payload bytes proxied, by direction."}, []string{"direction"}),
		redirects: f.NewCounter(prometheus.CounterOpts{Name: "roost_redirects_total",
			Help: "Resolve requests answered with a redirect to the owner."}),
		refused: f.NewCounterVec(prometheus.CounterOpts{Name: "roost_refused_total",
			Help: "Requests refused, by reason."}, []string{"reason"}),
	}
	m.redials = f.NewCounterVec(prometheus.CounterOpts{Name: "roost_router_redials_total",
		Help: "Owner legs replaced after a room moved or its owner went away, by result (ok, failed)."}, []string{"result"})
	m.legs = f.NewCounterVec(prometheus.CounterOpts{Name: "roost_router_edge_legs_total",
		Help: "Edge legs (one connection per room to its owner, shared by the router's clients in the room), by event (opened, closed)."}, []string{"event"})
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_router_edge_legs", Help: "Open edge legs."},
		func() float64 { return float64(rt.Legs()) })
	m.drops = f.NewCounterVec(prometheus.CounterOpts{Name: "roost_drops_total",
		Help: "Clients of edge legs the router closed, by reason (slow_consumer: 4008)."}, []string{"reason"})
	m.drops.WithLabelValues("slow_consumer")
	for _, e := range []string{"opened", "closed"} {
		m.legs.WithLabelValues(e)
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_router_connections", Help: "Open client connections (proxied or on edge legs)."},
		func() float64 { return float64(rt.Sessions()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_handshakes_in_progress", Help: "WebSocket handshakes under way (--max-handshakes bounds them)."},
		func() float64 { return float64(rt.door.Handshakes.Len()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_memory_budget_used_bytes",
		Help: "Memory the router keeps for its clients, as its budget counts it: publishes waiting for their ack."},
		func() float64 { return float64(rt.budget.Used()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_memory_budget_bytes",
		Help: "The router's memory budget (--memory-budget-mib); 0: unbounded."},
		func() float64 { return float64(rt.budget.Limit()) })
	m.refused.WithLabelValues("overloaded")
	m.refused.WithLabelValues("handshakes")
	for _, d := range []string{"up", "down"} {
		m.frames.WithLabelValues(d)
		m.bytes.WithLabelValues(d)
	}
	return m
}
