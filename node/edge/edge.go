// Package edge is the owner's side of routers' edge legs: one WebSocket per router and room over
// which the owner sends each room frame once, and the router joins, leaves and publishes for
// each of its clients in the room (see protocol.EdgePath for the frames, and node/room's
// edge.go for how a leg and its clients are in a room). Everything a client behind a leg is
// told — welcome, resume, acks, errors, refusals — is what it would be told connected directly.
package edge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
	"golang.org/x/time/rate"
)

// Config is what legs need from their node.
type Config struct {
	Auth         *auth.Verifier // nil: no client auth
	PublishRate  float64        // per client, as on a direct connection
	PublishBurst int
	MaxFrame     int64 // a client frame's largest size (the router closes a larger one with 1009)
	PingInterval time.Duration
	Gate         room.Gate
	// Owner is the room's owner by the node's ring, named when a leg is sent on its way.
	Owner    func(room string) ring.Member
	Refused  *prometheus.CounterVec // by reason
	Connects prometheus.Counter     // clients joined through a leg, as connections accepted
	Drops    *prometheus.CounterVec // by reason
	Log      *slog.Logger
}

// Server counts and serves a node's legs.
type Server struct {
	cfg  Config
	legs atomic.Int64
	vias atomic.Int64
}

// New makes a server of legs.
func New(cfg Config) *Server { return &Server{cfg: cfg} }

// Legs is how many legs are open.
func (s *Server) Legs() int { return int(s.legs.Load()) }

// Clients is how many routers' clients the open legs carry.
func (s *Server) Clients() int { return int(s.vias.Load()) }

// via is one router client on a leg, as the leg's reader sees it.
type via struct {
	conn     *room.Conn
	readOnly bool
	publish  *rate.Limiter
	expiry   *time.Timer
	expired  atomic.Bool
}

// leg is one open leg.
type leg struct {
	s    *Server
	ws   *websocket.Conn
	conn *room.Conn
	room *room.Room
	log  *slog.Logger

	mu   sync.Mutex // guards vias against expiry timers
	vias map[uint32]*via
}

// Serve reads the leg ws, joined to rm as conn (room.NewLeg, Room.JoinLeg), until it ends; then
// the leg and every client on it leave the room. ctx bounds publishes' waits (the node's life).
func (s *Server) Serve(ctx context.Context, ws *websocket.Conn, conn *room.Conn, rm *room.Room) {
	s.legs.Add(1)
	defer s.legs.Add(-1)
	l := &leg{s: s, ws: ws, conn: conn, room: rm, vias: map[uint32]*via{}, log: s.cfg.Log.With("room", rm.Name())}
	defer func() {
		l.mu.Lock()
		for _, v := range l.vias {
			if v.expiry != nil {
				v.expiry.Stop()
			}
		}
		s.vias.Add(-int64(len(l.vias)))
		l.vias = nil
		l.mu.Unlock()
		rm.Leave(conn) // its clients with it
		conn.End()
	}()
	readWait := s.cfg.PingInterval * 5 / 2
	ws.SetReadLimit(s.cfg.MaxFrame + protocol.EdgeHeader)
	_ = ws.SetReadDeadline(time.Now().Add(readWait))
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(readWait)) })
	for {
		mt, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if conn.Closing() {
			continue // sent on its way: nothing more is taken; its router re-sends elsewhere
		}
		_ = ws.SetReadDeadline(time.Now().Add(readWait))
		switch mt {
		case websocket.TextMessage:
			var op protocol.EdgeOp
			if json.Unmarshal(data, &op) != nil {
				l.log.Warn("edge leg sent a frame that is not an op; closing it")
				return
			}
			switch op.Op {
			case protocol.EdgeJoin:
				l.join(ctx, op)
			case protocol.EdgeLeave:
				l.leave(op.Handle)
			}
		case websocket.BinaryMessage:
			kind, h, frame, err := protocol.ParseEdge(data)
			if err != nil {
				return
			}
			l.mu.Lock()
			v := l.vias[h]
			l.mu.Unlock()
			if v == nil || v.expired.Load() {
				continue // left, refused, or its token expired: nothing more is taken from it
			}
			switch kind {
			case protocol.EdgeText:
				l.text(ctx, v, frame)
			case protocol.EdgeBinary:
				l.binary(ctx, v, frame)
			}
		}
	}
}

