package node

import (
	"encoding/json"
	"golang.org/x/time/rate"
	"log/slog"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/protocol"
)

// outFrame is one item of a connection's send queue: a shared message, a batch of history owed
// to a resuming client, or a frame for this connection alone.
type outFrame struct {
	msg    *entry   // a room message, shared by all receivers
	replay []*entry // history to send, oldest first (one queue slot however long)
	text   []byte   // a text frame for this connection only (welcome, ack, error, gap, ...)
	shared *websocket.PreparedMessage
}

// closeReason makes the reason text of a close frame once the writer knows the last seq it sent.
type closeReason func(lastSent uint64) string

// conn is one WebSocket client of a room. The room queues frames to it without blocking; its own
// writer goroutine drains the queue. The HTTP handler goroutine is its reader and its owner: it
// starts the writer and waits for it.
type conn struct {
	n        *Node
	ws       *websocket.Conn
	room     *Room
	client   string
	presence bool
	readOnly bool          // its token does not allow publishing
	publish  *rate.Limiter // its publishes per second; reader only
	log      *slog.Logger

	mu        sync.Mutex
	queue     []outFrame
	spare     []outFrame // the writer's previous batch, reused
	closing   bool       // no more frames are queued
	flush     bool       // send what is queued before the close frame
	closeCode int        // 0: no close frame (the peer went away)
	reason    closeReason

	wake chan struct{} // something was queued or a close requested; cap 1
	quit chan struct{} // the reader ended: the writer stops at once
	done chan struct{} // closed when the writer has exited

	lastSent uint64 // highest message seq written; writer only
}

func newConn(n *Node, ws *websocket.Conn, client string, presence, readOnly bool) *conn {
	return &conn{
		n: n, ws: ws, client: client, presence: presence, readOnly: readOnly,
		publish: rate.NewLimiter(rate.Limit(n.cfg.PublishRate), n.cfg.PublishBurst),
		wake:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// send queues f. It never blocks. It reports false when the queue was full: the connection is
// then closing with 4008 and the caller must stop sending to it.
func (c *conn) send(f outFrame) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return true
	}
	if len(c.queue) >= c.n.cfg.SendQueue {
		c.closing, c.flush, c.closeCode = true, false, protocol.CloseSlowConsumer
		c.reason = func(uint64) string { return "slow consumer: fell too far behind the room" }
		c.queue = nil
		c.mu.Unlock()
		c.n.metrics.drops.WithLabelValues("slow_consumer").Inc()
		c.signal()
		return false
	}
	c.queue = append(c.queue, f)
	c.mu.Unlock()
	c.signal()
	return true
}

func (c *conn) sendJSON(v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // our own frame types always marshal
	}
	return c.send(outFrame{text: b})
}

// close asks the writer to send a close frame, after what is queued when flush is set.
func (c *conn) close(code int, flush bool, reason closeReason) {
	c.mu.Lock()
	if !c.closing {
		c.closing, c.flush, c.closeCode, c.reason = true, flush, code, reason
		if !flush {
			c.queue = nil
		}
	}
	c.mu.Unlock()
	c.signal()
}

func staticReason(s string) closeReason { return func(uint64) string { return s } }

// writeLoop is the connection's writer: it drains the queue, pings when idle, and ends with a
// close frame when one was asked for.
func (c *conn) writeLoop() {
	defer close(c.done)
	ping := time.NewTicker(c.n.cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-c.quit:
			return
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.n.cfg.WriteTimeout)); err != nil {
				c.abort()
				return
			}
			continue
		case <-c.wake:
		}
		c.mu.Lock()
		batch := c.queue
		c.queue = c.spare[:0]
		closing, flush, code, reason := c.closing, c.flush, c.closeCode, c.reason
		c.mu.Unlock()
		if closing && !flush {
			c.writeClose(code, reason)
			return
		}
		for i := range batch {
			if err := c.write(&batch[i]); err != nil {
				c.abort()
				return
			}
			batch[i] = outFrame{}
		}
		c.spare = batch
		if closing {
			c.writeClose(code, reason)
			return
		}
	}
}

func (c *conn) write(f *outFrame) error {
	deadline := time.Now().Add(c.n.cfg.WriteTimeout)
	if err := c.ws.SetWriteDeadline(deadline); err != nil {
		return err
	}
	switch {
	case f.msg != nil:
		return c.writeEntry(f.msg)
	case f.replay != nil:
		for _, e := range f.replay {
			if err := c.writeEntry(e); err != nil {
				return err
			}
		}
		return nil
	case f.shared != nil:
		return c.ws.WritePreparedMessage(f.shared)
	default:
		return c.ws.WriteMessage(websocket.TextMessage, f.text)
	}
}

func (c *conn) writeEntry(e *entry) error {
	if err := c.ws.WritePreparedMessage(e.pm); err != nil {
		return err
	}
	c.lastSent = e.seq
	c.n.metrics.deliveries.Inc()
	return nil
}

// writeClose sends the close frame and gives the peer a moment to answer before the reader
// gives up.
func (c *conn) writeClose(code int, reason closeReason) {
	if code != 0 {
		msg := websocket.FormatCloseMessage(code, reason(c.lastSent))
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(time.Second))
}

// abort ends a connection whose writes fail: closing the socket ends the reader too.
func (c *conn) abort() {
	_ = c.ws.Close()
}

func (c *conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}
