package node

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/batch"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// Handler serves the node's HTTP API: resolve, WebSocket, cluster, health and metrics.
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/rooms/{room}", n.handleResolve)
	mux.HandleFunc("GET /v1/rooms/{room}/ws", n.handleWS)
	mux.HandleFunc("GET /v1/cluster", n.handleCluster)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		protocol.WriteJSON(w, map[string]string{"status": "ok", "node": n.id})
	})
	mux.HandleFunc("GET /readyz", n.handleReady)
	mux.HandleFunc("POST /internal/v1/handoff", n.handleHandoff)
	mux.HandleFunc("POST /internal/v1/rooms/{room}/release", n.handleRelease)
	mux.HandleFunc("POST /internal/v1/nodes/{node}/takeover", n.handleTakeover)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		protocol.WriteError(w, http.StatusNotFound, protocol.CodeNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

func (n *Node) handleReady(w http.ResponseWriter, _ *http.Request) {
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed || n.draining.Load() || !n.ring.Ready() {
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady, "not ready: not joined, no node in the ring, or shutting down")
		return
	}
	protocol.WriteJSON(w, map[string]string{"status": "ready", "node": n.id, "ring": n.ring.Placement().Version()})
}

func (n *Node) handleCluster(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*") // public: pages served elsewhere may show it
	protocol.WriteJSON(w, n.ring.Placement().Cluster(n.id))
}

// fresh holds a request while the node decides whether it is stale after a pause (its placement
// may be out of date and its rooms served elsewhere), answering 503 itself if that fails.
func (n *Node) fresh(w http.ResponseWriter, r *http.Request) bool {
	if err := n.awaitFresh(r.Context()); err != nil {
		n.metrics.refused.WithLabelValues("stale").Inc()
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady,
			"this node is catching up with the cluster after a pause; try again shortly")
		return false
	}
	return true
}

// placeRoom validates the room name and finds its owner, answering the error itself when there
// is none.
func (n *Node) placeRoom(w http.ResponseWriter, r *http.Request) (string, ring.Member, *ring.Placement, bool) {
	room := r.PathValue("room")
	if err := protocol.ValidRoom(room); err != nil {
		n.metrics.refused.WithLabelValues("bad_room").Inc()
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRoom, err.Error())
		return "", ring.Member{}, nil, false
	}
	o, p, ok := n.owner(room)
	if !ok {
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNoNodes, "no node in the ring owns rooms yet; try again shortly")
		return "", ring.Member{}, nil, false
	}
	return room, o, p, true
}

// handleResolve answers the owner's coordinates on the owner and a 307 to the owner elsewhere.
func (n *Node) handleResolve(w http.ResponseWriter, r *http.Request) {
	// Placement is public (it needs no token), and a page served by a router follows the
	// router's redirect here, across origins.
	w.Header().Set("Access-Control-Allow-Origin", "*")
	if !n.fresh(w, r) {
		return
	}
	room, o, p, ok := n.placeRoom(w, r)
	if !ok {
		return
	}
	if o.ID != n.id {
		n.metrics.redirects.Inc()
		redirect(w, r, o.HTTPURL()+"/v1/rooms/"+room)
		return
	}
	protocol.WriteJSON(w, protocol.Owner{Room: room, Node: o.ID, WSURL: o.WSURL(room), TCPAddr: o.TCP, Ring: p.Version()})
}

