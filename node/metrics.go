package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the node's Prometheus metrics, in a registry of its own so several nodes can run
// in one process (roost dev, tests).
type metrics struct {
	reg            *prometheus.Registry
	messages       prometheus.Counter
	deliveries     prometheus.Counter
	dedup          prometheus.Counter
	drops          *prometheus.CounterVec
	connects       prometheus.Counter
	refused        *prometheus.CounterVec
	redirects      prometheus.Counter
	ringChanges    prometheus.Counter
	roomsLost      prometheus.Counter
	roomsGained    *prometheus.CounterVec
	reclaimed      prometheus.Counter
	handoffs       *prometheus.CounterVec
	handoffBytes   prometheus.Counter
	handoffSeconds prometheus.Histogram
	ingestFrames   prometheus.Counter
	ingestBytes    prometheus.Counter
	ingestSources  prometheus.Gauge
	ingestThrottle prometheus.Counter
	pauses         *prometheus.CounterVec
	pauseDecision  prometheus.Histogram
}

func newMetrics(n *Node) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		messages: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_messages_total",
			Help: "Messages sequenced by rooms on this node."}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_deliveries_total",
			Help: "Room messages written to client connections."}),
		dedup: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_publish_duplicates_total",
			Help: "Publishes acked again for a remembered id and not delivered twice."}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "roost_drops_total",
			Help: "Connections dropped or frames refused, by reason."}, []string{"reason"}),
		connects: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_connections_opened_total",
			Help: "WebSocket connections accepted."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "roost_refused_total",
			Help: "Requests refused, by reason."}, []string{"reason"}),
		redirects: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_redirects_total",
			Help: "Requests redirected to another owner."}),
		ringChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_ring_changes_total",
			Help: "Placement versions adopted."}),
		roomsLost: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_rooms_lost_total",
			Help: "Rooms handed off to another node after a ring change."}),
		roomsGained: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "roost_rooms_gained_total",
			Help: "Rooms this node started serving: handoff (state received), fresh (no previous owner held it), timeout (the previous owner stayed silent: state lost)."},
			[]string{"how"}),
		handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "roost_handoffs_total",
			Help: "Rooms sent to a new owner, by result (ok, refused, failed)."}, []string{"result"}),
		handoffBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_handoff_bytes_total",
			Help: "Bytes of room state sent in hand-offs."}),
		handoffSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "roost_handoff_duration_seconds",
			Help: "Time of one hand-off batch, from freeze to acceptance.", Buckets: prometheus.ExponentialBuckets(0.0005, 1.5, 24)}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_rooms_reclaimed_total",
			Help: "Idle rooms reclaimed."}),
		ingestFrames: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_ingest_frames_total",
			Help: "Frames TCP stream sources put into rooms."}),
		ingestBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_ingest_bytes_total",
			Help: "Payload bytes TCP stream sources put into rooms."}),
		ingestSources: prometheus.NewGauge(prometheus.GaugeOpts{Name: "roost_ingest_sources",
			Help: "Connected TCP stream sources."}),
		pauses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "roost_pauses_total",
			Help: "Pauses longer than --stale-after this node woke from holding rooms, by outcome: kept (no peer took over) or dropped."},
			[]string{"outcome"}),
		pauseDecision: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "roost_pause_decision_seconds",
			Help:    "Time from waking from a pause to deciding whether to keep the rooms; the node serves no room meanwhile.",
			Buckets: prometheus.ExponentialBuckets(0.05, 1.5, 14)}),
		ingestThrottle: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_ingest_throttled_seconds_total",
			Help: "Time stream sources were held back by --ingest-rate."}),
	}
	m.reg.MustRegister(m.messages, m.deliveries, m.dedup, m.drops, m.connects, m.refused, m.redirects,
		m.ringChanges, m.roomsLost, m.roomsGained, m.reclaimed, m.handoffs, m.handoffBytes, m.handoffSeconds,
		m.ingestFrames, m.ingestBytes, m.ingestSources, m.ingestThrottle, m.pauses, m.pauseDecision,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_rooms", Help: "Rooms held by this node."},
			func() float64 { return float64(n.rooms.len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_connections", Help: "Open client connections."},
			func() float64 { return float64(n.conns.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_ring_nodes", Help: "Nodes in this member's placement."},
			func() float64 { return float64(len(n.ring.Placement().Nodes())) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for _, r := range []string{"slow_consumer"} {
		m.drops.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "refused", "failed"} {
		m.handoffs.WithLabelValues(r)
	}
	for _, h := range []string{"handoff", "fresh", "timeout"} {
		m.roomsGained.WithLabelValues(h)
	}
	return m
}
