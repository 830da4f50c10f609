package protocol

import (
	"encoding/binary"
	"errors"
)

// The edge leg: one WebSocket from a router to a room's owner that carries every client the
// router has in the room (see the API's "The edge"). It is an internal, signed call (GET
// EdgePath, signed like a replication stream). Frames:
//
// Owner → router. Text frames are the room's own frames, written once for the leg: messages,
// presence events, and, on the leg's own resume, its welcome (the first frame), reset and gap.
// Binary frames start with a kind byte: EdgeRoom is a room's binary message (seq, payload);
// EdgeText and EdgeBinary carry, after a 4-byte client handle, a frame for that client alone
// (its welcome, acks, errors, gap/reset, replay, presence state); EdgeClose ends that client
// with a 2-byte close code and a reason.
//
// Router → owner. Text frames are EdgeOp JSON (join, leave). Binary frames are a client's frames:
// EdgeText or EdgeBinary, its handle, the frame as the client sent it.
const (
	EdgeRoom   byte = 'M'
	EdgeText   byte = 'T'
	EdgeBinary byte = 'B'
	EdgeClose  byte = 'C'
)

// EdgePath is the leg's path; {room} is the room's name.
func EdgePath(room string) string { return "/internal/edge/" + room }

// EdgeOp is a router's request about one of its clients on a leg.
type EdgeOp struct {
	Op       string `json:"op"` // "join" or "leave"
	Handle   uint32 `json:"h"`
	Client   string `json:"client,omitempty"`
	Since    uint64 `json:"since,omitempty"`
	HasSince bool   `json:"has_since,omitempty"`
	Epoch    string `json:"epoch,omitempty"`
	Presence bool   `json:"presence,omitempty"`
	Token    string `json:"token,omitempty"` // the client's token, checked by the owner as on a direct connect
	// Rejoin: the client was in the room through this router's previous leg, which moved here;
	// it has everything up to the leg's resume point, so it gets no welcome and no replay.
	Rejoin bool `json:"rejoin,omitempty"`
}

// Edge ops.
const (
	EdgeJoin  = "join"
	EdgeLeave = "leave"
)

// EdgeHeader is the length of a per-client frame's header: kind and handle.
const EdgeHeader = 5

// AppendEdgeHeader appends a per-client frame's header to b.
func AppendEdgeHeader(b []byte, kind byte, handle uint32) []byte {
	b = append(b, kind)
	return binary.BigEndian.AppendUint32(b, handle)
}

// ErrEdgeFrame: a leg frame too short for its kind.
var ErrEdgeFrame = errors.New("edge frame shorter than its header")

// ParseEdge splits a binary leg frame: its kind, the client handle (per-client kinds) and the rest.
func ParseEdge(b []byte) (kind byte, handle uint32, rest []byte, err error) {
	if len(b) < 1 {
		return 0, 0, nil, ErrEdgeFrame
	}
	if b[0] == EdgeRoom {
		return EdgeRoom, 0, b[1:], nil
	}
	if len(b) < EdgeHeader {
		return 0, 0, nil, ErrEdgeFrame
	}
	return b[0], binary.BigEndian.Uint32(b[1:5]), b[5:], nil
}
