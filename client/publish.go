package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/protocol"
)

// MaxIDLen is the longest publish id the server accepts, in bytes.
const MaxIDLen = protocol.MaxIDLen

// ErrTooLarge is returned (wrapped) by Publish, PublishID and PublishBinary for a message over
// Options.MaxFrame; nothing was sent and the connection is unaffected.
var ErrTooLarge = errors.New("roost: message too large")

// pending is a publish waiting for its ack. Its fields after done are written once, before done
// is closed.
type pending struct {
	id      string
	frame   []byte
	order   uint64 // registration order, to re-send in order
	gen     uint64 // the connection it was last written on (0: none yet); guarded by Conn.mu
	waiters int    // Publish calls waiting for it; guarded by Conn.mu
	limited int    // times the server refused it as rate_limited; guarded by Conn.mu
	done    chan struct{}
	seq     uint64
	err     error
}

func (p *pending) resolve(seq uint64, err error) {
	p.seq, p.err = seq, err
	close(p.done)
}

// NewID returns a random 128-bit publish id in hex, as Publish makes for each message. Make one
// yourself and pass it to PublishID to retry a publish safely across calls.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Publish sends data (any value encoding/json can encode; pass a json.RawMessage to send JSON
// as it is) to the room under a new random id, and returns the seq the room gave it once the
// server has acknowledged it. The publisher receives its own message through Next like every
// member, with the same id.
//
// Publish neither loses nor doubles a message across reconnects: one not yet acknowledged when
// the connection is lost is sent again, with the same id, on the next connection, and the server
// acknowledges a repeated id with its first seq without delivering it again. If ctx ends first,
// Publish returns ctx's error and the message may or may not have been published; use PublishID
// to retry it. A refusal by the server is a *ServerError; if the Conn ends, Publish returns why
// (see Conn.Err).
func (c *Conn) Publish(ctx context.Context, data any) (uint64, error) {
	return c.PublishID(ctx, "", data)
}

// PublishID is Publish with a caller-chosen id (1 to MaxIDLen bytes; empty makes a random one).
// A publish with an id the room still remembers (its last DedupeIDs, 1000 by default) is
// acknowledged with its original seq and not delivered again: retrying with the same id is safe.
func (c *Conn) PublishID(ctx context.Context, id string, data any) (uint64, error) {
	if id == "" {
		id = NewID()
	} else if len(id) > MaxIDLen {
		return 0, fmt.Errorf("roost: publish to room %q: the id is %d bytes, the server takes at most %d", c.room, len(id), MaxIDLen)
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return 0, fmt.Errorf("roost: publish to room %q: the data does not encode as JSON: %w", c.room, err)
	}
	frame, err := json.Marshal(protocol.Publish{Type: protocol.TypePublish, ID: id, Data: raw})
	if err != nil {
		return 0, fmt.Errorf("roost: publish to room %q: %w", c.room, err)
	}
	if c.opts.MaxFrame > 0 && len(frame) > c.opts.MaxFrame {
		return 0, fmt.Errorf("%w: the publish frame for room %q is %d bytes, over Options.MaxFrame (%d, keep it at the server's --max-frame)",
			ErrTooLarge, c.room, len(frame), c.opts.MaxFrame)
	}

	c.mu.Lock()
	if err := c.endedLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	var ws *websocket.Conn
	p := c.pending[id]
	if p == nil { // a publish with this id already in flight is waited for, not sent twice
		c.order++
		p = &pending{id: id, frame: frame, order: c.order, done: make(chan struct{})}
		c.pending[id] = p
		if c.ws != nil {
			ws, p.gen = c.ws, c.gen
		}
	}
	p.waiters++
	c.mu.Unlock()
	if ws != nil {
		// A failed write needs no handling here: the reader sees the broken connection and the
		// next one re-sends p.
		_ = c.write(ws, websocket.TextMessage, frame)
	}
	select {
	case <-p.done:
		return p.seq, p.err
	case <-ctx.Done():
		select {
		case <-p.done: // both happened: the answer is worth more than the timeout
			return p.seq, p.err
		default:
		}
		c.mu.Lock()
		p.waiters--
		if p.waiters == 0 && c.pending[id] == p {
			delete(c.pending, id)
		}
		c.mu.Unlock()
		return 0, ctx.Err()
	}
}

