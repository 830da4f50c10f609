package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/protocol"
)

// handleWS dials the room's owner first and only then upgrades the client, so a client the
// owner refuses gets the owner's own answer (status and JSON) and one the router cannot serve
// gets a JSON error, never a WebSocket that closes at once.
func (rt *Router) handleWS(w http.ResponseWriter, r *http.Request) {
	room, o, ok := rt.place(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), rt.cfg.DialTimeout)
	up, resp, err := rt.dialOwner(ctx, o.WSURL(room), r)
	cancel()
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			rt.metrics.dials.WithLabelValues("refused").Inc()
			passThrough(w, resp)
			return
		}
		rt.metrics.dials.WithLabelValues("error").Inc()
		rt.log.Warn("owner unreachable", "room", room, "peer", o.ID, "err", err)
		protocol.WriteError(w, http.StatusBadGateway, protocol.CodeUnavailable,
			fmt.Sprintf("could not reach node %s, the owner of room %s; try again shortly", o.ID, room))
		return
	}
	rt.metrics.dials.WithLabelValues("ok").Inc()
	s := &session{rt: rt, room: room, up: up, log: rt.log.With("room", room, "peer", o.ID)}
	if err := rt.track(s); err != nil {
		up.Close()
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady, "router shutting down; reconnect")
		return
	}
	defer rt.untrack(s)
	client, err := rt.upgrader.Upgrade(w, r, nil)
	if err != nil {
		up.Close()
		return // the upgrader has answered
	}
	if !s.attach(client) { // Close came first
		closeWith(client, websocket.CloseGoingAway, "router shutting down")
		client.Close()
		up.Close()
		return
	}
	rt.metrics.opened.Inc()
	s.run()
}

// dialOwner dials the owner's WebSocket with the client's query and credentials, following the
// redirects a node answers while members disagree about the ring.
func (rt *Router) dialOwner(ctx context.Context, wsURL string, r *http.Request) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	for _, k := range []string{"Authorization", "Origin", "User-Agent"} {
		if v := r.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := r.Header.Get("X-Forwarded-For"); prior != "" {
			ip = prior + ", " + ip
		}
		h.Set("X-Forwarded-For", ip)
	}
	u := wsURL
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	for hops := 0; ; hops++ {
		c, resp, err := rt.dialer.DialContext(ctx, u, h)
		if err == nil {
			return c, resp, nil
		}
		if resp == nil || resp.StatusCode != http.StatusTemporaryRedirect || hops >= rt.cfg.MaxRedirects {
			return nil, resp, err
		}
		rt.metrics.dials.WithLabelValues("redirect").Inc()
		u = resp.Header.Get("Location") // a node's redirect keeps the query
	}
}

// passThrough relays an owner's refusal (status and body) to the client.
func passThrough(w http.ResponseWriter, resp *http.Response) {
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	if resp.Body != nil {
		_, _ = io.Copy(w, io.LimitReader(resp.Body, 64<<10))
	}
}

// session is one proxied connection: the client leg and the owner leg, a pump per direction,
// and the handler goroutine that owns both, keeps them alive and waits for them.
//
// When a room moves, the owner closes its leg with 4001; the router passes that on today.
// Transparent migration will re-dial the new owner here instead (in run, where the down pump
// ends with a 4001) and keep the client leg.
type session struct {
	rt   *Router
	room string
	up   *websocket.Conn
	log  *slog.Logger

	mu       sync.Mutex
	client   *websocket.Conn
	stopping bool
}

// pumpEnd says how a pump ended: an error reading its source, or writing its destination.
type pumpEnd struct {
	err  error
	read bool
}

func (s *session) attach(c *websocket.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client = c
	return !s.stopping
}

// shutdown closes both legs with 1001 (router Close).
func (s *session) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping = true
	if s.client == nil {
		return
	}
	closeWith(s.client, websocket.CloseGoingAway, "router shutting down")
	closeWith(s.up, websocket.CloseGoingAway, "client's router shutting down")
	grace := time.Now().Add(time.Second)
	_ = s.client.SetReadDeadline(grace)
	_ = s.up.SetReadDeadline(grace)
}

