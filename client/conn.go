package client

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/internal/loop"
	"github.com/roost-dev/roost/protocol"
)

const (
	// closeWait is how long Close waits for the server to answer its close frame.
	closeWait = time.Second
	// stableAfter is how long a connection must have lived for its loss to reconnect at once;
	// connections lost sooner than that back off, so two members that disagree about the ring
	// cannot make a client spin.
	stableAfter = time.Second
)

// Conn is a connection to one room that survives the room moving: when the server closes it with
// 4001 (room moved), 1001 (going away) or the network breaks, it reconnects through the base
// address with since/epoch and keeps delivering events in order, without duplicates and without
// a silent hole, and it re-sends the publishes still waiting for their ack.
//
// A Conn runs one goroutine that reads (and reconnects) and one that pings; both end when the
// Conn ends, by Close or by an error it does not recover from. Publish and the getters are safe
// for concurrent use; Next is meant for one goroutine at a time. Always Close a Conn you dialed.
type Conn struct {
	room  string
	bases []*url.URL // the base address, then the alternates, in http(s) form
	opts  Options
	log   *slog.Logger

	ctx       context.Context // cancelled by Close: aborts dials, backoff and blocked deliveries
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the reader and the pinger
	closeOnce sync.Once
	events    chan Event    // closed by the reader when the Conn ends
	dead      chan struct{} // closed by the reader when it has ended
	client    string        // the client id, fixed by the first welcome

	rx position // where the reader is: for dropping duplicates and resuming. Reader only.

	// writeMu lets one writer at a time use the connection (gorilla allows one). A reconnect
	// holds it while it re-sends pending publishes, so they go out before newer ones.
	writeMu sync.Mutex

	mu      sync.Mutex
	ws      *websocket.Conn // the live connection; nil while reconnecting
	gen     uint64          // connections made so far
	ready   chan struct{}   // closed while ws is set
	welcome protocol.Welcome
	app     position            // what Next has returned, for LastSeq and Epoch
	pending map[string]*pending // publishes waiting for their ack, by id
	order   uint64              // publishes registered so far, to re-send them in order
	closed  bool                // Close was called
	err     error               // why the Conn ended, once it has
}

func newConn(room string, bases []*url.URL, o Options) *Conn {
	ctx, cancel := context.WithCancel(context.Background())
	buffer := o.EventBuffer
	if o.Discard {
		buffer = 0
	}
	return &Conn{
		room: room, bases: bases, opts: o, log: o.Logger.With("room", room),
		ctx: ctx, cancel: cancel,
		events:  make(chan Event, buffer),
		dead:    make(chan struct{}),
		ready:   make(chan struct{}),
		pending: map[string]*pending{},
		client:  o.ClientID,
	}
}

// start takes the first connection and starts the reader and the pinger.
func (c *Conn) start(ws *websocket.Conn, w protocol.Welcome) {
	c.client = w.Client
	c.rx = position{epoch: w.Epoch, seq: w.Seq}
	if c.opts.Since != nil {
		// Until the server says otherwise (with a reset), the stream continues where the caller
		// left it; the history it owes comes next.
		c.rx.seq = *c.opts.Since
		if c.opts.Epoch != "" {
			c.rx.epoch = c.opts.Epoch
		}
	}
	c.app = c.rx
	c.install(ws, w)
	c.wg.Go(func() { c.run(ws) })
	c.wg.Go(c.keepalive)
}

// Room is the room's name.
func (c *Conn) Room() string { return c.room }

// ClientID is the client id the server knows this client by; it stays the same across reconnects.
func (c *Conn) ClientID() string { return c.client }

// Welcome is the welcome of the current connection (of the last one, while reconnecting): its
// Node is the room's owner, Seq the room's latest seq when it connected, Count the members then.
func (c *Conn) Welcome() protocol.Welcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.welcome
}

// LastSeq is the seq of the last message Next returned (or, before any, where the Conn started:
// Options.Since, else the room's seq at the welcome). With Epoch it is where to resume later:
// Options{Since: &seq, Epoch: epoch}.
func (c *Conn) LastSeq() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.app.seq
}

// Epoch is the epoch LastSeq belongs to; a reset event returned by Next changes it.
func (c *Conn) Epoch() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.app.epoch
}

// Err is why the Conn ended, or nil while it lives: ErrClosed after Close, a *CloseError for a
// close it does not recover from, or the last error of a reconnect that gave up.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done is closed when the Conn has ended; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.dead }

