package router

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// The edge: a router holds one connection (a leg) to a room's owner however many of its clients
// are in the room, and fans the room's frames out to them itself (see protocol.EdgePath for the
// leg's frames). The owner writes each room frame once per router; the router turns each into
// one prepared message, encoded once for all its clients, and queues it to each client's writer,
// which writes what is queued in one batch, as the owner's writers do. A client's own frames
// (welcome, acks, errors, replay) come tagged with its handle and go to it alone.
//
// Moves stay invisible: when the leg ends because the room moved (4001) or its owner went away
// (1001, or the connection broke), the leg's reader re-attaches it at the room's owner with the
// leg's since/epoch (the owner replays what the leg missed, to every client), joins its clients
// again without a welcome, and re-sends each client's unanswered publishes by the rules of
// pending.settle. No client sees a close, a hole or a duplicate.

// leg is one router's connection to a room's owner and the clients it carries.
type leg struct {
	rt   *Router
	room string

	ready   chan struct{} // closed once the first dial is done: ws set, or refusal/err
	refusal *refusal      // the owner refused the first dial
	err     error         // the first dial failed

	mu      sync.Mutex // guards clients, next, ended and owner
	clients map[uint32]*edgeClient
	next    uint32
	ended   bool   // ended for good: takes no client
	owner   string // the node the leg is on

	// wmu serializes writes to the owner and guards ws; the reader holds it while it re-attaches.
	// pmu guards every client's pending publishes; it is taken after wmu, and alone to take an
	// answer, so the reader never waits for a write to the owner.
	wmu sync.Mutex
	pmu sync.Mutex
	ws  *websocket.Conn
	// up is ws once it serves, nil while the reader re-attaches: drop cuts it without waiting
	// for a write to the owner to end.
	up atomic.Pointer[websocket.Conn]

	// The reader's alone.
	epoch   string
	lastSeq uint64
	seen    atomic.Uint64 // lastSeq, for the clients' readers (what a kept publish was sent after)
}

// refusal is an owner's answer to a leg's dial that is not an upgrade, passed on to the clients
// that waited for it.
type refusal struct {
	status int
	header http.Header
	body   []byte
}

