package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/roost-dev/roost/internal/httpapi"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/node/webhook"
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
	handoffTails   prometheus.Counter
	settled        *prometheus.CounterVec
	fences         prometheus.Counter
	leaseExpired   prometheus.Counter
	ingestFrames   prometheus.Counter
	ingestBytes    prometheus.Counter
	ingestSources  prometheus.Gauge
	ingestThrottle prometheus.Counter
	pauses         *prometheus.CounterVec
	pauseDecision  prometheus.Histogram
	apiPublishes   prometheus.Counter
}

func newMetrics(n *Node) *metrics {
	reg := httpapi.NewRegistry(n.ring)
	f := promauto.With(reg) // registers each metric as it is made
	counter := func(name, help string) prometheus.Counter {
		return f.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	// counterVec makes a counter with one label and creates each of its known values at 0, so
	// a scrape shows them before they first happen.
	counterVec := func(name, help, label string, values ...string) *prometheus.CounterVec {
		c := f.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
		for _, v := range values {
			c.WithLabelValues(v)
		}
		return c
	}
	gauge := func(name, help string, value func() float64) {
		f.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, value)
	}
	m := &metrics{
		reg:        reg,
		messages:   counter("roost_messages_total", "Messages sequenced by rooms on this node."),
		deliveries: counter("roost_deliveries_total", "Room messages written to client connections."),
		dedup:      counter("roost_publish_duplicates_total", "Publishes acked again for a remembered id and not delivered twice."),
		drops: counterVec("roost_drops_total", "Connections dropped or frames refused, by reason.", "reason",
			"slow_consumer"),
		connects: counter("roost_connections_opened_total", "WebSocket connections accepted."),
		refused: counterVec("roost_refused_total", "Requests refused, by reason.", "reason",
			"overloaded", "ingest_overloaded", "memory", "handshakes"),
		redirects:    counter("roost_redirects_total", "Requests redirected to another owner."),
		apiPublishes: counter("roost_api_publishes_total", "Server API publishes acknowledged (retries of a remembered id included)."),
		ringChanges:  counter("roost_ring_changes_total", "Placement versions adopted."),
		roomsLost:    counter("roost_rooms_lost_total", "Rooms handed off to another node after a ring change."),
		roomsGained: counterVec("roost_rooms_gained_total",
			"Rooms this node started serving: handoff (state received), fresh (no previous owner held it), timeout (the previous owner stayed silent: state lost), replica (a replica copy promoted after its owner died).",
			"how", "handoff", "fresh", "timeout", "replica"),
		handoffs: counterVec("roost_handoffs_total", "Rooms sent to a new owner, by result (ok, refused, failed).", "result",
			"ok", "refused", "failed"),
		handoffBytes: counter("roost_handoff_bytes_total", "Bytes of room state sent in hand-offs."),
		handoffTails: counter("roost_handoff_tails_total",
			"Rooms handed to a node that held them already as a replica: only the messages it lacked were sent."),
		handoffSeconds: f.NewHistogram(prometheus.HistogramOpts{Name: "roost_handoff_duration_seconds",
			Help: "Time of one hand-off batch, from freeze to acceptance.", Buckets: prometheus.ExponentialBuckets(0.0005, 1.5, 24)}),
		settled: counterVec("roost_handoff_settled_total",
			"Parked rooms (a hand-off whose reply never came) settled with their receiver, by outcome: fenced (it never took the room; this copy goes on at a higher term), held (it holds the room; this copy closed), refounded (it is gone; this copy goes on in a new epoch), and with replication on, when it is gone: replica (a replica of its copy holds the room; this copy closed), kept (nobody holds the room; this copy goes on in its epoch).",
			"outcome", "fenced", "held", "refounded", "replica", "kept"),
		fences: counter("roost_handoff_fences_total",
			"Hand-off attempts this node promised a sender never to install (its reply was lost and it did not hold the room)."),
		leaseExpired: counter("roost_lease_expired_total",
			"Rooms this node's ring gave to another node that stopped taking writes because the new owner stayed out of reach past the lease."),
		reclaimed:     counter("roost_rooms_reclaimed_total", "Idle rooms reclaimed."),
		ingestFrames:  counter("roost_ingest_frames_total", "Frames TCP stream sources put into rooms."),
		ingestBytes:   counter("roost_ingest_bytes_total", "Payload bytes TCP stream sources put into rooms."),
		ingestSources: f.NewGauge(prometheus.GaugeOpts{Name: "roost_ingest_sources", Help: "Connected TCP stream sources."}),
		pauses: counterVec("roost_pauses_total",
			"Pauses longer than --stale-after this node woke from holding rooms, by outcome: kept (no peer took over) or dropped.",
			"outcome"),
		pauseDecision: f.NewHistogram(prometheus.HistogramOpts{Name: "roost_pause_decision_seconds",
			Help:    "Time from waking from a pause to deciding whether to keep the rooms; the node serves no room meanwhile.",
			Buckets: prometheus.ExponentialBuckets(0.05, 1.5, 14)}),
		ingestThrottle: counter("roost_ingest_throttled_seconds_total", "Time stream sources were held back by --ingest-rate."),
	}
	gauge("roost_rooms", "Rooms held by this node.", func() float64 { return float64(n.rooms.Len()) })
	gauge("roost_minority",
		"1 while this node has lost touch with most of the cluster at once and takes no writes (--minority-hold).",
		func() float64 {
			if n.quorum != nil && n.quorum.Minority() {
				return 1
			}
			return 0
		})
	gauge("roost_peers_reached", "Other nodes that answered this node's heartbeat within 4 intervals.",
		func() float64 {
			if n.quorum == nil {
				return 0
			}
			return float64(n.quorum.Reached())
		})
	gauge("roost_connections", "Open client connections: direct, and routers' clients on edge legs.", func() float64 { return float64(n.clientConns()) })
	gauge("roost_handshakes_in_progress", "WebSocket handshakes under way (--max-handshakes bounds them).",
		func() float64 { return float64(n.door.Limits.Handshakes.Len()) })
	gauge("roost_edge_legs", "Routers' edge legs served: one connection per router and room, however many clients it carries.",
		func() float64 { return float64(n.Edges()) })
	gauge("roost_edge_clients", "Routers' clients on the edge legs served.", func() float64 { return float64(n.edgeClients()) })
	gauge("roost_memory_budget_used_bytes",
		"Memory the node keeps for its clients, as its budget counts it: room history, queued messages, remembered ids.",
		func() float64 { return float64(n.budget().Used()) })
	gauge("roost_memory_budget_bytes", "The node's memory budget (--memory-budget-mib); 0: unbounded.",
		func() float64 { return float64(n.budget().Limit()) })
	return m
}