// Next returns the next event, in the order the server sent them, waiting for it until ctx ends.
// Messages the Conn has already returned are never returned again, also across reconnects.
// When the Conn has ended, Next returns the events still buffered, then the error that ended it
// (see Err).
//
// Keep calling Next: events that are not taken fill Options.EventBuffer, then the Conn stops
// reading, acks for Publish wait behind them, and the server eventually drops the connection as a
// slow consumer (4008). Set Options.Discard on a Conn that only publishes.
func (c *Conn) Next(ctx context.Context) (Event, error) {
	select {
	case ev, ok := <-c.events:
		if !ok {
			return Event{}, c.Err()
		}
		c.mu.Lock()
		c.app.advance(&ev)
		c.mu.Unlock()
		return ev, nil
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// Close closes the connection with a normal closure (1000), waiting briefly for the server to
// answer, stops every goroutine of the Conn and waits for them. Publish calls still waiting
// return ErrClosed; Next returns the events already received, then ErrClosed. Close always
// returns nil; calling it again does nothing.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		ws := c.ws
		c.mu.Unlock()
		c.cancel()
		if ws != nil {
			msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
			if ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeWait)) == nil {
				t := time.NewTimer(closeWait)
				select {
				case <-c.dead:
				case <-t.C:
				}
				t.Stop()
			}
			_ = ws.Close()
		}
		c.wg.Wait()
	})
	return nil
}

// run is the reader: it reads the connection until it fails, then reconnects or ends the Conn.
func (c *Conn) run(ws *websocket.Conn) {
	defer close(c.dead)
	defer close(c.events)
	failures := 0
	for {
		began := time.Now()
		err := c.read(ws)
		c.detach(ws)
		if c.isClosed() {
			c.finish(ErrClosed)
			return
		}
		cause := connError(c.room, err)
		if c.opts.DisableReconnect || !retryable(err) {
			c.finish(cause)
			return
		}
		if time.Since(began) < stableAfter {
			failures++
		} else {
			failures = 0
		}
		c.log.Info("roost: connection lost, reconnecting", "err", cause, "since", c.rx.seq, "epoch", c.rx.epoch)
		var w protocol.Welcome
		ws, w, failures, err = c.reconnect(cause, failures)
		if err == nil && !c.install(ws, w) {
			err = ErrClosed
		}
		if err != nil {
			if c.isClosed() {
				err = ErrClosed
			}
			c.finish(err)
			return
		}
		c.log.Info("roost: reconnected", "node", w.Node, "epoch", w.Epoch, "seq", w.Seq)
		c.emit(Event{Type: EventReconnected, Welcome: &w, Err: cause})
	}
}

// read reads frames until the connection fails, and returns why.
func (c *Conn) read(ws *websocket.Conn) error {
	readWait := c.opts.PingInterval * 5 / 2
	alive := func() { _ = ws.SetReadDeadline(time.Now().Add(readWait)) }
	ws.SetPongHandler(func(string) error { alive(); return nil })
	ws.SetPingHandler(func(data string) error {
		alive()
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.opts.WriteTimeout))
		var ne net.Error
		if err == nil || errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) {
			return nil
		}
		return err
	})
	for {
		alive()
		mt, b, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		if mt == websocket.BinaryMessage {
			seq, payload, err := protocol.ParseBinary(b)
			if err != nil {
				c.emit(Event{Type: EventError, Err: &ServerError{Code: CodeBadFrame, Message: err.Error()}})
				continue
			}
			c.deliver(Event{Type: EventBinary, Seq: seq, Payload: payload})
			continue
		}
		var f protocol.Incoming
		if err := json.Unmarshal(b, &f); err != nil {
			c.emit(Event{Type: EventError, Err: &ServerError{Code: CodeBadFrame, Message: "the server sent a text frame that is not JSON: " + err.Error()}})
			continue
		}
		switch f.Type {
		case protocol.TypeAck:
			c.acked(f.ID, f.Seq)
		case protocol.TypeError:
			if !c.refused(&f) {
				ev, _ := event(&f)
				c.emit(ev)
			}
		default:
			// Unknown frame types are skipped: a newer server may send more.
			if ev, ok := event(&f); ok {
				c.deliver(ev)
			}
		}
	}
}

// deliver passes ev on unless it is a message the Conn has already delivered.
func (c *Conn) deliver(ev Event) {
	if c.rx.advance(&ev) {
		c.emit(ev)
	}
}

// emit queues ev for Next, waiting while the buffer is full. After Close it drops ev, so the
// reader keeps reading until the server answers the close.
func (c *Conn) emit(ev Event) {
	if c.opts.Discard {
		c.mu.Lock()
		c.app.advance(&ev)
		c.mu.Unlock()
		return
	}
	select {
	case c.events <- ev:
	case <-c.ctx.Done():
	}
}

// retryable reports whether a connection that failed with err should be replaced.
func retryable(err error) bool {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return retryableClose(ce.Code)
	}
	return !errors.Is(err, websocket.ErrReadLimit)
}