func (f *refusal) write(w http.ResponseWriter) {
	for _, k := range []string{"Content-Type", "Retry-After"} {
		if v := f.header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(f.status)
	_, _ = w.Write(f.body)
}

func (l *leg) logger() *slog.Logger { return l.rt.log.With("room", l.room) }

// legFor is the router's leg for room, dialed to o now if there is none. A leg being dialed is
// waited for.
// forwarded is the X-Forwarded-For of the client the dial is for: the owner counts a room the
// leg creates against that address.
func (rt *Router) legFor(ctx context.Context, room string, o ring.Member, forwarded string) (*leg, error) {
	for {
		rt.mu.Lock()
		if rt.closed {
			rt.mu.Unlock()
			return nil, errClosed
		}
		l := rt.legs[room]
		made := l == nil
		if made {
			l = &leg{rt: rt, room: room, ready: make(chan struct{}), clients: map[uint32]*edgeClient{}}
			rt.legs[room] = l
			rt.handlers.Add(1) // the leg's reader, once it runs; Done if the dial fails
		}
		rt.mu.Unlock()
		if made {
			l.dialFirst(ctx, o, forwarded)
		}
		select {
		case <-l.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if l.refusal != nil || l.err != nil {
			return l, nil
		}
		l.mu.Lock()
		ended := l.ended
		l.mu.Unlock()
		if !ended {
			return l, nil
		}
		// It ended meanwhile (its last client left): make another.
	}
}

// dialFirst dials the leg's first connection and starts its reader.
func (l *leg) dialFirst(ctx context.Context, o ring.Member, forwarded string) {
	rt := l.rt
	defer close(l.ready)
	dctx, cancel := context.WithTimeout(ctx, rt.cfg.DialTimeout)
	ws, w, resp, err := rt.dialLeg(dctx, o, l.room, url.Values{}, forwarded)
	cancel()
	if err != nil {
		rt.mu.Lock()
		if rt.legs[l.room] == l {
			delete(rt.legs, l.room)
		}
		rt.mu.Unlock()
		rt.handlers.Done()
		l.mu.Lock()
		l.ended = true
		l.mu.Unlock()
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			rt.metrics.dials.WithLabelValues("refused").Inc()
			var body []byte
			if resp.Body != nil {
				body, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			}
			l.refusal = &refusal{status: resp.StatusCode, header: resp.Header.Clone(), body: body}
			return
		}
		rt.metrics.dials.WithLabelValues("error").Inc()
		rt.log.Warn("owner unreachable", "room", l.room, "peer", o.ID, "err", err)
		l.err = err
		return
	}
	rt.metrics.dials.WithLabelValues("ok").Inc()
	rt.metrics.legs.WithLabelValues("opened").Inc()
	l.ws, l.epoch, l.lastSeq, l.owner = ws, w.Epoch, w.Seq, w.Node
	l.up.Store(ws)
	l.seen.Store(w.Seq)
	go func() {
		defer rt.handlers.Done()
		l.run()
	}()
}

// dialLeg dials room's leg on o with query, following redirects (each signed for its node), and
// reads the leg's welcome.
func (rt *Router) dialLeg(ctx context.Context, o ring.Member, room string, q url.Values, forwarded string) (*websocket.Conn, protocol.Welcome, *http.Response, error) {
	var w protocol.Welcome
	target := o.HTTPURL() + protocol.EdgePath(room)
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	for hops, round := 0, 0; ; hops++ {
		u, err := url.Parse(target)
		if err != nil {
			return nil, w, nil, err
		}
		scheme := "ws"
		if u.Scheme == "https" {
			scheme = "wss"
		}
		h := rt.peers.Stream(u.Host, u.RequestURI())
		if forwarded != "" {
			h.Set("X-Forwarded-For", forwarded)
		}
		ws, resp, err := rt.legDialer.DialContext(ctx, scheme+"://"+u.Host+u.RequestURI(), h)
		if err == nil {
			_ = ws.SetReadDeadline(time.Now().Add(rt.cfg.DialTimeout))
			if err := ws.ReadJSON(&w); err != nil || w.Type != protocol.TypeWelcome {
				ws.Close()
				if err == nil {
					err = errors.New("the owner's leg did not start with a welcome")
				}
				return nil, w, nil, err
			}
			return ws, w, resp, nil
		}
		if resp == nil || resp.StatusCode != http.StatusTemporaryRedirect {
			return nil, w, resp, err
		}
		if hops >= rt.cfg.MaxRedirects {
			round++
			select {
			case <-ctx.Done():
				return nil, w, nil, fmt.Errorf("more than %d redirects while the ring converges: %w", rt.cfg.MaxRedirects, err)
			case <-time.After(min(25*time.Millisecond*time.Duration(round), 500*time.Millisecond)):
			}
			target = o.HTTPURL() + protocol.EdgePath(room)
			if len(q) > 0 {
				target += "?" + q.Encode()
			}
			hops = -1
			continue
		}
		rt.metrics.dials.WithLabelValues("redirect").Inc()
		target = resp.Header.Get("Location") // a node's redirect keeps the query
		if lu, err := url.Parse(target); err == nil && lu.Host == "" {
			target = u.Scheme + "://" + u.Host + target
		}
	}
}

// add registers c on the leg and asks the owner to join it; false if the leg has ended.
func (l *leg) add(c *edgeClient) bool {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return false
	}
	l.next++
	c.h = l.next
	c.join.Handle = c.h
	l.clients[c.h] = c
	l.mu.Unlock()
	l.wmu.Lock()
	if l.ws != nil {
		l.writeOp(c.join)
	}
	l.wmu.Unlock()
	return true
}