// budget is the node's memory budget, once its rooms' config is made.
func (n *Node) budget() *limit.Budget {
	if n.roomCfg == nil {
		return nil
	}
	return n.roomCfg.Budget
}

// webhookMetrics registers the webhook dispatcher's metrics, and roost_webhook_pending: the
// events waiting in the outboxes of the rooms this node holds.
func (m *metrics) webhookMetrics(n *Node) webhook.Metrics {
	f := promauto.With(m.reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_webhook_pending", Help: "Webhook events not delivered yet, in the outboxes of the rooms this node holds."},
		func() float64 {
			total := 0
			for _, r := range n.rooms.All() {
				total += r.OutboxLen()
			}
			return float64(total)
		})
	events := f.NewCounterVec(prometheus.CounterOpts{Name: "roost_webhook_events_total",
		Help: "Webhook events, by result: delivered, failed (in a batch that failed; it is retried), dropped (over --webhook-max-bytes)."}, []string{"result"})
	batches := f.NewCounterVec(prometheus.CounterOpts{Name: "roost_webhook_batches_total",
		Help: "Webhook POSTs, by result: ok (2xx), failed (another status, a timeout or an error)."}, []string{"result"})
	for _, v := range []string{"delivered", "failed", "dropped"} {
		events.WithLabelValues(v)
	}
	batches.WithLabelValues("ok")
	batches.WithLabelValues("failed")
	return webhook.Metrics{Events: events, Batches: batches,
		Latency: f.NewHistogram(prometheus.HistogramOpts{Name: "roost_webhook_delivery_seconds",
			Help: "Seconds from a webhook event to its delivery (retries included).", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)})}
}