// redirect answers 307 to target, keeping the request's query.
func redirect(w http.ResponseWriter, r *http.Request, target string) {
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	w.Header().Set("Location", target)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// parseResume reads since, epoch, client and presence from the query.
func parseResume(r *http.Request) (res resume, client string, presence bool, err error) {
	q := r.URL.Query()
	if s := q.Get("since"); s != "" {
		res.since, err = strconv.ParseUint(s, 10, 64)
		if err != nil {
			return res, "", false, errors.New("since must be a whole number (the last seq you saw)")
		}
		res.hasSince = true
	}
	res.epoch = q.Get("epoch")
	if len(res.epoch) > 64 {
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
	if !n.fresh(w, r) {
		return
	}
	name, o, _, ok := n.placeRoom(w, r)
	if !ok {
		return
	}
	if o.ID != n.id {
		n.metrics.redirects.Inc()
		redirect(w, r, o.WSURL(name))
		return
	}
	res, client, presence, err := parseResume(r)
	if err != nil {
		n.metrics.refused.WithLabelValues("bad_request").Inc()
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
		return
	}
	release, refused := n.door.Admit(w, r)
	if refused != "" {
		n.metrics.refused.WithLabelValues(refused).Inc()
		return
	}
	handedOver := false // the connection's own goroutine releases its place
	defer func() {
		if !handedOver {
			release()
		}
	}()
	claims, err := n.cfg.Auth.Check(auth.FromRequest(r), name, false)
	if err != nil {
		n.refuseUpgrade(w, r, err)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		n.metrics.refused.WithLabelValues("not_websocket").Inc()
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, "this endpoint takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)")
		return
	}
	if n.cfg.Auth != nil {
		client = claims.Subject // who the token says, not what the client claims
	}
	if client == "" {
		client = newClientID()
	}
	room, err := n.acquire(r.Context(), name)
	var moved *redirectError
	switch {
	case errors.As(err, &moved): // the previous owner still holds it: send the client there
		n.metrics.redirects.Inc()
		redirect(w, r, moved.to.WSURL(name))
		return
	case errors.Is(err, ErrNotOwner): // the ring moved since placeRoom
		if o, _, ok := n.owner(name); ok {
			redirect(w, r, o.WSURL(name))
			return
		}
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNoNodes, "no node owns this room right now; try again shortly")
		return
	case errors.Is(err, ErrClosed):
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady, "node shutting down; reconnect to be served by another node")
		return
	case errors.Is(err, ErrTooManyRooms):
		n.metrics.refused.WithLabelValues("max_rooms").Inc()
		protocol.WriteError(w, http.StatusTooManyRequests, protocol.CodeLimit, "this node holds its maximum number of rooms (--max-rooms); try again later")
		return
	case errors.Is(err, ErrMemory):
		n.metrics.refused.WithLabelValues("memory").Inc()
		protocol.WriteError(w, http.StatusTooManyRequests, protocol.CodeLimit, "this node is near its memory limit (--max-memory) and opens no new room; try again later")
		return
	case err != nil:
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady, "the room is moving here; try again shortly")
		return
	}
	if !n.track() {
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady, "node shutting down; reconnect to be served by another node")
		return
	}
	ws, err := n.upgrader.Upgrade(&batch.Hijacker{ResponseWriter: w}, r, nil)
	if err != nil {
		n.handlers.Done()
		return // the upgrader has answered
	}
	// The handler returns, so net/http lets go of the request, its 4 KiB reader and the
	// handler's deep stack; the connection lives on in a goroutine of its own, counted in
	// n.handlers like the handler was.
	n.conns.Add(1)
	n.metrics.connects.Inc()
	c := n.join(r.Context(), ws, room, client, presence, !claims.Pub, res)
	if c == nil {
		n.conns.Add(-1)
		ws.Close()
		n.handlers.Done()
		return
	}
	handedOver = true
	go func() {
		defer release()
		defer n.handlers.Done()
		defer n.conns.Add(-1)
		defer ws.Close()
		n.read(c)
	}()
}

// refuseUpgrade answers a client whose token failed: the upgrade completes so a browser can read
// why, then the connection closes with 4401 (no valid token) or 4403 (not for this room).
func (n *Node) refuseUpgrade(w http.ResponseWriter, r *http.Request, err error) {
	closeCode, status, code := auth.Refusal(err)
	n.metrics.refused.WithLabelValues(code).Inc()
	n.log.Debug("client refused", "room", r.PathValue("room"), "reason", err.Error(), "peer", r.RemoteAddr)
	if !websocket.IsWebSocketUpgrade(r) {
		protocol.WriteError(w, status, code, err.Error())
		return
	}
	ws, uerr := n.upgrader.Upgrade(w, r, nil)
	if uerr != nil {
		return
	}
	closeNow(ws, closeCode, protocol.CloseReason(err.Error()))
	ws.Close()
}

// track counts a connection handler in, unless the node is closing.
func (n *Node) track() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.handlers.Add(1)
	return true
}

