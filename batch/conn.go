// Package batch gathers a WebSocket connection's frames into few write system calls.
//
// gorilla/websocket writes every frame with a write of its own (and a deadline change of its
// own). A server that fans a room's messages out to thousands of sockets spends most of a
// delivery there. A Conn, handed to gorilla in place of the hijacked connection, gathers what is
// written between Begin and End and sends it in one write when the batch ends.
package batch

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is the connection gorilla writes to. Between Begin and End, writes are gathered in a
// pooled buffer and the write deadline asked for is applied when they are sent; outside a batch
// (a ping from a timer, a pong or close echo from the reader) writes go straight through. A write
// error while sending a batch is kept: every later write returns it.
type Conn struct {
	net.Conn

	mu       sync.Mutex
	batching bool
	buf      []byte    // pooled while batching; nil outside
	deadline time.Time // the write deadline asked for during the batch, set at flush
	err      error
}

// Max is the most a batch gathers; a write that would go past it sends the batch first, and a
// write bigger than it is sent on its own, uncopied.
const Max = 64 << 10

// Buffers start small (most batches are a frame or a few: the welcome of a new connection, a
// quiet room's message) and grow by append up to Max; the pool keeps what they grew to.
var buffers = sync.Pool{New: func() any { b := make([]byte, 0, 2<<10); return &b }}

func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.batching {
		if len(c.buf)+len(p) > Max {
			if err := c.flushLocked(); err != nil {
				return 0, err
			}
		}
		if len(p) < Max {
			c.buf = append(c.buf, p...)
			return len(p), nil
		}
	}
	return c.Conn.Write(p)
}

func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.batching {
		c.deadline = t
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

// Begin starts a batch, unless one is open. On a nil Conn, Begin and End do nothing.
func (c *Conn) Begin() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.batching {
		c.batching = true
		c.buf = (*buffers.Get().(*[]byte))[:0]
	}
}

// End sends the batch, if one is open, and returns its buffer to the pool.
func (c *Conn) End() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.batching {
		return c.err
	}
	err := c.flushLocked()
	c.batching = false
	b := c.buf[:0]
	c.buf = nil
	if cap(b) <= 2*Max {
		buffers.Put(&b)
	}
	return err
}

func (c *Conn) flushLocked() error {
	if c.err != nil {
		return c.err
	}
	if !c.deadline.IsZero() {
		if err := c.Conn.SetWriteDeadline(c.deadline); err != nil {
			c.err = err
			return err
		}
		c.deadline = time.Time{}
	}
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	if err != nil {
		c.err = err
	}
	return err
}

// CloseWrite half-closes the connection, as protocol.CloseGently asks.
func (c *Conn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return errors.New("connection cannot half-close")
}

// Hijacker hands gorilla's upgrader a Conn in place of the hijacked connection: pass
// &batch.Hijacker{ResponseWriter: w} to Upgrade and find the Conn in ws.NetConn().
type Hijacker struct {
	http.ResponseWriter
}

func (w *Hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &Conn{Conn: nc}, brw, nil
}

// Of returns the Conn under a WebSocket's connection, or nil.
func Of(nc net.Conn) *Conn {
	c, _ := nc.(*Conn)
	return c
}

// ReadHook is a connection that calls a function before each read of the network. A proxy that
// reads frames from one connection and writes them to another ends its write batch there: a
// read that finds its buffer empty is about to wait, and what was gathered must not wait with it.
type ReadHook struct {
	net.Conn
	before atomic.Pointer[func()]
}

// Before sets the function called before each read; nil calls none.
func (h *ReadHook) Before(f func()) {
	if f == nil {
		h.before.Store(nil)
		return
	}
	h.before.Store(&f)
}

func (h *ReadHook) Read(p []byte) (int, error) {
	if f := h.before.Load(); f != nil {
		(*f)()
	}
	return h.Conn.Read(p)
}

// HookOf returns the ReadHook under a connection (under its TLS, if any), or nil.
func HookOf(nc net.Conn) *ReadHook {
	for {
		switch c := nc.(type) {
		case *ReadHook:
			return c
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return nil
		}
	}
}