// connError turns the error that ended a connection into the one callers see.
func connError(room string, err error) error {
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce):
		return &CloseError{Code: ce.Code, Reason: ce.Text}
	case errors.Is(err, websocket.ErrReadLimit):
		return &CloseError{Code: websocket.CloseMessageTooBig, Reason: "the server sent a frame larger than Options.ReadLimit"}
	}
	return fmt.Errorf("roost: connection to room %q lost: %w", room, err)
}

// reconnect dials until a connection is made, the time is up, a refusal is final or the Conn
// is closed. It resumes after c.rx. failures counts the attempts that failed in a row.
func (c *Conn) reconnect(cause error, failures int) (*websocket.Conn, protocol.Welcome, int, error) {
	deadline := time.Now().Add(c.opts.MaxReconnectWait)
	ctx, cancel := context.WithDeadline(c.ctx, deadline)
	defer cancel()
	last := cause // the error of the last attempt that ran its course
	for attempt := 1; ; attempt++ {
		if failures > 0 {
			wait := backoff(failures, c.opts.MaxReconnectDelay)
			if asked, ok := overloaded(last); ok {
				wait = max(wait, jitter(asked)) // the member said when; the jitter spreads the storm
			}
			if loop.Sleep(ctx, wait) != nil {
				return nil, protocol.Welcome{}, failures, c.gaveUp(attempt-1, last)
			}
		}
		ws, w, err := c.dialAny(ctx, c.query(true, c.rx))
		if err == nil {
			return ws, w, failures, nil
		}
		failures++
		if !temporary(err) && c.ctx.Err() == nil {
			return nil, protocol.Welcome{}, failures, err
		}
		// An attempt the deadline cut short (the network's timeout may beat ctx's own) says
		// less than the one before it.
		cut := ctx.Err() != nil || !time.Now().Before(deadline)
		if !cut || attempt == 1 {
			last = err
		}
		if cut {
			return nil, protocol.Welcome{}, failures, c.gaveUp(attempt, last)
		}
		c.log.Debug("roost: reconnect attempt failed", "attempt", attempt, "err", err)
	}
}

func (c *Conn) gaveUp(attempts int, last error) error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	return fmt.Errorf("roost: room %q: gave up reconnecting after %s (%d attempts): %w", c.room, c.opts.MaxReconnectWait, attempts, last)
}

// backoff is the wait before the next attempt after failures failures in a row: exponential
// from minReconnectDelay up to limit, with jitter so clients of one node do not return in step.
func backoff(failures int, limit time.Duration) time.Duration {
	d := minReconnectDelay << min(failures-1, 20)
	d = min(d, limit)
	return d/2 + rand.N(d/2+1)
}

// install makes ws the live connection and re-sends, in their order, the publishes that were not
// written on it. It reports false, closing ws, when the Conn was closed meanwhile.
func (c *Conn) install(ws *websocket.Conn, w protocol.Welcome) bool {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(closeWait))
		_ = ws.Close()
		return false
	}
	c.ws, c.welcome = ws, w
	c.gen++
	close(c.ready)
	var resend []*pending
	for _, p := range c.pending {
		if p.gen < c.gen {
			p.gen = c.gen
			resend = append(resend, p)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(resend, func(a, b *pending) int { return cmp.Compare(a.order, b.order) })
	for _, p := range resend {
		if c.writeLocked(ws, websocket.TextMessage, p.frame) != nil {
			break // the reader sees the broken connection; the next one re-sends the rest
		}
	}
	return true
}

// detach forgets ws as the live connection and closes it.
func (c *Conn) detach(ws *websocket.Conn) {
	c.mu.Lock()
	if c.ws == ws {
		c.ws = nil
		c.ready = make(chan struct{})
	}
	c.mu.Unlock()
	_ = ws.Close()
}

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// finish ends the Conn with err: every waiting publish fails with it.
func (c *Conn) finish(err error) {
	c.mu.Lock()
	c.err = err
	waiting := c.pending
	c.pending = map[string]*pending{}
	c.mu.Unlock()
	for _, p := range waiting {
		p.resolve(0, err)
	}
	if !errors.Is(err, ErrClosed) {
		c.log.Warn("roost: connection ended", "err", err)
	}
}

// keepalive pings the live connection every PingInterval, so a dead network is noticed (the
// reader's deadline expires) even in a quiet room.
func (c *Conn) keepalive() {
	t := time.NewTicker(c.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.dead:
			return
		case <-t.C:
		}
		c.mu.Lock()
		ws := c.ws
		c.mu.Unlock()
		if ws == nil {
			continue
		}
		err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.opts.WriteTimeout))
		if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
			_ = ws.Close() // the reader notices and reconnects
		}
	}
}
