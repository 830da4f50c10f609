package node

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// batchConn is the connection gorilla writes to. While a writer drains its queue, what gorilla
// writes is gathered and leaves in one write system call when the batch ends, instead of one
// per frame: on a busy connection that is most of the cost of a delivery. Outside a batch
// (pings from the timer, pongs and close echoes from the reader) writes go straight through.
type batchConn struct {
	net.Conn

	mu       sync.Mutex
	batching bool
	buf      []byte    // pooled while batching; nil outside
	deadline time.Time // the write deadline asked for during the batch, set at flush
}

// maxBatch is the most a batch gathers; a frame that would go past it flushes the batch first,
// and a frame bigger than it is written on its own, uncopied.
const maxBatch = 64 << 10

var batchBuffers = sync.Pool{New: func() any { b := make([]byte, 0, maxBatch); return &b }}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.batching {
		if len(c.buf)+len(p) > maxBatch {
			if err := c.flushLocked(); err != nil {
				return 0, err
			}
		}
		if len(p) < maxBatch {
			c.buf = append(c.buf, p...)
			return len(p), nil
		}
	}
	return c.Conn.Write(p)
}

func (c *batchConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.batching {
		c.deadline = t
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

// begin starts a batch. On a nil batchConn, begin and end do nothing.
func (c *batchConn) begin() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.batching {
		c.batching = true
		c.buf = (*batchBuffers.Get().(*[]byte))[:0]
	}
}

// end writes the batch and returns its buffer to the pool.
func (c *batchConn) end() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.batching {
		return nil
	}
	err := c.flushLocked()
	c.batching = false
	b := c.buf[:0]
	c.buf = nil
	batchBuffers.Put(&b)
	return err
}

func (c *batchConn) flushLocked() error {
	if !c.deadline.IsZero() {
		if err := c.Conn.SetWriteDeadline(c.deadline); err != nil {
			return err
		}
		c.deadline = time.Time{}
	}
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// CloseWrite half-closes the connection, as protocol.CloseGently asks.
func (c *batchConn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return errors.New("connection cannot half-close")
}

// batchingHijacker hands gorilla's upgrader a batchConn in place of the hijacked connection.
type batchingHijacker struct {
	http.ResponseWriter
	conn *batchConn
}

func (w *batchingHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &batchConn{Conn: nc}
	return w.conn, brw, nil
}