// join makes ws a member of room and starts its pings; nil when it could not join (the client
// has been told why). It runs on the handler goroutine, so the welcome and replay, which take
// a deep stack, do not grow the stack the connection's reader keeps for its whole life.
func (n *Node) join(ctx context.Context, ws *websocket.Conn, room *Room, client string, presence, readOnly bool, res resume) *conn {
	c := newConn(n, ws, client, presence, readOnly)
	for attempt := 0; ; attempt++ {
		err := room.join(c, res)
		if err == nil {
			break
		}
		if errors.Is(err, ErrStale) && n.awaitFresh(ctx) == nil && attempt <= 3 {
			continue // decided: the room was kept, or is closed and looked up again next round
		}
		if errors.Is(err, ErrRoomFull) {
			n.metrics.refused.WithLabelValues("room_full").Inc()
			closeNow(ws, websocket.CloseTryAgainLater, "room full (--max-room-conns); try again later")
			return nil
		}
		// The room was reclaimed or moved between lookup and join: look again.
		name := room.name
		if room, err = n.acquire(ctx, name); err != nil || attempt > 3 {
			o, _, _ := n.owner(name)
			closeNow(ws, protocol.CloseMoved, string(mustJSON(protocol.MovedReason{Node: o.ID})))
			return nil
		}
	}
	c.startPings()
	return c
}

// read is a joined connection's reader, on a goroutine of its own: it reads the client's
// frames until the connection ends, then leaves the room and waits for the writer.
func (n *Node) read(c *conn) {
	ws := c.ws
	defer func() {
		c.room.leave(c)
		c.end()
	}()

	readWait := n.cfg.PingInterval * 5 / 2
	ws.SetReadLimit(n.cfg.MaxFrame)
	_ = ws.SetReadDeadline(time.Now().Add(readWait))
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(readWait)) })
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
		if !c.isClosing() {
			_ = ws.SetReadDeadline(time.Now().Add(readWait))
		}
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
			if _, err := c.room.publishBinary(c, frame); err != nil {
				c.sendJSON(protocol.ErrorFrame{Type: protocol.TypeError, Code: protocol.CodeMoved, Error: "the room is moving; publish again after reconnecting"})
			}
		}
	}
}

// handleText handles one client text frame. Bad frames get an error frame and the connection
// stays open.
func (n *Node) handleText(c *conn, data []byte) {
	p, bad := protocol.ParsePublish(data)
	switch {
	case bad != nil:
		n.metrics.refused.WithLabelValues(bad.Code).Inc()
		c.sendJSON(*bad)
	case c.readOnly:
		n.refuseReadOnly(c, p.ID)
	case !n.allowPublish(c, p.ID):
	default:
		if err := c.room.publish(c, p.ID, p.Data); err != nil {
			c.sendJSON(protocol.ErrorFrame{Type: protocol.TypeError, Code: protocol.CodeMoved, ID: p.ID,
				Error: "the room is moving; publish again with the same id after reconnecting"})
		}
	}
}

// refuseReadOnly answers a publish from a connection whose token does not allow publishing;
// nothing is delivered and the connection stays open.
func (n *Node) refuseReadOnly(c *conn, id string) {
	n.metrics.refused.WithLabelValues("read_only").Inc()
	c.sendJSON(protocol.ErrorFrame{Type: protocol.TypeError, Code: protocol.CodeForbidden, ID: id,
		Error: "this connection's token is read-only (no pub claim); the publish was not delivered"})
}

// allowPublish takes one publish from c's rate; over it, c gets an error frame rate_limited
// (nothing is delivered, the connection stays open) and allowPublish reports false.
func (n *Node) allowPublish(c *conn, id string) bool {
	if c.publish.Allow() {
		return true
	}
	n.metrics.refused.WithLabelValues("rate_limited").Inc()
	c.sendJSON(protocol.ErrorFrame{Type: protocol.TypeError, Code: protocol.CodeRateLimited, ID: id,
		Error: "publishing faster than this node allows (--publish-rate); the publish was not delivered, send it again later"})
	return false
}

func closeNow(ws *websocket.Conn, code int, reason string) {
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
