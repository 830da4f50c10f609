package node

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/batch"
	"github.com/roost-dev/roost/internal/httpapi"
	"github.com/roost-dev/roost/node/handoff"
	"github.com/roost-dev/roost/node/pause"
	"github.com/roost-dev/roost/node/quorum"
	"github.com/roost-dev/roost/node/replica"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
	"golang.org/x/time/rate"
)

// Handler serves the node's HTTP API: resolve, WebSocket, cluster, health and metrics, and the
// signed node-to-node calls.
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/rooms/{room}", n.handleResolve)
	mux.HandleFunc("GET /v1/rooms/{room}/ws", n.handleWS)
	mux.HandleFunc("POST /v1/rooms/{room}/messages", n.handleAPIPublish)
	mux.HandleFunc("GET /v1/rooms/{room}/messages", n.handleAPIHistory)
	mux.HandleFunc("GET /v1/rooms/{room}/presence", n.handleAPIPresence)
	mux.HandleFunc("POST "+handoff.Path, n.signed(n.mover.ServeHandoff))
	mux.HandleFunc("POST "+handoff.FencePath("{room}"), n.signed(n.mover.ServeFence))
	mux.HandleFunc("GET "+replica.Path, n.serveReplication)
	mux.HandleFunc("GET "+protocol.EdgePath("{room}"), n.handleEdge)
	mux.HandleFunc("POST "+quorum.Path, n.signed(func(w http.ResponseWriter, _ *http.Request, _ []byte) { protocol.WriteJSON(w, struct{}{}) }))
	mux.HandleFunc("POST "+handoff.ReleasePath("{room}"), n.signed(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		n.mover.ServeRelease(w, r)
	}))
	mux.HandleFunc("POST "+pause.TakeoverPath("{node}"), n.signed(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		n.watchdog.ServeTakeover(w, r)
	}))
	httpapi.Routes(mux, n.ring, n.metrics.reg, func() bool { return !n.isClosed() && !n.draining.Load() })
	return mux
}

// fresh holds a request while the node decides whether it is stale after a pause (its placement
// may be out of date and its rooms served elsewhere), answering 503 itself if that fails.
func (n *Node) fresh(w http.ResponseWriter, r *http.Request) bool {
	if err := n.watchdog.AwaitFresh(r.Context()); err != nil {
		n.metrics.refused.WithLabelValues("stale").Inc()
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady,
			"this node is catching up with the cluster after a pause; try again shortly")
		return false
	}
	return true
}

// handleResolve answers the owner's coordinates on the owner and a 307 to the owner elsewhere.
func (n *Node) handleResolve(w http.ResponseWriter, r *http.Request) {
	// Placement is public (it needs no token), and a page served by a router follows the
	// router's redirect here, across origins.
	w.Header().Set("Access-Control-Allow-Origin", "*")
	if !n.fresh(w, r) {
		return
	}
	p := n.ring.Placement()
	name, o, ok := httpapi.Place(w, r, p, n.metrics.refused)
	if !ok {
		return
	}
	if o.ID != n.id {
		n.metrics.redirects.Inc()
		httpapi.Redirect(w, r, o.HTTPURL()+"/v1/rooms/"+name)
		return
	}
	protocol.WriteJSON(w, protocol.Owner{Room: name, Node: o.ID, WSURL: o.WSURL(name), TCPAddr: o.TCP, Ring: p.Version()})
}

// parseResume reads since, epoch, client and presence from the query.
func parseResume(r *http.Request) (res room.Resume, client string, presence bool, err error) {
	return parseResumeQuery(r.URL.Query())
}

// parseResumeQuery is parseResume of a query.
func parseResumeQuery(q url.Values) (res room.Resume, client string, presence bool, err error) {
	if s := q.Get("since"); s != "" {
		res.Since, err = strconv.ParseUint(s, 10, 64)
		if err != nil {
			return res, "", false, errors.New("since must be a whole number (the last seq you saw)")
		}
		res.HasSince = true
	}
	res.Epoch = q.Get("epoch")
	if len(res.Epoch) > 64 {
		return res, "", false, errors.New("epoch is too long; pass back the epoch a welcome gave you")
	}
	client = q.Get("client")
	if len(client) > 128 || !utf8.ValidString(client) || strings.ContainsFunc(client, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return res, "", false, errors.New("client must be at most 128 bytes of printable UTF-8")
	}
	switch q.Get("presence") {
	case "", "0", "false":
	case "1", "true":
		presence = true
	default:
		return res, "", false, errors.New("presence must be 1 or 0")
	}
	return res, client, presence, nil
}

