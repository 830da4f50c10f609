package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/batch"
	"github.com/roost-dev/roost/internal/httpapi"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/protocol"
)

// handleWS dials the room's owner first and only then upgrades the client, so a client the
// owner refuses gets the owner's own answer (status and JSON) and one the router cannot serve
// gets a JSON error, never a WebSocket that closes at once. The owner is dialed only for a
// request Admit let in: its whole handshake checked, so one that would fail to upgrade costs
// the owner nothing (no dial, no room).
func (rt *Router) handleWS(w http.ResponseWriter, r *http.Request) {
	room, o, ok := httpapi.Place(w, r, rt.ring.Placement(), rt.metrics.refused)
	if !ok {
		return
	}
	adm, ok := rt.clients.Admit(w, r, room)
	if !ok {
		return
	}
	defer adm.Close()
	if rt.budget.Full() {
		// The router's memory guard: near --max-memory-mib (or with its budget spent) it takes no
		// new client, and says so before the upgrade and before dialing any owner.
		rt.metrics.refused.WithLabelValues(limit.CodeOverloaded).Inc()
		w.Header().Set("Retry-After", "1")
		protocol.WriteError(w, http.StatusTooManyRequests, limit.CodeOverloaded,
			"the router is near its memory limit (--max-memory-mib); try again later")
		return
	}
	if rt.cfg.Edge && o.Edge {
		rt.serveEdge(w, r, room, o, adm)
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
	s := &session{rt: rt, room: room, up: up, query: r.URL.Query(), header: rt.upstreamHeader(r)}
	if err := rt.track(s); err != nil {
		up.Close()
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady, "router shutting down; reconnect")
		return
	}
	client, err := rt.upgrader.Upgrade(&batch.Hijacker{ResponseWriter: w}, r, nil)
	if err != nil {
		up.Close()
		rt.untrack(s)
		return // the upgrader has answered
	}
	if !s.attach(client) { // Close came first
		httpapi.CloseWith(client, websocket.CloseGoingAway, "router shutting down")
		client.Close()
		up.Close()
		rt.untrack(s)
		return
	}
	rt.metrics.opened.Inc()
	// A token that expires while the session is open ends it then, as the owner ends its leg.
	var expiry *time.Timer
	if rt.cfg.Auth != nil && adm.Claims.ExpiresAt != nil {
		expiry = time.AfterFunc(time.Until(adm.Claims.ExpiresAt.Add(auth.Leeway)), func() { rt.expire(s) })
	}
	// The handler returns, so net/http lets go of the request and its buffers; the session
	// lives on in goroutines of its own, counted by track like the handler was.
	release := adm.Hand()
	go func() {
		defer release()
		defer rt.untrack(s)
		if expiry != nil {
			defer expiry.Stop()
		}
		s.run()
	}()
}

// expire ends a session whose client's token has expired (on its expiry timer, at exp with
// the verifier's leeway, when a reconnect would be refused): the client is closed with 4401,
// which the up pump passes on to the owner, and cut a second later if it does not answer. The
// session does not re-dial.
func (rt *Router) expire(s *session) {
	s.stop()
	rt.metrics.refused.WithLabelValues("token_expired").Inc()
	httpapi.CloseWith(s.client, protocol.CloseUnauthorized, "unauthorized: the token has expired; reconnect with a fresh one")
	time.AfterFunc(time.Second, func() { s.client.Close() })
}

// dialOwner dials the owner's WebSocket with the client's query and credentials, following the
// redirects a node answers while members disagree about the ring.
func (rt *Router) dialOwner(ctx context.Context, wsURL string, r *http.Request) (*websocket.Conn, *http.Response, error) {
	return rt.dial(ctx, wsURL, r.URL.RawQuery, rt.upstreamHeader(r))
}

// upstreamHeader is what the owner is told of the client: its credentials, origin and address.
// The address chain is the client's own X-Forwarded-For only when it came through a trusted hop.
func (rt *Router) upstreamHeader(r *http.Request) http.Header {
	h := http.Header{}
	for _, k := range []string{"Authorization", "Origin", "User-Agent"} {
		if v := r.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	h.Set("X-Forwarded-For", rt.door.Hops.ForwardedFor(r))
	return h
}

// dial dials a room's WebSocket on a node, following redirects.
func (rt *Router) dial(ctx context.Context, wsURL, rawQuery string, h http.Header) (*websocket.Conn, *http.Response, error) {
	u := wsURL
	if rawQuery != "" {
		u += "?" + rawQuery
	}
	start := u
	for hops, round := 0, 0; ; hops++ {
		c, resp, err := rt.dialer.DialContext(ctx, u, h)
		if err == nil {
			return c, resp, nil
		}
		if resp == nil || resp.StatusCode != http.StatusTemporaryRedirect {
			return nil, resp, err
		}
		if hops >= rt.cfg.MaxRedirects {
			// Nodes that disagree about the ring for a moment send each other the room: start
			// over shortly, within ctx.
			round++
			select {
			case <-ctx.Done():
				return nil, nil, fmt.Errorf("more than %d redirects while the ring converges: %w", rt.cfg.MaxRedirects, err)
			case <-time.After(min(25*time.Millisecond*time.Duration(round), 500*time.Millisecond)):
			}
			u, hops = start, -1
			continue
		}
		rt.metrics.dials.WithLabelValues("redirect").Inc()
		u = resp.Header.Get("Location") // a node's redirect keeps the query
	}
}

// passThrough relays an owner's refusal (status, body, and when to try again) to the client.
func passThrough(w http.ResponseWriter, resp *http.Response) {
	for _, k := range []string{"Content-Type", "Retry-After"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if resp.Body != nil {
		_, _ = io.Copy(w, io.LimitReader(resp.Body, 64<<10))
	}
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