// join joins a router's client to the room through this leg, or refuses it as a direct connect
// would be: a bad token 4401, a room not in it 4403, a full room 1013.
func (l *leg) join(ctx context.Context, op protocol.EdgeOp) {
	l.mu.Lock()
	_, dup := l.vias[op.Handle]
	l.mu.Unlock()
	if dup {
		return
	}
	client, readOnly := op.Client, false
	if len(client) > 128 || !utf8.ValidString(client) || strings.ContainsFunc(client, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		client = "" // the router checks the client's query; a bad one here gets an id of its own
	}
	var claims *auth.Claims
	if l.s.cfg.Auth != nil {
		var err error
		claims, err = l.s.cfg.Auth.Check(op.Token, l.room.Name(), false)
		if err != nil {
			closeCode, _, code := auth.Refusal(err)
			l.s.cfg.Refused.WithLabelValues(code).Inc()
			room.NewVia(l.conn, "", op.Handle, false).CloseVia(closeCode, err.Error())
			return
		}
		client, readOnly = claims.Subject, !claims.Pub
	}
	if client == "" {
		client = newClientID()
	}
	c := room.NewVia(l.conn, client, op.Handle, op.Presence)
	res := room.Resume{Since: op.Since, HasSince: op.HasSince, Epoch: op.Epoch, Rejoin: op.Rejoin}
	for attempt := 0; ; attempt++ {
		err := l.room.Join(c, res)
		if err == nil {
			break
		}
		if errors.Is(err, room.ErrStale) && attempt <= 3 && l.s.cfg.Gate.AwaitFresh(ctx) == nil {
			continue
		}
		if errors.Is(err, room.ErrFull) {
			l.s.cfg.Refused.WithLabelValues("room_full").Inc()
			c.CloseVia(websocket.CloseTryAgainLater, "room full (--max-room-conns); try again later")
			return
		}
		// Closed under the leg (moved, reclaimed, the leg dropped): the leg's own farewell tells
		// the router, which joins the client again where the room is.
		return
	}
	v := &via{conn: c, readOnly: readOnly, publish: rate.NewLimiter(rate.Limit(l.s.cfg.PublishRate), l.s.cfg.PublishBurst)}
	if claims != nil && claims.ExpiresAt != nil {
		v.expiry = time.AfterFunc(time.Until(claims.ExpiresAt.Add(auth.Leeway)), func() { l.expire(op.Handle, v) })
	}
	l.mu.Lock()
	l.vias[op.Handle] = v
	l.mu.Unlock()
	l.s.vias.Add(1)
	if l.s.cfg.Connects != nil {
		l.s.cfg.Connects.Inc()
	}
}

// expire ends a client whose token has expired with 4401, as a direct connection is ended.
func (l *leg) expire(h uint32, v *via) {
	v.expired.Store(true)
	l.s.cfg.Drops.WithLabelValues("token_expired").Inc()
	v.conn.CloseVia(protocol.CloseUnauthorized, "unauthorized: the token has expired; reconnect with a fresh one")
	l.room.Leave(v.conn)
	l.mu.Lock()
	if l.vias != nil && l.vias[h] == v {
		delete(l.vias, h)
		l.s.vias.Add(-1)
	}
	l.mu.Unlock()
}

// leave takes a router's client out of the room: it closed, or its router dropped it.
func (l *leg) leave(h uint32) {
	l.mu.Lock()
	v := l.vias[h]
	if v != nil {
		delete(l.vias, h)
		l.s.vias.Add(-1)
	}
	l.mu.Unlock()
	if v == nil {
		return
	}
	if v.expiry != nil {
		v.expiry.Stop()
	}
	l.room.Leave(v.conn)
}

// text handles one client text frame, as a direct connection's reader does.
func (l *leg) text(ctx context.Context, v *via, data []byte) {
	p, bad := protocol.ParsePublish(data)
	switch {
	case bad != nil:
		l.s.cfg.Refused.WithLabelValues(bad.Code).Inc()
		v.conn.SendJSON(*bad)
	case v.readOnly:
		l.refuseReadOnly(v, p.ID)
	case !l.allow(v, p.ID):
	default:
		if err := l.room.Publish(ctx, v.conn, p.ID, p.Data); err != nil {
			l.refuseMoved(v, p.ID, "the room is moving; publish again with the same id after reconnecting")
		}
	}
}

// binary handles one client binary frame: a binary publish.
func (l *leg) binary(ctx context.Context, v *via, data []byte) {
	if v.readOnly {
		l.refuseReadOnly(v, "")
		return
	}
	if !l.allow(v, "") {
		return
	}
	frame := make([]byte, 8+len(data))
	copy(frame[8:], data)
	if _, err := l.room.PublishBinary(ctx, v.conn, frame); err != nil {
		l.refuseMoved(v, "", "the room is moving; publish again after reconnecting")
	}
}

// refuseMoved answers a publish the room refused as moving, then sends the whole leg on its way
// with 4001: its router re-attaches it where the room is and re-sends what was refused.
func (l *leg) refuseMoved(v *via, id, why string) {
	v.conn.SendJSON(protocol.ErrorFrame{Type: protocol.TypeError, Code: protocol.CodeMoved, ID: id, Error: why})
	l.room.Evict(l.conn, room.Moved(l.s.cfg.Owner(l.room.Name()), true))
}

func (l *leg) refuseReadOnly(v *via, id string) {
	l.s.cfg.Refused.WithLabelValues("read_only").Inc()
	v.conn.SendJSON(protocol.ErrorFrame{Type: protocol.TypeError, Code: protocol.CodeForbidden, ID: id,
		Error: "this connection's token is read-only (no pub claim); the publish was not delivered"})
}

func (l *leg) allow(v *via, id string) bool {
	if v.publish.Allow() {
		return true
	}
	l.s.cfg.Refused.WithLabelValues("rate_limited").Inc()
	v.conn.SendJSON(protocol.ErrorFrame{Type: protocol.TypeError, Code: protocol.CodeRateLimited, ID: id,
		Error: "publishing faster than this node allows (--publish-rate); the publish was not delivered, send it again later"})
	return false
}

func newClientID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "c-" + hex.EncodeToString(b[:])
}