// remove takes c off the leg and tells the owner (unless it ended c itself); a leg with no client
// left ends.
func (l *leg) remove(c *edgeClient, tell bool) {
	l.mu.Lock()
	if l.clients[c.h] != c {
		l.mu.Unlock()
		return
	}
	delete(l.clients, c.h)
	last := len(l.clients) == 0
	if last {
		l.ended = true
	}
	l.mu.Unlock()
	if last {
		l.rt.mu.Lock()
		if l.rt.legs[l.room] == l {
			delete(l.rt.legs, l.room)
		}
		l.rt.mu.Unlock()
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.forgetPending(c)
	if l.ws == nil {
		return
	}
	if tell {
		l.writeOp(protocol.EdgeOp{Op: protocol.EdgeLeave, Handle: c.h})
	}
	if last {
		closeWith(l.ws, websocket.CloseNormalClosure, "no client left")
		_ = l.ws.SetReadDeadline(time.Now().Add(time.Second))
	}
}

// writeOp sends op to the owner. A failed write ends the connection: the reader re-attaches.
// l.wmu is held.
func (l *leg) writeOp(op protocol.EdgeOp) {
	b, _ := json.Marshal(op)
	_ = l.ws.SetWriteDeadline(time.Now().Add(l.rt.cfg.WriteTimeout))
	if err := l.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		_ = l.ws.NetConn().Close()
	}
}

// publish records a client's frame as pending and sends it to the owner; a frame the router
// cannot keep is refused with the frame returned.
func (l *leg) publish(c *edgeClient, mt int, msg []byte) *protocol.ErrorFrame {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.pmu.Lock()
	refused := c.kept.keep(l.rt, l.seen.Load(), mt, msg)
	l.pmu.Unlock()
	if refused != nil {
		return refused
	}
	if l.ws == nil {
		return nil // re-attaching: re-sent with the others
	}
	kind := protocol.EdgeText
	if mt == websocket.BinaryMessage {
		kind = protocol.EdgeBinary
	}
	if err := l.writeClientFrame(l.ws, kind, c.h, msg); err != nil {
		l.logger().Debug("writing to the room's owner failed; re-attaching", "err", err)
		_ = l.ws.NetConn().Close()
		return nil
	}
	l.rt.metrics.frames.WithLabelValues("up").Inc()
	l.rt.metrics.bytes.WithLabelValues("up").Add(float64(len(msg)))
	return nil
}

func (l *leg) writeClientFrame(ws *websocket.Conn, kind byte, h uint32, msg []byte) error {
	_ = ws.SetWriteDeadline(time.Now().Add(l.rt.cfg.WriteTimeout))
	w, err := ws.NextWriter(websocket.BinaryMessage)
	if err != nil {
		return err
	}
	var hdr [protocol.EdgeHeader]byte
	_, _ = w.Write(protocol.AppendEdgeHeader(hdr[:0], kind, h))
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return w.Close()
}

// forgetPending lets go of c's kept publishes.
func (l *leg) forgetPending(c *edgeClient) {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	c.kept.forget(l.rt.budget)
}

// run reads the leg until it ends for good, re-attaching it after a move or an owner's loss.
func (l *leg) run() {
	readWait := l.rt.cfg.PingInterval * 5 / 2
	ping := time.NewTicker(l.rt.cfg.PingInterval)
	defer ping.Stop()
	pings := make(chan struct{})
	var pinger sync.WaitGroup
	pinger.Go(func() {
		for {
			select {
			case <-pings:
				return
			case <-ping.C:
				l.wmu.Lock()
				if l.ws != nil {
					_ = l.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(l.rt.cfg.WriteTimeout))
				}
				l.wmu.Unlock()
			}
		}
	})
	defer func() { close(pings); pinger.Wait() }()
	for {
		ws := l.ws
		keepAlive(ws, readWait, l.rt.cfg.WriteTimeout)
		err := l.read(ws, readWait)
		l.mu.Lock()
		ended, left := l.ended, len(l.clients)
		l.mu.Unlock()
		if ended || left == 0 || l.rt.isClosed() {
			l.end(err)
			return
		}
		if !l.shouldReattach(err) || !l.reattach(err) {
			l.end(err)
			return
		}
	}
}

