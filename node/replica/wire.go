package replica

import (
	"bytes"
	"encoding/gob"
	"fmt"

	"github.com/roost-dev/roost/node/room"
)

// Path is the replication stream: a WebSocket an owner opens to each node that holds replicas
// of its rooms, signed like every node-to-node call, with its node id in the query ("from").
const Path = "/internal/v1/replicate"

// Batch is one frame from an owner: items in the order the owner made them. Batches are
// pipelined: the owner sends the next before the last is acked.
type Batch struct {
	ID    uint64
	Items []Item
}

// Item is a seed (a room's whole state, for a node that becomes its replica or must start over)
// or one append.
type Item struct {
	Seed   *room.State
	Append *Entry
}

// Entry is one message for a room's replica.
type Entry struct {
	Room string
	room.Append
}

// room is the item's room.
func (it Item) room() string {
	if it.Seed != nil {
		return it.Seed.Room
	}
	return it.Append.Room
}

// seq is the seq the item brings its room's copy to.
func (it Item) seq() uint64 {
	if it.Seed != nil {
		return it.Seed.Seq
	}
	return it.Append.Msg.Seq
}

// Ack answers a batch, item by item.
type Ack struct {
	ID     uint64
	Status []Status
}

// Status is what a replica did with one item.
type Status uint8

const (
	Held    Status = iota // the copy holds it
	Reseed                // the copy cannot take it (a gap, no copy): seed it again
	Refused               // fenced: this node's ring does not name the sender the room's owner, or the term is older
)

func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decode(b []byte, v any) error {
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(v); err != nil {
		return fmt.Errorf("replication frame does not decode: %w", err)
	}
	return nil
}
