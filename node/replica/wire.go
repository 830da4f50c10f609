package replica

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gorilla/websocket"

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

// conn is one replication stream's framing: a gob stream per connection, one value per
// WebSocket message. Types are described once, in the connection's first frames, and every later
// frame carries values only; a fresh gob encoder per frame would describe them again each time
// and make the decoder compile its plan again (most of replication's cost per message).
type conn struct {
	ws   *websocket.Conn
	buf  bytes.Buffer
	enc  *gob.Encoder
	msgs messages
	dec  *gob.Decoder
}

// errBadFrame is a frame that does not decode (not a broken connection).
var errBadFrame = errors.New("replication frame does not decode")

func newConn(ws *websocket.Conn) *conn {
	c := &conn{ws: ws, msgs: messages{ws: ws}}
	c.enc = gob.NewEncoder(&c.buf)
	c.dec = gob.NewDecoder(&c.msgs)
	return c
}

// write sends v as one binary message. It is not safe for concurrent use; a failed write
// leaves the gob stream unusable, and the caller closes the connection.
func (c *conn) write(v any, deadline time.Time) error {
	c.buf.Reset()
	if err := c.enc.Encode(v); err != nil {
		return err
	}
	_ = c.ws.SetWriteDeadline(deadline)
	return c.ws.WriteMessage(websocket.BinaryMessage, c.buf.Bytes())
}

// read decodes the next value into v: the connection's error when it broke, errBadFrame when
// what arrived does not decode. It is not safe for concurrent use.
func (c *conn) read(v any) error {
	if err := c.dec.Decode(v); err != nil {
		if c.msgs.err != nil {
			return c.msgs.err
		}
		return fmt.Errorf("%w: %v", errBadFrame, err)
	}
	return nil
}

// messages reads a WebSocket's binary messages as one byte stream (the gob stream).
type messages struct {
	ws  *websocket.Conn
	cur io.Reader
	err error // the connection's, once it broke
}

func (m *messages) Read(p []byte) (int, error) {
	for {
		if m.cur == nil {
			mt, r, err := m.ws.NextReader()
			if err != nil {
				m.err = err
				return 0, err
			}
			if mt != websocket.BinaryMessage {
				return 0, fmt.Errorf("%w: a replication stream carries binary messages only", errBadFrame)
			}
			m.cur = r
		}
		n, err := m.cur.Read(p)
		switch {
		case err == io.EOF:
			m.cur = nil
			if n == 0 {
				continue
			}
			err = nil
		case err != nil:
			m.err = err
		}
		return n, err
	}
}