// read forwards the leg's frames until it fails.
func (l *leg) read(ws *websocket.Conn, readWait time.Duration) error {
	down, downBytes := l.rt.metrics.frames.WithLabelValues("down"), l.rt.metrics.bytes.WithLabelValues("down")
	for {
		mt, msg, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		_ = ws.SetReadDeadline(time.Now().Add(readWait))
		down.Inc()
		downBytes.Add(float64(len(msg)))
		if mt == websocket.TextMessage {
			l.roomText(msg)
			l.seen.Store(l.lastSeq)
			continue
		}
		kind, h, rest, err := protocol.ParseEdge(msg)
		if err != nil {
			continue
		}
		switch kind {
		case protocol.EdgeRoom:
			if len(rest) >= 8 {
				l.lastSeq = binary.BigEndian.Uint64(rest)
				l.seen.Store(l.lastSeq)
			}
			l.fanout(websocket.BinaryMessage, rest, false)
		case protocol.EdgeText, protocol.EdgeBinary:
			l.mu.Lock()
			c := l.clients[h]
			l.mu.Unlock()
			if c == nil {
				continue
			}
			if kind == protocol.EdgeBinary { // a binary message of its replay
				if len(rest) >= 8 {
					c.pos = binary.BigEndian.Uint64(rest)
				}
				c.send(edgeFrame{mt: websocket.BinaryMessage, data: rest})
				continue
			}
			if l.own(c, rest) {
				c.send(edgeFrame{mt: websocket.TextMessage, data: rest})
			}
		case protocol.EdgeClose:
			l.mu.Lock()
			c := l.clients[h]
			l.mu.Unlock()
			if c == nil || len(rest) < 2 {
				continue
			}
			code := int(binary.BigEndian.Uint16(rest))
			l.remove(c, false)
			c.closeWith(code, string(rest[2:]))
		}
	}
}

// roomText follows a text frame of the room's (a message, presence, or the leg's reset or gap)
// and passes it on to every client in the room (presence: to those that asked for it).
func (l *leg) roomText(msg []byte) {
	if rest, ok := bytes.CutPrefix(msg, messagePrefix); ok {
		end := bytes.IndexByte(rest, ',')
		if seq, err := strconv.ParseUint(string(rest[:max(end, 0)]), 10, 64); err == nil {
			l.lastSeq = seq
		}
		l.fanout(websocket.TextMessage, msg, false)
		return
	}
	var f protocol.Incoming
	if json.Unmarshal(msg, &f) != nil {
		return
	}
	switch f.Type {
	case protocol.TypePresence:
		l.fanout(websocket.TextMessage, msg, true)
		return
	case protocol.TypeWelcome:
		return // the leg's own: read by the dial
	case protocol.TypeReset:
		l.epoch, l.lastSeq = f.Epoch, 0 // the owner replays the new epoch's history next
	case protocol.TypeGap:
		l.lastSeq = f.To
	}
	l.fanout(websocket.TextMessage, msg, false)
}

// own follows a frame for client c alone and reports whether to pass it on.
func (l *leg) own(c *edgeClient, msg []byte) bool {
	var f protocol.Incoming
	if json.Unmarshal(msg, &f) != nil {
		return true
	}
	switch f.Type {
	case protocol.TypeWelcome:
		again := c.welcomed
		if !again {
			// Where its own replay starts: the resume it asked for, or nowhere (no resume).
			j := c.join
			switch {
			case !j.HasSince && j.Epoch == "":
				c.pos = f.Seq
			case (j.Epoch != "" && j.Epoch != f.Epoch) || j.Since > f.Seq:
				c.pos = 0 // a reset comes next
			default:
				c.pos = j.Since
			}
		}
		c.welcomed, c.wseq, c.wepoch = true, f.Seq, f.Epoch
		l.mu.Lock()
		c.joined, c.client = true, f.Client
		l.mu.Unlock()
		return !again // the client has its welcome: this one ends a re-join (see adopt)
	case protocol.TypeMessage: // of its replay
		c.pos = f.Seq
	case protocol.TypeGap:
		c.pos = f.To
	case protocol.TypeReset:
		c.pos = 0
	case protocol.TypeAck:
		l.answered(c, f.ID, false)
	case protocol.TypeError:
		return !l.answered(c, f.ID, f.Code == protocol.CodeMoved)
	}
	return true
}

// answered takes the owner's answer to c's kept frame (see pending.answered).
func (l *leg) answered(c *edgeClient, id string, moved bool) bool {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	return c.kept.answered(l.rt.budget, id, moved)
}