// handleWS serves a room's WebSocket on its owner and redirects (307, before upgrading) elsewhere.
func (n *Node) handleWS(w http.ResponseWriter, r *http.Request) {
	name, res, client, presence, ok := n.placedHere(w, r, ring.Member.WSURL)
	if !ok {
		return
	}
	adm, ok := n.door.Admit(w, r, name)
	if !ok {
		return
	}
	defer adm.Close()
	claims := adm.Claims
	if n.cfg.Auth != nil {
		client = claims.Subject // who the token says, not what the client claims
	}
	if client == "" {
		client = newClientID()
	}
	// A room this request would create counts against its address's rate; joining one the node
	// holds does not. Admit has checked the whole handshake, so only a client that will be in
	// gets this far.
	rm, ws, forget, ok := n.upgradeInto(w, r, name, true, n.served)
	if !ok {
		return
	}
	// The handler returns, so net/http lets go of the request, its 4 KiB reader and the
	// handler's deep stack; the connection lives on in a goroutine of its own, counted in
	// n.handlers like the handler was.
	n.conns.Add(1)
	n.metrics.connects.Inc()
	c := n.join(r.Context(), ws, rm, client, presence, !claims.Pub, res)
	if c == nil {
		forget()
		n.conns.Add(-1)
		ws.Close()
		n.handlers.Done()
		return
	}
	if n.cfg.Auth != nil && claims.ExpiresAt != nil {
		// The token is checked again when it expires, as a reconnect would check it: at exp,
		// with the verifier's leeway.
		c.expiry = time.AfterFunc(time.Until(claims.ExpiresAt.Add(auth.Leeway)), func() { n.expire(c) })
	}
	release := adm.Hand()
	go func() {
		defer release()
		defer n.handlers.Done()
		defer n.conns.Add(-1)
		defer ws.Close()
		n.read(c)
	}()
}

// placedHere answers a request for a room that this node is not to serve — while its rooms may
// be stale, with no room or no owner, for a room another node owns (a 307 to elsewhere(owner,
// room), before upgrading) or with a bad resume — and returns the room and the resume asked
// for otherwise.
func (n *Node) placedHere(w http.ResponseWriter, r *http.Request, elsewhere func(ring.Member, string) string) (name string, res room.Resume, client string, presence, ok bool) {
	if !n.fresh(w, r) {
		return "", res, "", false, false
	}
	name, o, ok := httpapi.Place(w, r, n.ring.Placement(), n.metrics.refused)
	if !ok {
		return "", res, "", false, false
	}
	if o.ID != n.id {
		n.metrics.redirects.Inc()
		httpapi.Redirect(w, r, elsewhere(o, name))
		return "", res, "", false, false
	}
	res, client, presence, err := parseResume(r)
	if err != nil {
		n.metrics.refused.WithLabelValues("bad_request").Inc()
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
		return "", res, "", false, false
	}
	return name, res, client, presence, true
}

// served reports whether Acquire's err lets the request be served here, answering it otherwise:
// a redirect to where the room is, or the refusal. rm, the room acquired (nil for a request
// that does not join it), is refused when full.
func (n *Node) served(w http.ResponseWriter, r *http.Request, name string, rm *room.Room, err error) bool {
	var held *handoff.HeldError
	switch {
	case err == nil && rm != nil && rm.Full():
		// Answered before upgrading, as every other limit is: a client that reads only the
		// handshake's status learns why. One that races another into the last place is
		// closed with 1013 instead (see join).
		n.metrics.refused.WithLabelValues("room_full").Inc()
		protocol.WriteError(w, http.StatusTooManyRequests, protocol.CodeLimit, "room full (--max-room-conns); try again later")
	case err == nil:
		return true
	case errors.As(err, &held): // the previous owner still holds it: send the client there
		n.metrics.redirects.Inc()
		httpapi.Redirect(w, r, held.To.WSURL(name))
	case errors.Is(err, ErrNotOwner): // the ring moved since Place
		if o, _, ok := n.owner(name); ok {
			httpapi.Redirect(w, r, o.WSURL(name))
			return false
		}
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNoNodes, "no node owns this room right now; try again shortly")
	case errors.Is(err, ErrClosed):
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady, "node shutting down; reconnect to be served by another node")
	case errors.Is(err, ErrTooManyRooms):
		n.metrics.refused.WithLabelValues("max_rooms").Inc()
		protocol.WriteError(w, http.StatusTooManyRequests, protocol.CodeLimit, "this node holds its maximum number of rooms (--max-rooms); try again later")
	case errors.Is(err, ErrMemory):
		n.metrics.refused.WithLabelValues("memory").Inc()
		protocol.WriteError(w, http.StatusTooManyRequests, protocol.CodeLimit, "this node is near its memory limit (--max-memory) and opens no new room; try again later")
	default:
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady, "the room is moving here; try again shortly")
	}
	return false
}

