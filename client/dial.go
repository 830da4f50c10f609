package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/internal/loop"
	"github.com/roost-dev/roost/protocol"
)

// maxDialHops bounds the redirects one connection attempt follows.
const maxDialHops = 4

// Dial joins room through the cluster at base and returns the connection once the server's
// welcome has arrived. base is any node or router of the cluster: "http://host:port",
// "https://…", "ws://…", "wss://…" or a bare "host:port"; Dial connects to
// base/v1/rooms/{room}/ws and follows the 307 redirects a node that does not own the room
// answers with (at most 4), so it ends at the owner. The base address is kept: reconnects go
// through it again, and its redirects lead to wherever the room lives by then.
//
// opts may be nil for the defaults. Dial retries only redirect loops, which happen for a moment
// while members disagree about the ring, within HandshakeTimeout, and a member's 503 overloaded
// (too many handshakes in progress, as in a storm of reconnects), after the Retry-After it asks
// for plus jitter, within ctx and MaxReconnectWait. Otherwise a refusal before the upgrade is
// an *HTTPError with the server's code (e.g. protocol.CodeBadRoom for a bad room name,
// protocol.CodeNoNodes while the cluster has no node yet), a close right after it a
// *CloseError (e.g. 4401 for a bad token). ctx bounds the dial only, not the connection.
func Dial(ctx context.Context, base, room string, opts *Options) (*Conn, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if room == "" {
		return nil, fmt.Errorf("roost: connect: %w: the room name is empty", protocol.ErrBadRoom)
	}
	bases := make([]*url.URL, 0, 1+len(o.Alternates))
	for _, s := range append([]string{base}, o.Alternates...) {
		b, err := parseBase(s)
		if err != nil {
			return nil, err
		}
		bases = append(bases, b)
	}
	c := newConn(room, bases, o)
	ws, w, err := c.dialPatiently(ctx, c.query(o.Since != nil, position{seq: deref(o.Since), epoch: o.Epoch}))
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.start(ws, w)
	return c, nil
}

func deref(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

func (o *Options) validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxReconnectWait", int64(o.MaxReconnectWait)}, {"MaxReconnectDelay", int64(o.MaxReconnectDelay)},
		{"HandshakeTimeout", int64(o.HandshakeTimeout)}, {"WriteTimeout", int64(o.WriteTimeout)},
		{"PingInterval", int64(o.PingInterval)}, {"EventBuffer", int64(o.EventBuffer)}, {"ReadLimit", o.ReadLimit},
	} {
		if f.v < 0 {
			return fmt.Errorf("roost: Options.%s must not be negative, got %d", f.name, f.v)
		}
	}
	return nil
}

// query is the query of a connection attempt: resume after pos when resume is set.
func (c *Conn) query(resume bool, pos position) url.Values {
	q := url.Values{}
	if resume {
		q.Set("since", strconv.FormatUint(pos.seq, 10))
		if pos.epoch != "" {
			q.Set("epoch", pos.epoch)
		}
	}
	if c.client != "" {
		q.Set("client", c.client)
	}
	if c.opts.Presence {
		q.Set("presence", "1")
	}
	return q
}

// dialPatiently is dialAny, again after the wait a member asks for when it refuses the
// handshake as overloaded (503 with Retry-After, in a storm of reconnects), with jitter so that
// the refused do not all come back at once; within ctx and MaxReconnectWait.
func (c *Conn) dialPatiently(ctx context.Context, q url.Values) (*websocket.Conn, protocol.Welcome, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.MaxReconnectWait)
	defer cancel()
	for {
		ws, w, err := c.dialAny(ctx, q)
		wait, ok := overloaded(err)
		if !ok {
			return ws, w, err
		}
		if loop.Sleep(ctx, jitter(wait)) != nil {
			return nil, protocol.Welcome{}, err
		}
	}
}

// jitter is a wait of between d and 2d.
func jitter(d time.Duration) time.Duration { return d + rand.N(d+1) }

// dialAny tries the base address, then the alternates, until one gives a connection. A refusal
// that another member would repeat (a bad room, a bad token) ends it early.
func (c *Conn) dialAny(ctx context.Context, q url.Values) (*websocket.Conn, protocol.Welcome, error) {
	var err error
	for _, b := range c.bases {
		var ws *websocket.Conn
		var w protocol.Welcome
		ws, w, err = c.dialRoom(ctx, b, q)
		if err == nil {
			return ws, w, nil
		}
		if ctx.Err() != nil || !temporary(err) {
			break
		}
	}
	return nil, protocol.Welcome{}, err
}

// temporary reports whether a failed connection attempt may succeed later, or elsewhere.
func temporary(err error) bool {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Retryable()
	}
	var ce *CloseError
	if errors.As(err, &ce) {
		return retryableClose(ce.Code)
	}
	return true // network errors, timeouts, redirect loops while the ring converges
}

// retryableClose reports whether a close code means "reconnect": the room moved, the server went
// away or restarted, or the connection broke. Refusals (auth, slow consumer, too big) are final.
func retryableClose(code int) bool {
	switch code {
	case protocol.CloseMoved, protocol.CloseGoingAway, websocket.CloseAbnormalClosure,
		websocket.CloseInternalServerErr, websocket.CloseServiceRestart, websocket.CloseTryAgainLater,
		websocket.CloseNoStatusReceived:
		return true
	}
	return false
}

