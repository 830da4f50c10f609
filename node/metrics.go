package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the node's Prometheus metrics, in a registry of its own so several nodes can run
// in one process (roost dev, tests).
type metrics struct {
	reg         *prometheus.Registry
	messages    prometheus.Counter
	deliveries  prometheus.Counter
	dedup       prometheus.Counter
	drops       *prometheus.CounterVec
	connects    prometheus.Counter
	refused     *prometheus.CounterVec
	redirects   prometheus.Counter
	ringChanges prometheus.Counter
	roomsMoved  prometheus.Counter
	reclaimed   prometheus.Counter
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
		roomsMoved: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_rooms_lost_total",
			Help: "Rooms closed here because the ring gave them to another node."}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{Name: "roost_rooms_reclaimed_total",
			Help: "Idle rooms reclaimed."}),
	}
	m.reg.MustRegister(m.messages, m.deliveries, m.dedup, m.drops, m.connects, m.refused, m.redirects,
		m.ringChanges, m.roomsMoved, m.reclaimed,
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
	return m
}