// upgradeInto takes the request's room — creating it if it must, the creation counted against
// the client's address rate when rated — and upgrades the connection. served answers a room it
// could not take. When it reports true the handler is counted in n.handlers, and forget drops
// the room again if this request created it and nobody joined; when false, it has answered.
func (n *Node) upgradeInto(w http.ResponseWriter, r *http.Request, name string, rated bool,
	served func(http.ResponseWriter, *http.Request, string, *room.Room, error) bool) (rm *room.Room, ws *websocket.Conn, forget func(), ok bool) {
	created := n.rooms.Get(name) == nil
	if created && rated {
		if refused := n.door.Limits.AdmitRoom(w, r); refused != "" {
			n.metrics.refused.WithLabelValues(refused).Inc()
			return nil, nil, nil, false
		}
	}
	rm, err := n.mover.Acquire(r.Context(), name)
	if !served(w, r, name, rm, err) {
		return nil, nil, nil, false
	}
	acquired := time.Now()
	forget = func() { n.forgetUnjoined(created, rm, acquired) }
	if !n.track() {
		forget()
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady, "node shutting down; reconnect to be served by another node")
		return nil, nil, nil, false
	}
	ws, err = n.upgrader.Upgrade(&batch.Hijacker{ResponseWriter: w}, r, nil)
	if err != nil {
		forget()
		n.handlers.Done()
		return nil, nil, nil, false // the upgrader has answered
	}
	return rm, ws, forget, true
}

// forgetUnjoined drops rm again when this request created it (created) and no client has been in
// it since acquired: a client that failed to upgrade or join leaves no room behind to be kept for
// RoomIdle. A room with messages is never dropped so.
func (n *Node) forgetUnjoined(created bool, rm *room.Room, acquired time.Time) {
	if created && rm.Stats().Seq == 0 && rm.ReclaimIfIdle(acquired) {
		n.rooms.Remove(rm)
		n.metrics.reclaimed.Inc()
	}
}

// reader is a joined client connection as its reader goroutine sees it.
type reader struct {
	conn     *room.Conn
	ws       *websocket.Conn
	room     *room.Room
	readOnly bool          // its token does not allow publishing
	publish  *rate.Limiter // its publishes per second
	expiry   *time.Timer   // fires when its token expires; nil without auth
	expired  atomic.Bool   // its token has expired: it is being closed with 4401
}

// expire closes c with 4401 when its token has expired (on its expiry timer): the client is
// told why, and nothing it sends from now on is taken. A client that does not answer the close
// is cut a second later.
func (n *Node) expire(c *reader) {
	c.expired.Store(true)
	n.metrics.drops.WithLabelValues("token_expired").Inc()
	httpapi.CloseWith(c.ws, protocol.CloseUnauthorized, "unauthorized: the token has expired; reconnect with a fresh one")
	_ = c.ws.SetReadDeadline(time.Now().Add(time.Second))
}

// extendRead pushes c's read deadline d away, unless the connection is being closed: then the
// close handshake's own deadline holds.
func (c *reader) extendRead(d time.Duration) error {
	if c.expired.Load() {
		return nil
	}
	err := c.ws.SetReadDeadline(time.Now().Add(d))
	if c.expired.Load() { // expired meanwhile: its deadline may have been overwritten
		_ = c.ws.SetReadDeadline(time.Now().Add(time.Second))
	}
	return err
}

