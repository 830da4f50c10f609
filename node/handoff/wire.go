package handoff

import (
	"bytes"
	"encoding/gob"
	"fmt"

	"github.com/roost-dev/roost/node/room"
)

// The node-to-node calls of a hand-off, all signed (see internal/peer).
const (
	// Path takes a gob Batch and answers a JSON Reply.
	Path = "/internal/v1/handoff"
	// ContentType is a Batch's.
	ContentType = "application/x-gob"
)

// ReleasePath is where a node that owns room asks a previous owner to release it; it answers a
// JSON Release.
func ReleasePath(room string) string { return "/internal/v1/rooms/" + room + "/release" }

// FencePath is where the sender of a hand-off whose reply it never heard settles the attempt
// with its receiver: it takes a JSON Fence and answers a JSON Fenced.
func FencePath(room string) string { return "/internal/v1/rooms/" + room + "/fence" }

// Fence asks a hand-off's receiver about an attempt whose outcome the sender does not know:
// the room in Epoch, which the receiver would have installed at Term.
type Fence struct {
	Epoch string `json:"epoch"`
	Term  uint64 `json:"term"`
}

// Fenced answers a Fence.
type Fenced struct {
	Status string `json:"status"` // held, fenced, busy
	Epoch  string `json:"epoch,omitempty"`
	Term   uint64 `json:"term,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
}

// Fence statuses (and Busy).
const (
	Held    = "held"   // the receiver holds the room (Epoch, Term, Seq say which copy): the sender's is older
	Settled = "fenced" // the receiver does not hold it, and will never install that attempt
)

// Batch is one hand-off call: rooms from one node to their new owner.
type Batch struct {
	From string `json:"from"`
	Ring string `json:"ring"` // the sender's placement version
	// Check asks only whether the receiver owns the rooms (waiting for its ring as a real batch
	// would); the rooms carry their names alone. Senders check first, so their rooms stay
	// frozen for the transfer only, not while gossip catches up.
	Check bool         `json:"check,omitempty"`
	Rooms []room.State `json:"rooms"`
}

// Reply is the receiver's answer, room by room.
type Reply struct {
	Accepted []string `json:"accepted,omitempty"` // installed here
	Held     []string `json:"held,omitempty"`     // a copy was here already: the sender closes its own
	Refused  []string `json:"refused,omitempty"`  // this node's placement does not name it the owner
	Whole    []string `json:"whole,omitempty"`    // sent as a tail its replica copy cannot complete: send it whole
}

// Release answers a pull.
type Release struct {
	Status string `json:"status"` // moved, absent, owner, busy
	To     string `json:"to,omitempty"`
	// Copy is where this node's replica copy of the room is, if it holds one.
	Copy *Copy `json:"copy,omitempty"`
}

// Copy is the position of a replica copy of a room.
type Copy struct {
	Epoch string `json:"epoch"`
	Term  uint64 `json:"term"`
	Seq   uint64 `json:"seq"`
}

// Release statuses.
const (
	Moved  = "moved"  // handed to the asker just now
	Absent = "absent" // not held here
	Owner  = "owner"  // this node's placement still names it the owner
	Busy   = "busy"   // held here and on its way (or this node is deciding after a pause): ask again
)

// Encode is a batch's body. gob, not JSON: a batch is mostly history frames, which JSON would
// base64 at a fraction of the speed (a 17 MB batch took seconds under -race).
func Encode(b Batch) ([]byte, error) {
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Decode reads a batch. A batch that does not decode, or names a room twice, is refused whole;
// each room's state is checked (room.State.Validate) when it is installed.
func Decode(body []byte) (Batch, error) {
	var b Batch
	if err := gob.NewDecoder(bytes.NewReader(body)).Decode(&b); err != nil {
		return b, fmt.Errorf("hand-off batch does not decode: %w", err)
	}
	seen := make(map[string]bool, len(b.Rooms))
	for _, st := range b.Rooms {
		if seen[st.Room] {
			return b, fmt.Errorf("hand-off batch names room %q twice", st.Room)
		}
		seen[st.Room] = true
	}
	return b, nil
}

// MaxBody bounds a batch's body: a batch holds up to chunkBytes of history and webhook events,
// or one room's whole when that is larger (historyBytes, its history and outbox, and a newest
// message of up to maxFrame), plus up to ids remembered publish ids per room.
func MaxBody(historyBytes int, maxFrame int64, ids int) int64 {
	return int64(chunkBytes) + int64(historyBytes) + maxFrame + int64(ids)*512 + 1<<20
}