// fanout queues one room frame, encoded once, to every client in the room.
func (l *leg) fanout(mt int, msg []byte, presence bool) {
	pm, err := websocket.NewPreparedMessage(mt, msg)
	if err != nil {
		return
	}
	f := edgeFrame{pm: pm, size: len(msg)}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.clients {
		if c.joined && (!presence || c.presence) {
			c.send(f)
		}
	}
}

// shouldReattach: the leg ended in a way another owner (or the same one) can take over from.
func (l *leg) shouldReattach(err error) bool {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case protocol.CloseMoved, websocket.CloseGoingAway, websocket.CloseAbnormalClosure, websocket.CloseServiceRestart,
			websocket.CloseTryAgainLater, protocol.CloseSlowConsumer:
			return true
		}
		return false
	}
	return true // the connection broke: the owner may have crashed
}

// reattach dials the room's owner again (the one a 4001 names, else the current one by this
// router's ring) with the leg's since/epoch, joins its clients there and re-sends what they had
// pending. It keeps trying for RedialTimeout.
func (l *leg) reattach(cause error) bool {
	rt := l.rt
	l.wmu.Lock()
	defer l.wmu.Unlock()
	old := l.ws
	l.ws = nil
	l.up.Store(nil)
	start := time.Now()
	var moved protocol.MovedReason
	var ce *websocket.CloseError
	if errors.As(cause, &ce) && ce.Code == protocol.CloseMoved {
		_ = json.Unmarshal([]byte(ce.Text), &moved)
	}
	// As in session.redial: what an owner that closed the leg with a close frame left
	// unanswered, it did not take.
	closed := ce != nil && (ce.Code == protocol.CloseMoved || ce.Code == websocket.CloseGoingAway)
	q := url.Values{}
	q.Set("since", strconv.FormatUint(l.lastSeq, 10))
	q.Set("epoch", l.epoch)
	ctx, cancel := context.WithTimeout(context.Background(), rt.cfg.RedialTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		var target ring.Member
		ok := false
		if m, found := rt.ring.Placement().Member(moved.Node); found && attempt == 0 && m.Edge {
			target, ok = m, true
		} else if o, found := rt.ring.Placement().Owner(l.room); found && o.Edge {
			target, ok = o, true
		}
		if ok {
			dctx, dcancel := context.WithTimeout(ctx, rt.cfg.DialTimeout)
			ws, w, _, err := rt.dialLeg(dctx, target, l.room, q, "")
			dcancel()
			if err == nil {
				if err = l.adopt(ws, w, closed); err == nil {
					l.up.Store(ws)
					old.Close()
					rt.metrics.redials.WithLabelValues("ok").Inc()
					l.logger().Debug("re-attached the leg at the room's owner", "cause", cause, "since", q.Get("since"), "took", time.Since(start))
					return true
				}
				closed = false // that leg may have taken some of what it was sent
			}
		}
		if rt.isClosed() {
			old.Close()
			return false
		}
		select {
		case <-ctx.Done():
			rt.metrics.redials.WithLabelValues("failed").Inc()
			l.logger().Warn("could not re-attach the leg at the room's owner; closing its clients", "cause", cause, "took", time.Since(start))
			old.Close()
			return false
		case <-time.After(min(50*time.Millisecond<<min(attempt, 5), time.Second)):
		}
	}
}