// join makes ws a member of rm and starts its pings; nil when it could not join (the client
// has been told why). It runs on the handler goroutine, so the welcome and replay, which take
// a deep stack, do not grow the stack the connection's reader keeps for its whole life.
func (n *Node) join(ctx context.Context, ws *websocket.Conn, rm *room.Room, client string, presence, readOnly bool, res room.Resume) *reader {
	c := room.NewConn(n.roomCfg, ws, client, presence)
	for attempt := 0; ; attempt++ {
		err := rm.Join(c, res)
		if err == nil {
			break
		}
		if errors.Is(err, room.ErrStale) && n.watchdog.AwaitFresh(ctx) == nil && attempt <= 3 {
			continue // decided: the room was kept, or is closed and looked up again next round
		}
		if errors.Is(err, room.ErrFull) {
			n.metrics.refused.WithLabelValues("room_full").Inc()
			httpapi.CloseWith(ws, websocket.CloseTryAgainLater, "room full (--max-room-conns); try again later")
			return nil
		}
		// The room was reclaimed or moved between lookup and join: look again.
		name := rm.Name()
		if rm, err = n.mover.Acquire(ctx, name); err != nil || attempt > 3 {
			o, _, _ := n.owner(name)
			b, _ := json.Marshal(protocol.MovedReason{Node: o.ID})
			httpapi.CloseWith(ws, protocol.CloseMoved, string(b))
			return nil
		}
	}
	c.StartPings()
	return &reader{conn: c, ws: ws, room: rm, readOnly: readOnly,
		publish: rate.NewLimiter(rate.Limit(n.cfg.PublishRate), n.cfg.PublishBurst)}
}

// read is a joined connection's reader, on a goroutine of its own: it reads the client's
// frames until the connection ends, then leaves the room and waits for the writer.
func (n *Node) read(c *reader) {
	ws := c.ws
	defer func() {
		if c.expiry != nil {
			c.expiry.Stop()
		}
		c.room.Leave(c.conn)
		c.conn.End()
	}()

	readWait := n.cfg.PingInterval * 5 / 2
	ws.SetReadLimit(n.cfg.MaxFrame)
	_ = c.extendRead(readWait)
	ws.SetPongHandler(func(string) error { return c.extendRead(readWait) })
	for {
		mt, data, err := ws.ReadMessage()
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				n.metrics.drops.WithLabelValues("too_big").Inc()
				protocol.CloseGently(ws.NetConn(), lingerTimeout) // gorilla sent the 1009
			case errors.As(err, &ne) && ne.Timeout():
				n.metrics.drops.WithLabelValues("silent").Inc() // no pong for 2.5 ping intervals
			}
			return
		}
		if c.expired.Load() {
			continue // its token has expired: nothing more is taken from it
		}
		if c.conn.Closing() {
			// Sent on its way (a move, a refusal as moved): nothing more is taken from it, so
			// every frame it sent after the one refused is unanswered and safe to send again.
			continue
		}
		_ = c.extendRead(readWait)
		switch mt {
		case websocket.TextMessage:
			n.handleText(c, data)
		case websocket.BinaryMessage:
			if c.readOnly {
				n.refuseReadOnly(c, "")
				continue
			}
			if !n.allowPublish(c, "") {
				continue
			}
			frame := make([]byte, 8+len(data))
			copy(frame[8:], data)
			if _, err := c.room.PublishBinary(n.ctx, c.conn, frame); err != nil {
				n.refuseMoved(c, "", "the room is moving; publish again after reconnecting")
			}
		}
	}
}

// handleText handles one client text frame. Bad frames get an error frame and the connection
// stays open.
func (n *Node) handleText(c *reader, data []byte) {
	p, bad := protocol.ParsePublish(data)
	switch {
	case bad != nil:
		n.metrics.refused.WithLabelValues(bad.Code).Inc()
		c.conn.SendJSON(*bad)
	case c.readOnly:
		n.refuseReadOnly(c, p.ID)
	case !n.allowPublish(c, p.ID):
	default:
		if err := c.room.Publish(n.ctx, c.conn, p.ID, p.Data); err != nil {
			n.refuseMoved(c, p.ID, "the room is moving; publish again with the same id after reconnecting")
		}
	}
}

// refuseMoved answers a publish the room refused because it is moving (or held for longer than
// --handoff-hold, or closed): an error frame, then a 4001 naming the owner by this node's ring,
// so the client reconnects and publishes again there, even if the room thaws here instead.
func (n *Node) refuseMoved(c *reader, id, why string) {
	c.conn.SendJSON(protocol.ErrorFrame{Type: protocol.TypeError, Code: protocol.CodeMoved, ID: id, Error: why})
	o, _, _ := n.owner(c.room.Name())
	c.room.Evict(c.conn, room.Moved(o, true))
}