// dialRoom makes one connection attempt through base: it follows redirects to the owner,
// upgrades and reads the welcome, all within HandshakeTimeout.
func (c *Conn) dialRoom(ctx context.Context, base *url.URL, q url.Values) (*websocket.Conn, protocol.Welcome, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.HandshakeTimeout)
	defer cancel()
	u := wsForm(roomURL(base, c.room, "/ws"))
	u.RawQuery = q.Encode()
	hdr := c.opts.Header.Clone()
	if hdr == nil {
		hdr = http.Header{}
	}
	if c.opts.Token != "" {
		hdr.Set("Authorization", "Bearer "+c.opts.Token)
	}
	start := u
	for hop, round := 0, 0; ; hop++ {
		ws, w, resp, err := c.dialOnce(ctx, u, hdr)
		if err == nil {
			return ws, w, nil
		}
		if resp == nil || resp.StatusCode == http.StatusSwitchingProtocols {
			if followed := round*maxDialHops + hop; followed > 0 && ctx.Err() != nil {
				// The time ran out while following redirects: say so, not only "deadline".
				return nil, protocol.Welcome{}, fmt.Errorf("roost: connect to room %q: gave up after %d redirects, last to %s; the cluster may still be converging: %w",
					c.room, followed, u.Redacted(), err)
			}
			return nil, protocol.Welcome{}, err
		}
		if !isRedirect(resp.StatusCode) {
			return nil, protocol.Welcome{}, httpError(u.Redacted(), resp)
		}
		if hop == maxDialHops {
			// Members that disagree about the ring for a moment (gossip takes a few hundred
			// ms to spread a change) send each other the room; start over from the base address
			// shortly, within HandshakeTimeout.
			round++
			select {
			case <-ctx.Done():
				return nil, protocol.Welcome{}, fmt.Errorf("roost: connect to room %q: more than %d redirects, last to %s; the cluster may still be converging",
					c.room, maxDialHops, u.Redacted())
			case <-time.After(min(25*time.Millisecond*time.Duration(round), 500*time.Millisecond)):
			}
			u, hop = start, -1
			continue
		}
		next, err := follow(u, resp.Header.Get("Location"), c.opts.Token != "")
		if err != nil {
			return nil, protocol.Welcome{}, fmt.Errorf("roost: connect to room %q: %w", c.room, err)
		}
		next.RawQuery = q.Encode() // the same resume, whatever the redirect kept
		u = next
	}
}

// dialOnce upgrades one URL and reads the welcome. A refusal comes back with its response, for
// the caller to follow or report. Cancelling ctx (Close does) aborts it at any point, also while
// it waits for a server that accepted the TCP connection but does not answer: gorilla's Dialer
// applies only ctx's deadline once connected, so the raw connection is closed instead.
func (c *Conn) dialOnce(ctx context.Context, u *url.URL, hdr http.Header) (*websocket.Conn, protocol.Welcome, *http.Response, error) {
	var (
		mu  sync.Mutex
		raw net.Conn
	)
	record := func(dial func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			mu.Lock()
			raw = conn
			mu.Unlock()
			return conn, err
		}
	}
	d := *c.opts.Dialer
	d.HandshakeTimeout = 0 // ctx carries the timeout
	plain := d.NetDialContext
	if plain == nil && d.NetDial != nil {
		netDial := d.NetDial
		plain = func(_ context.Context, network, addr string) (net.Conn, error) { return netDial(network, addr) }
	}
	if plain == nil {
		plain = (&net.Dialer{}).DialContext
	}
	d.NetDialContext = record(plain)
	if d.NetDialTLSContext != nil {
		d.NetDialTLSContext = record(d.NetDialTLSContext)
	}
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		if raw != nil {
			_ = raw.Close()
		}
		mu.Unlock()
	})
	defer stop()

	ws, resp, err := d.DialContext(ctx, u.String(), hdr)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, protocol.Welcome{}, resp, fmt.Errorf("roost: connect to room %q at %s: %w", c.room, u.Redacted(), err)
	}
	w, err := c.readWelcome(ctx, ws)
	if err == nil && !stop() {
		err = errors.New("cancelled") // the raw connection is closed or closing
	}
	if err != nil {
		_ = ws.Close()
		var ce *CloseError
		if errors.As(err, &ce) {
			return nil, protocol.Welcome{}, nil, err
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, protocol.Welcome{}, nil, fmt.Errorf("roost: connect to room %q at %s: no welcome: %w", c.room, u.Redacted(), err)
	}
	ws.SetReadLimit(c.opts.ReadLimit)
	return ws, w, resp, nil
}

// readWelcome reads the first frame, which must be the welcome, by ctx's deadline.
func (c *Conn) readWelcome(ctx context.Context, ws *websocket.Conn) (protocol.Welcome, error) {
	var w protocol.Welcome
	if d, ok := ctx.Deadline(); ok {
		_ = ws.SetReadDeadline(d)
	}
	ws.SetReadLimit(1 << 20)
	mt, b, err := ws.ReadMessage()
	if err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return w, &CloseError{Code: ce.Code, Reason: ce.Text}
		}
		return w, err
	}
	if mt != websocket.TextMessage || json.Unmarshal(b, &w) != nil || w.Type != protocol.TypeWelcome {
		return w, fmt.Errorf("the server's first frame was %.100q, not a welcome", b)
	}
	return w, nil
}
