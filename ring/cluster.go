package ring

import "github.com/roost-dev/roost/protocol"

// Cluster is the public view of this placement, as GET /v1/cluster answers it.
func (p *Placement) Cluster(self string) protocol.Cluster {
	c := protocol.Cluster{Self: self, Ring: p.version, Partitions: p.cfg.Partitions, Rooms: map[string]int{},
		Members: make([]protocol.Member, 0, len(p.members))}
	for _, m := range p.members {
		pm := protocol.Member{ID: m.ID, Role: string(m.Role), HTTP: m.HTTP, TCP: m.TCP,
			State: string(m.State), Gossip: m.Gossip, Rooms: m.Rooms, Conns: m.Conns}
		if m.Role == RoleNode {
			pm.UnderReplicated = &m.Under
			pm.Edges = &m.Edges
		}
		c.Members = append(c.Members, pm)
		if m.Role == RoleNode && m.Live() {
			c.Rooms[m.ID] = m.Rooms
			c.RoomReplicas = max(c.RoomReplicas, m.Replicas)
		}
	}
	return c
}
