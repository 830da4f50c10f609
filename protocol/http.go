package protocol

import (
	"encoding/json"
	"net/http"
)

// Error is the JSON body of every HTTP error: {"error": "human sentence", "code": "snake_case"}.
type Error struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// Error codes of HTTP answers and error frames.
const (
	CodeBadRoom      = "bad_room"
	CodeBadRequest   = "bad_request"
	CodeBadJSON      = "bad_json"
	CodeUnknownType  = "unknown_type"
	CodeTooLarge     = "too_large"
	CodeNotReady     = "not_ready"
	CodeNoNodes      = "no_nodes"
	CodeUnavailable  = "owner_unavailable"
	CodeNotFound     = "not_found"
	CodeLimit        = "limit_reached"
	CodeRateLimited  = "rate_limited"
	CodeOrigin       = "origin_not_allowed"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeMoved        = "room_moved"
	CodeNoRoom       = "no_room" // the server API's reads of a room that does not exist
)

// WriteError answers with status and the JSON error body.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Error{Error: msg, Code: code})
}

// WriteJSON answers 200 with v as JSON.
func WriteJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// Owner is the answer of GET /v1/rooms/{room} on the room's owner.
type Owner struct {
	Room    string `json:"room"`
	Node    string `json:"node"`
	WSURL   string `json:"ws_url"`
	TCPAddr string `json:"tcp_addr"`
	Ring    string `json:"ring"` // the placement version the owner was chosen with
}

// Cluster is the answer of GET /v1/cluster.
type Cluster struct {
	Self       string         `json:"self"` // the member that answered (an extension)
	Members    []Member       `json:"members"`
	Ring       string         `json:"ring"`
	Partitions int            `json:"partitions"`
	Rooms      map[string]int `json:"rooms"` // rooms held per node id, as last gossiped
	// RoomReplicas is the nodes' --room-replicas (the largest, should they differ).
	RoomReplicas int `json:"room_replicas"`
}

// Member is one member in Cluster.
type Member struct {
	ID     string `json:"id"`
	Role   string `json:"role"`
	HTTP   string `json:"http"`
	TCP    string `json:"tcp,omitempty"`
	State  string `json:"state"`
	Gossip string `json:"gossip"`
	Rooms  int    `json:"rooms"`
	Conns  int    `json:"conns"`
	// UnderReplicated (nodes only) counts the node's rooms with fewer live copies than asked.
	UnderReplicated *int `json:"under_replicated,omitempty"`
	// Edges (nodes only) counts the router connections (edge legs) the node serves: one per
	// router and room, however many clients each carries.
	Edges *int `json:"edges,omitempty"`
}