// PublishBinary sends payload to the room as a binary message; members receive it as an
// EventBinary. Binary frames carry no id, so PublishBinary returns once the frame is written,
// without waiting for the server's ack, and it is not re-sent after a reconnect: a binary publish
// written just before the connection was lost may be lost. While the Conn is reconnecting it
// waits (until ctx ends) for the new connection. For streams that must survive moves, use the
// TCP ingest, which counts accepted frames.
func (c *Conn) PublishBinary(ctx context.Context, payload []byte) error {
	if c.opts.MaxFrame > 0 && len(payload) > c.opts.MaxFrame {
		return fmt.Errorf("%w: the binary payload for room %q is %d bytes, over Options.MaxFrame (%d)", ErrTooLarge, c.room, len(payload), c.opts.MaxFrame)
	}
	for {
		c.mu.Lock()
		err, ws, ready := c.endedLocked(), c.ws, c.ready
		c.mu.Unlock()
		if err != nil {
			return err
		}
		if ws != nil {
			if err := c.write(ws, websocket.BinaryMessage, payload); err != nil {
				return fmt.Errorf("roost: binary publish to room %q: %w", c.room, err)
			}
			return nil
		}
		select {
		case <-ready:
		case <-c.dead:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// endedLocked is the error for a Conn that is closed or has ended, nil while it lives. c.mu is
// held.
func (c *Conn) endedLocked() error {
	if c.err != nil {
		return c.err
	}
	if c.closed {
		return ErrClosed
	}
	return nil
}

// write sends one message on ws, unless another writer holds it.
func (c *Conn) write(ws *websocket.Conn, mt int, b []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.writeLocked(ws, mt, b)
}

// writeLocked sends one message on ws within WriteTimeout. A failed write closes ws, so the reader
// notices at once. c.writeMu is held.
func (c *Conn) writeLocked(ws *websocket.Conn, mt int, b []byte) error {
	_ = ws.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
	err := ws.WriteMessage(mt, b)
	if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
		_ = ws.Close()
	}
	return err
}

// acked hands an ack to the publish waiting for it. Acks of ids nobody waits for (a re-sent
// publish acknowledged twice, a Publish whose ctx ended, a binary publish) are dropped.
func (c *Conn) acked(id string, seq uint64) {
	c.mu.Lock()
	p := c.pending[id]
	if p != nil {
		delete(c.pending, id)
	}
	c.mu.Unlock()
	if p != nil {
		p.resolve(seq, nil)
	}
}

// resend writes p again on the current connection, if it is still waited for and was not
// already re-sent there by a reconnect.
func (c *Conn) resend(p *pending) {
	c.mu.Lock()
	ws := c.ws
	if c.pending[p.id] != p || ws == nil || c.endedLocked() != nil {
		c.mu.Unlock()
		return
	}
	p.gen = c.gen
	c.mu.Unlock()
	_ = c.write(ws, websocket.TextMessage, p.frame)
}

// refused hands an error frame to the publish it names, and reports whether there was one. A
// room that is moving refuses with protocol.CodeMoved: that publish stays pending and goes out
// again on the next connection. One over the server's publish rate (protocol.CodeRateLimited)
// goes out again after a backoff.
func (c *Conn) refused(f *protocol.Incoming) bool {
	if f.ID == "" {
		return false
	}
	c.mu.Lock()
	p := c.pending[f.ID]
	if p == nil {
		c.mu.Unlock()
		return false
	}
	if f.Code == protocol.CodeMoved && !c.opts.DisableReconnect {
		c.mu.Unlock()
		return true
	}
	if f.Code == protocol.CodeRateLimited {
		// Over the server's --publish-rate: nothing was delivered, so send it again, with the
		// same id, once the rate has had time to refill. Publish keeps waiting (within its ctx).
		p.limited++
		wait := min(50*time.Millisecond<<min(p.limited, 5), time.Second)
		wait += time.Duration(mrand.Int64N(int64(wait) / 2))
		c.mu.Unlock()
		time.AfterFunc(wait, func() { c.resend(p) })
		return true
	}
	delete(c.pending, f.ID)
	c.mu.Unlock()
	p.resolve(0, &ServerError{Code: f.Code, Message: f.Error, ID: f.ID})
	return true
}
