package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/roost-dev/roost/internal/httpapi"
	"github.com/roost-dev/roost/limit"
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
	settled        *prometheus.CounterVec
	fences         prometheus.Counter
	leaseExpired   prometheus.Counter
	ingestFrames   prometheus.Counter
	ingestBytes    prometheus.Counter
	ingestSources  prometheus.Gauge
	ingestThrottle prometheus.Counter
	pauses         *prometheus.CounterVec
	pauseDecision  prometheus.Histogram
}

func newMetrics(n *Node) *metrics {
	reg := httpapi.NewRegistry(n.ring)
	f := promauto.With(reg) // registers each metric as it is made
	m := &metrics{
		reg: reg,
		messages: f.NewCounter(prometheus.CounterOpts{Name: "roost_messages_total",
			Help: "Messages sequenced by rooms on this node."}),
		deliveries: f.NewCounter(prometheus.CounterOpts{Name: "roost_deliveries_total",
			Help: "Room messages written to client connections."}),
		dedup: f.NewCounter(prometheus.CounterOpts{Name: "roost_publish_duplicates_total",
			Help: "Publishes acked again for a remembered id and not delivered twice."}),
		drops: f.NewCounterVec(prometheus.CounterOpts{Name: "roost_drops_total",
			Help: "Connections dropped or frames refused, by reason."}, []string{"reason"}),
		connects: f.NewCounter(prometheus.CounterOpts{Name: "roost_connections_opened_total",
			Help: "WebSocket connections accepted."}),
		refused: f.NewCounterVec(prometheus.CounterOpts{Name: "roost_refused_total",
			Help: "Requests refused, by reason."}, []string{"reason"}),
		redirects: f.NewCounter(prometheus.CounterOpts{Name: "roost_redirects_total",
			Help: "Requests redirected to another owner."}),
		ringChanges: f.NewCounter(prometheus.CounterOpts{Name: "roost_ring_changes_total",
			Help: "Placement versions adopted."}),
		roomsLost: f.NewCounter(prometheus.CounterOpts{Name: "roost_rooms_lost_total",
			Help: "Rooms handed off to another node after a ring change."}),
		roomsGained: f.NewCounterVec(prometheus.CounterOpts{Name: "roost_rooms_gained_total",
			Help: "Rooms this node started serving: handoff (state received), fresh (no previous owner held it), timeout (the previous owner stayed silent: state lost)."},
			[]string{"how"}),
		handoffs: f.NewCounterVec(prometheus.CounterOpts{Name: "roost_handoffs_total",
			Help: "Rooms sent to a new owner, by result (ok, refused, failed)."}, []string{"result"}),
		handoffBytes: f.NewCounter(prometheus.CounterOpts{Name: "roost_handoff_bytes_total",
			Help: "Bytes of room state sent in hand-offs."}),
		handoffSeconds: f.NewHistogram(prometheus.HistogramOpts{Name: "roost_handoff_duration_seconds",
			Help: "Time of one hand-off batch, from freeze to acceptance.", Buckets: prometheus.ExponentialBuckets(0.0005, 1.5, 24)}),
		settled: f.NewCounterVec(prometheus.CounterOpts{Name: "roost_handoff_settled_total",
			Help: "Parked rooms (a hand-off whose reply never came) settled with their receiver, by outcome: fenced (it never took the room; this copy goes on at a higher term), held (it holds the room; this copy closed), refounded (it is gone; this copy goes on in a new epoch)."},
			[]string{"outcome"}),
		fences: f.NewCounter(prometheus.CounterOpts{Name: "roost_handoff_fences_total",
			Help: "Hand-off attempts this node promised a sender never to install (its reply was lost and it did not hold the room)."}),
		leaseExpired: f.NewCounter(prometheus.CounterOpts{Name: "roost_lease_expired_total",
			Help: "Rooms this node's ring gave to another node that stopped taking writes because the new owner stayed out of reach past the lease."}),
		reclaimed: f.NewCounter(prometheus.CounterOpts{Name: "roost_rooms_reclaimed_total",
			Help: "Idle rooms reclaimed."}),
		ingestFrames: f.NewCounter(prometheus.CounterOpts{Name: "roost_ingest_frames_total",
			Help: "Frames TCP stream sources put into rooms."}),
		ingestBytes: f.NewCounter(prometheus.CounterOpts{Name: "roost_ingest_bytes_total",
			Help: "Payload bytes TCP stream sources put into rooms."}),
		ingestSources: f.NewGauge(prometheus.GaugeOpts{Name: "roost_ingest_sources",
			Help: "Connected TCP stream sources."}),
		pauses: f.NewCounterVec(prometheus.CounterOpts{Name: "roost_pauses_total",
			Help: "Pauses longer than --stale-after this node woke from holding rooms, by outcome: kept (no peer took over) or dropped."},
			[]string{"outcome"}),
		pauseDecision: f.NewHistogram(prometheus.HistogramOpts{Name: "roost_pause_decision_seconds",
			Help:    "Time from waking from a pause to deciding whether to keep the rooms; the node serves no room meanwhile.",
			Buckets: prometheus.ExponentialBuckets(0.05, 1.5, 14)}),
		ingestThrottle: f.NewCounter(prometheus.CounterOpts{Name: "roost_ingest_throttled_seconds_total",
			Help: "Time stream sources were held back by --ingest-rate."}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_rooms", Help: "Rooms held by this node."},
		func() float64 { return float64(n.rooms.Len()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_minority",
		Help: "1 while this node has lost touch with most of the cluster at once and takes no writes (--minority-hold)."},
		func() float64 {
			if n.quorum != nil && n.quorum.Minority() {
				return 1
			}
			return 0
		})
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_peers_reached",
		Help: "Other nodes that answered this node's heartbeat within 4 intervals."},
		func() float64 {
			if n.quorum == nil {
				return 0
			}
			return float64(n.quorum.Reached())
		})
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_connections", Help: "Open client connections."},
		func() float64 { return float64(n.conns.Load()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_memory_budget_used_bytes",
		Help: "Memory the node keeps for its clients, as its budget counts it: room history, queued messages, remembered ids."},
		func() float64 { return float64(n.budget().Used()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_memory_budget_bytes",
		Help: "The node's memory budget (--memory-budget-mib); 0: unbounded."},
		func() float64 { return float64(n.budget().Limit()) })
	for _, r := range []string{"overloaded", "ingest_overloaded", "memory"} {
		m.refused.WithLabelValues(r)
	}
	for _, r := range []string{"slow_consumer"} {
		m.drops.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "refused", "failed"} {
		m.handoffs.WithLabelValues(r)
	}
	for _, o := range []string{"fenced", "held", "refounded"} {
		m.settled.WithLabelValues(o)
	}
	for _, h := range []string{"handoff", "fresh", "timeout"} {
		m.roomsGained.WithLabelValues(h)
	}
	return m
}

// budget is the node's memory budget, once its rooms' config is made.
func (n *Node) budget() *limit.Budget {
	if n.roomCfg == nil {
		return nil
	}
	return n.roomCfg.Budget
}