// refuseReadOnly answers a publish from a connection whose token does not allow publishing;
// nothing is delivered and the connection stays open.
func (n *Node) refuseReadOnly(c *reader, id string) {
	n.metrics.refused.WithLabelValues("read_only").Inc()
	c.conn.SendJSON(protocol.ErrorFrame{Type: protocol.TypeError, Code: protocol.CodeForbidden, ID: id,
		Error: "this connection's token is read-only (no pub claim); the publish was not delivered"})
}

// allowPublish takes one publish from c's rate; over it, c gets an error frame rate_limited
// (nothing is delivered, the connection stays open) and allowPublish reports false.
func (n *Node) allowPublish(c *reader, id string) bool {
	if c.publish.Allow() {
		return true
	}
	n.metrics.refused.WithLabelValues("rate_limited").Inc()
	c.conn.SendJSON(protocol.ErrorFrame{Type: protocol.TypeError, Code: protocol.CodeRateLimited, ID: id,
		Error: "publishing faster than this node allows (--publish-rate); the publish was not delivered, send it again later"})
	return false
}

// serveReplication serves a room owner's replication stream, once its signature holds.
func (n *Node) serveReplication(w http.ResponseWriter, r *http.Request) {
	if n.replicas == nil {
		protocol.WriteError(w, http.StatusNotFound, protocol.CodeNotFound, "this node keeps no replicas (--room-replicas 0)")
		return
	}
	if err := n.peers.CheckStream(r, n.selfHTTP()); err != nil {
		n.metrics.refused.WithLabelValues("peer_auth").Inc()
		protocol.WriteError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, err.Error())
		return
	}
	n.replicas.Store().ServeStream(w, r)
}

// handleEdge serves a router's edge leg for a room (see package edge), once its signature holds:
// on the owner, the room; elsewhere a 307 to the owner's leg, before upgrading, which the router
// follows with a signature of its own for that node.
func (n *Node) handleEdge(w http.ResponseWriter, r *http.Request) {
	if err := n.peers.CheckStream(r, n.selfHTTP()); err != nil {
		n.metrics.refused.WithLabelValues("peer_auth").Inc()
		protocol.WriteError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, err.Error())
		return
	}
	name, res, _, _, ok := n.placedHere(w, r, func(o ring.Member, name string) string { return o.HTTPURL() + protocol.EdgePath(name) })
	if !ok {
		return
	}
	// A leg's first dial is for a client (its address in X-Forwarded-For): a room it would
	// create counts against that address's rate, as on a direct connect. A leg that moved here
	// (it names its epoch) creates nothing new for anyone.
	rm, ws, _, ok := n.upgradeInto(w, r, name, res.Epoch == "", n.servedEdge)
	if !ok {
		return
	}
	leg := room.NewLeg(n.roomCfg, ws)
	for attempt := 0; ; attempt++ {
		err := rm.JoinLeg(leg, res)
		if err == nil {
			break
		}
		if errors.Is(err, room.ErrStale) && n.watchdog.AwaitFresh(r.Context()) == nil && attempt <= 3 {
			continue
		}
		if rm, err = n.mover.Acquire(r.Context(), name); err != nil || attempt > 3 {
			o, _, _ := n.owner(name)
			b, _ := json.Marshal(protocol.MovedReason{Node: o.ID})
			httpapi.CloseWith(ws, protocol.CloseMoved, string(b))
			ws.Close()
			n.handlers.Done()
			return
		}
	}
	leg.StartPings()
	go func() {
		defer n.handlers.Done()
		defer ws.Close()
		n.edge.Serve(n.ctx, ws, leg, rm)
	}()
}

// servedEdge is served for a leg: a room held elsewhere is a redirect to that node's leg.
func (n *Node) servedEdge(w http.ResponseWriter, r *http.Request, name string, _ *room.Room, err error) bool {
	var held *handoff.HeldError
	switch {
	case errors.As(err, &held):
		n.metrics.redirects.Inc()
		httpapi.Redirect(w, r, held.To.HTTPURL()+protocol.EdgePath(name))
		return false
	case errors.Is(err, ErrNotOwner):
		if o, _, ok := n.owner(name); ok {
			httpapi.Redirect(w, r, o.HTTPURL()+protocol.EdgePath(name))
			return false
		}
	}
	return n.served(w, r, name, nil, err)
}