func (s *session) run() {
	cfg := s.rt.cfg
	readWait := cfg.PingInterval * 5 / 2
	for _, c := range []*websocket.Conn{s.client, s.up} {
		keepAlive(c, readWait, cfg.WriteTimeout)
	}
	s.client.SetReadLimit(cfg.MaxFrame)
	down, up := make(chan pumpEnd, 1), make(chan pumpEnd, 1)
	go func() { down <- s.pump(s.up, s.client, "down", readWait) }()
	go func() { up <- s.pump(s.client, s.up, "up", readWait) }()
	defer func() {
		s.client.Close()
		s.up.Close()
	}()

	ping := time.NewTicker(cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case end := <-down:
			if end.read { // the owner closed or vanished: tell the client why
				code, text := closeOf(end.err, "the room's owner went away")
				closeWith(s.client, code, text)
				s.log.Debug("owner closed a proxied connection", "code", code)
			} else { // the client is gone
				closeWith(s.up, websocket.CloseGoingAway, "client went away")
			}
			s.finish(up)
			return
		case end := <-up:
			if end.read { // the client closed or vanished: tell the owner
				code, text := closeOf(end.err, "client went away")
				if errors.Is(end.err, websocket.ErrReadLimit) {
					code, text = websocket.CloseGoingAway, "client sent a frame over the limit"
				}
				closeWith(s.up, code, text)
			} else {
				closeWith(s.client, websocket.CloseGoingAway, "the room's owner went away")
			}
			s.finish(down)
			return
		case <-ping.C:
			deadline := time.Now().Add(cfg.WriteTimeout)
			if s.client.WriteControl(websocket.PingMessage, nil, deadline) != nil || s.up.WriteControl(websocket.PingMessage, nil, deadline) != nil {
				s.client.Close()
				s.up.Close()
			}
		}
	}
}

// finish gives the other pump a moment to see the close handshake end, then cuts both legs.
func (s *session) finish(other <-chan pumpEnd) {
	select {
	case <-other:
		return
	case <-time.After(time.Second):
	}
	s.client.Close()
	s.up.Close()
	<-other
}

// pump copies messages from src to dst, one whole message at a time, keeping its type.
func (s *session) pump(src, dst *websocket.Conn, dir string, readWait time.Duration) pumpEnd {
	bufp := s.rt.buffers.Get().(*[]byte)
	defer s.rt.buffers.Put(bufp)
	frames, bytes := s.rt.metrics.frames.WithLabelValues(dir), s.rt.metrics.bytes.WithLabelValues(dir)
	for {
		mt, r, err := src.NextReader()
		if err != nil {
			return pumpEnd{err: err, read: true}
		}
		_ = src.SetReadDeadline(time.Now().Add(readWait))
		_ = dst.SetWriteDeadline(time.Now().Add(s.rt.cfg.WriteTimeout))
		w, err := dst.NextWriter(mt)
		if err != nil {
			return pumpEnd{err: err}
		}
		rr := &readErr{r: r}
		n, err := io.CopyBuffer(w, rr, *bufp)
		if err != nil {
			w.Close()
			return pumpEnd{err: err, read: rr.err != nil}
		}
		if err := w.Close(); err != nil {
			return pumpEnd{err: err}
		}
		frames.Inc()
		bytes.Add(float64(n))
	}
}

// readErr remembers a read error, so a failed copy says which side failed.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// keepAlive answers pings and extends the read deadline on any sign of life.
func keepAlive(c *websocket.Conn, readWait, writeTimeout time.Duration) {
	_ = c.SetReadDeadline(time.Now().Add(readWait))
	c.SetPongHandler(func(string) error { return c.SetReadDeadline(time.Now().Add(readWait)) })
	c.SetPingHandler(func(data string) error {
		_ = c.SetReadDeadline(time.Now().Add(readWait))
		err := c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeTimeout))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	})
}

// closeOf is the close to pass on for a leg that ended with err: its own close code and reason
// if it sent one, else 1001.
func closeOf(err error, fallback string) (int, string) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure && ce.Code != websocket.CloseTLSHandshake {
		return ce.Code, ce.Text
	}
	return websocket.CloseGoingAway, fallback
}

// closeWith sends a close frame, best effort.
func closeWith(c *websocket.Conn, code int, text string) {
	if len(text) > 120 { // a close reason must fit a control frame
		text = strings.ToValidUTF8(text[:120], "")
	}
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
}
