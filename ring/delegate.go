package ring

import "github.com/hashicorp/memberlist"

// delegate connects memberlist's callbacks to the Ring. Metadata is the only state roost gossips;
// room state moves over HTTP between nodes, never through gossip. The event callbacks run under
// memberlist's lock: they copy what they need and must not call back into memberlist.
type delegate struct{ r *Ring }

func (d delegate) NodeMeta(limit int) []byte {
	b, err := d.r.meta.Load().encode()
	if err != nil || len(b) > limit {
		d.r.log.Error("node metadata does not fit", "limit", limit, "err", err)
		return nil
	}
	return b
}

func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d delegate) NotifyJoin(n *memberlist.Node) {
	d.r.seen(n)
	d.r.log.Info("member joined", "peer", n.Name, "addr", n.Address())
	d.r.nudge()
}

func (d delegate) NotifyLeave(n *memberlist.Node) {
	d.r.forget(n)
	d.r.nudge()
}

func (d delegate) NotifyUpdate(n *memberlist.Node) {
	d.r.seen(n)
	d.r.nudge()
}