// adopt makes ws, welcomed with w, the leg's connection: it joins every client again (those
// already in the room without a welcome, the others as they first asked) and re-sends their
// pending frames that settle says are safe to; the rest are answered `owner_unavailable`. l.wmu
// is held.
func (l *leg) adopt(ws *websocket.Conn, w protocol.Welcome, closed bool) error {
	l.mu.Lock()
	clients := make([]*edgeClient, 0, len(l.clients))
	for _, c := range l.clients {
		clients = append(clients, c)
	}
	l.owner = w.Node
	l.mu.Unlock()
	sameEpoch := w.Epoch == l.epoch
	l.ws = ws
	for _, c := range clients {
		l.mu.Lock()
		op, joined := c.join, c.joined
		switch {
		case joined && c.pos < c.wseq:
			// Welcomed, but the leg broke before its own replay was all through (it ends at its
			// welcome's seq, and the room's frames come after it): it joins again from where
			// its replay got to, and takes the room's frames once the new welcome (swallowed)
			// says its replay is queued.
			op = protocol.EdgeOp{Op: protocol.EdgeJoin, Handle: c.h, Client: c.client, Presence: c.presence, Token: c.join.Token,
				Since: c.pos, HasSince: true, Epoch: c.wepoch}
			c.joined = false
		case joined:
			op = protocol.EdgeOp{Op: protocol.EdgeJoin, Handle: c.h, Client: c.client, Presence: c.presence, Token: c.join.Token, Rejoin: true}
		}
		l.mu.Unlock()
		b, _ := json.Marshal(op)
		_ = ws.SetWriteDeadline(time.Now().Add(l.rt.cfg.WriteTimeout))
		if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
			l.ws = nil
			ws.Close()
			return err
		}
		l.pmu.Lock()
		resend, unsure := c.kept.settle(closed, sameEpoch, w.Seq, l.rt.cfg.DedupeIDs)
		for _, p := range resend {
			kind := protocol.EdgeText
			if p.binary {
				kind = protocol.EdgeBinary
			}
			if err := l.writeClientFrame(ws, kind, c.h, p.frame); err != nil {
				l.pmu.Unlock()
				l.ws = nil
				ws.Close()
				return err
			}
		}
		c.kept.settled(l.rt.budget, resend, unsure)
		for _, p := range unsure {
			c.tellUnsure(p)
		}
		l.pmu.Unlock()
	}
	l.epoch = w.Epoch
	if !sameEpoch {
		// The owner sends a reset and the new epoch's history next; lastSeq follows it.
		l.lastSeq = 0
		l.seen.Store(0)
	}
	return nil
}

// end closes every client of a leg that ended for good with the leg's close (1001 by default).
func (l *leg) end(err error) {
	l.mu.Lock()
	l.ended = true
	clients := l.clients
	l.clients = map[uint32]*edgeClient{}
	l.mu.Unlock()
	l.rt.mu.Lock()
	if l.rt.legs[l.room] == l {
		delete(l.rt.legs, l.room)
	}
	l.rt.mu.Unlock()
	code, text := closeOf(err, "the room's owner went away")
	if code == protocol.CloseMoved || code == websocket.CloseNormalClosure {
		code, text = websocket.CloseGoingAway, "the room's owner went away"
	}
	if l.rt.isClosed() {
		code, text = websocket.CloseGoingAway, "router shutting down"
	}
	for _, c := range clients {
		c.closeWith(code, text)
	}
	l.wmu.Lock()
	for _, c := range clients {
		l.forgetPending(c)
	}
	if l.ws != nil {
		l.ws.Close()
	}
	l.wmu.Unlock()
	l.rt.metrics.legs.WithLabelValues("closed").Inc()
}

// shutdown closes the leg and its clients with 1001 (router Close).
func (l *leg) shutdown() {
	l.mu.Lock()
	l.ended = true
	clients := make([]*edgeClient, 0, len(l.clients))
	for _, c := range l.clients {
		clients = append(clients, c)
	}
	l.mu.Unlock()
	for _, c := range clients {
		c.closeWith(websocket.CloseGoingAway, "router shutting down")
	}
	l.wmu.Lock()
	if l.ws != nil {
		closeWith(l.ws, websocket.CloseGoingAway, "client's router shutting down")
		_ = l.ws.SetReadDeadline(time.Now().Add(time.Second))
	}
	l.wmu.Unlock()
}

// drop cuts the leg's connection, so its reader re-attaches it (its owner was declared dead).
func (l *leg) drop() {
	if ws := l.up.Load(); ws != nil { // nil: re-attaching already
		_ = ws.NetConn().Close()
	}
}

// ownerGone is session.ownerGone for a leg.
func (l *leg) ownerGone(p *ring.Placement) bool {
	l.mu.Lock()
	id := l.owner
	l.mu.Unlock()
	if id == "" {
		return false
	}
	if m, ok := p.Member(id); ok && m.Live() {
		return false
	}
	o, ok := p.Owner(l.room)
	return ok && o.ID != id
}

func closeWith(c *websocket.Conn, code int, text string) {
	msg := websocket.FormatCloseMessage(code, protocol.CloseReason(text))
	_ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
}
