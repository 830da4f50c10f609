package ring

import (
	"encoding/json"
	"fmt"
)

// Role is what a member does in the cluster.
type Role string

const (
	// RoleNode owns rooms.
	RoleNode Role = "node"
	// RoleRouter proxies and redirects; it is a member but is never placed.
	RoleRouter Role = "router"
)

// State is a member's state as the cluster sees it.
type State string

const (
	StateAlive    State = "alive"
	StateDraining State = "draining" // alive, but handing its rooms off: not placed
	StateLeft     State = "left"
	StateDead     State = "dead"
)

// Meta is what a member gossips about itself. It travels in memberlist's node metadata, which is
// limited to 512 bytes, so field names are short.
type Meta struct {
	Role     Role   `json:"r"`
	HTTP     string `json:"h"`           // host:port clients and peers reach its HTTP listener on
	TCP      string `json:"t,omitempty"` // host:port of stream ingest (nodes only)
	TLS      bool   `json:"s,omitempty"` // HTTP listener speaks TLS
	Draining bool   `json:"d,omitempty"`
	// Leaving is set just before a graceful leave, so the others can tell "left" from "dead":
	// memberlist does not say which in its leave event.
	Leaving bool `json:"l,omitempty"`
	Rooms   int  `json:"n,omitempty"` // rooms held, refreshed now and then; for operators only
	Conns   int  `json:"c,omitempty"` // client connections held, likewise
	// Replicas is a node's --room-replicas; Under its rooms with fewer replicas than that, as
	// last counted (for operators).
	Replicas int `json:"p,omitempty"`
	Under    int `json:"u,omitempty"`
	// Edge: a node serves routers' edge legs (one connection per router and room); Edges is how
	// many it holds, as last counted.
	Edge  bool `json:"e,omitempty"`
	Edges int  `json:"g,omitempty"`
}

// maxMetaSize is memberlist's limit on node metadata.
const maxMetaSize = 512

func (m Meta) encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > maxMetaSize {
		return nil, fmt.Errorf("node metadata is %d bytes, memberlist allows %d: shorten the advertised addresses", len(b), maxMetaSize)
	}
	return b, nil
}

func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, fmt.Errorf("no metadata")
	}
	err := json.Unmarshal(b, &m)
	return m, err
}

// Member is one member of the cluster as this process sees it.
type Member struct {
	ID     string // unique name (the --id flag)
	Gossip string // host:port of its gossip listener
	State  State
	Meta
}

// WSURL is the WebSocket URL of room on this member.
func (m Member) WSURL(room string) string {
	scheme := "ws"
	if m.TLS {
		scheme = "wss"
	}
	return scheme + "://" + m.HTTP + "/v1/rooms/" + room + "/ws"
}

// HTTPURL is the base URL of the member's HTTP listener, without a trailing slash.
func (m Member) HTTPURL() string {
	if m.TLS {
		return "https://" + m.HTTP
	}
	return "http://" + m.HTTP
}

// Live reports whether the member is up: alive, or alive and draining.
func (m Member) Live() bool { return m.State == StateAlive || m.State == StateDraining }

// placed reports whether the member takes rooms.
func (m Member) placed() bool {
	return m.Role == RoleNode && !m.Draining && !m.Leaving && m.State == StateAlive
}
