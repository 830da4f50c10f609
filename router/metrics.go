package router

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
}

func newMetrics(rt *Router) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		opened: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_router_connections_total",
			Help: "WebSocket connections proxied."}),
		dials: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "roost_router_dials_total",
			Help: "Dials to room owners, by result (ok, redirect, error, refused)."}, []string{"result"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "roost_router_frames_total",
			Help: "Frames proxied, by direction (up: client to owner, down: owner to client)."}, []string{"direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "roost_router_bytes_total",
			Help: "Payload bytes proxied, by direction."}, []string{"direction"}),
		redirects: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_redirects_total",
			Help: "Resolve requests answered with a redirect to the owner."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "roost_refused_total",
			Help: "Requests refused, by reason."}, []string{"reason"}),
	}
	m.redials = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "roost_router_redials_total",
		Help: "Owner legs replaced after a room moved or its owner went away, by result (ok, failed)."}, []string{"result"})
	m.reg.MustRegister(m.redials, m.opened, m.dials, m.frames, m.bytes, m.redirects, m.refused,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_router_connections", Help: "Open proxied connections."},
			func() float64 { return float64(rt.Sessions()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_ring_nodes", Help: "Nodes in this member's placement."},
			func() float64 { return float64(len(rt.ring.Placement().Nodes())) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for _, d := range []string{"up", "down"} {
		m.frames.WithLabelValues(d)
		m.bytes.WithLabelValues(d)
	}
	return m
}
