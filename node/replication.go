package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/roost-dev/roost/node/replica"
)

// replicationMetrics registers replication's metrics, for a node that replicates.
func (n *Node) replicationMetrics() replica.Metrics {
	f := promauto.With(n.metrics.reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_replica_copies", Help: "Replica copies of other nodes' rooms this node holds."},
		func() float64 { return float64(n.replicas.Store().Len()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_rooms_under_replicated",
		Help: "Rooms of this node with fewer replicas holding them than --room-replicas (and than there are other nodes)."},
		func() float64 { return float64(n.replicas.UnderReplicated()) })
	return replica.Metrics{
		Appends: f.NewCounter(prometheus.CounterOpts{Name: "roost_replication_appends_total",
			Help: "Messages this node applied to the replica copies it holds."}),
		Seeds: f.NewCounter(prometheus.CounterOpts{Name: "roost_replication_seeds_total",
			Help: "Replica copies seeded here with a room's whole state."}),
		Batches: f.NewCounter(prometheus.CounterOpts{Name: "roost_replication_batches_total",
			Help: "Replication batches this node sent to its rooms' replicas (each carries every message queued meanwhile)."}),
		Promoted: n.metrics.roomsGained.WithLabelValues("replica"),
	}
}
