package router

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/batch"
	"github.com/roost-dev/roost/internal/httpapi"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// session is one proxied connection: the client leg, the owner leg and a pump per direction.
// The up pump's goroutine owns the session: it starts the down pump, keeps both legs alive with
// a ping timer and waits for the down pump before it returns.
//
// Migration: when the owner leg ends because the room moved (4001) or the owner went away
// (1001, or the connection broke), the down pump re-dials the room's owner with since/epoch/
// client and carries on, so the client sees the frames continue with no close, hole or
// duplicate. To resume exactly, the session follows what it forwards: the client id and epoch
// (welcome, reset) and the last seq (messages, gap). The new owner's welcome is swallowed. The
// client's publishes that have no answer yet are kept and re-sent on the new leg when that
// cannot double them (see pending.settle); the owner acks a repeated id once and delivers it once.
type session struct {
	rt     *Router
	room   string
	query  url.Values  // the client's query, for re-dials
	header http.Header // what the owner is told of the client

	mu       sync.Mutex // guards client, stopping, ping and ended
	client   *websocket.Conn
	stopping bool
	ping     *time.Timer    // pings both legs every PingInterval
	ended    bool           // the session is over: no more pings
	pinging  sync.WaitGroup // the ping timer's callback, while it runs

	upMu         sync.Mutex // guards up and kept; held while writing upstream and while re-dialing
	up           *websocket.Conn
	owner        atomic.Pointer[string] // the node the owner leg is on, once welcomed
	kept         pending                // the client's unanswered publishes, oldest first
	seen         atomic.Uint64          // lastSeq, for the up pump
	clientWrites sync.Mutex             // the down pump's writes to the client, and the up pump's refusals

	// Down pump only.
	out      *batch.Conn     // the client leg's connection, nil if it does not batch
	hooked   *websocket.Conn // the owner leg whose reads end out's batches
	welcomed bool
	clientID string
	epoch    string
	lastSeq  uint64
	unsure   []pendingPublish // dropped by the last re-dial as not safe to re-send: the client is told
}

// pumpEnd says how a pump ended: an error reading its source, or writing its destination.
type pumpEnd struct {
	err  error
	read bool
}

// logger is the router's logger with the room: made when a line is logged, as an idle
// session logs nothing and a logger per session costs a handler clone.
func (s *session) logger() *slog.Logger { return s.rt.log.With("room", s.room) }

func (s *session) attach(c *websocket.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client = c
	s.out = batch.Of(c.NetConn()) // before the down pump starts, which alone uses it after
	return !s.stopping
}

// stop marks the session as ending, so the down pump does not re-dial.
func (s *session) stop() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
}

func (s *session) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

func (s *session) upstream() *websocket.Conn {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	return s.up
}

// shutdown closes both legs with 1001 (router Close).
func (s *session) shutdown() {
	s.mu.Lock()
	s.stopping = true
	client := s.client
	s.mu.Unlock()
	if client == nil {
		return
	}
	up := s.upstream()
	httpapi.CloseWith(client, websocket.CloseGoingAway, "router shutting down")
	httpapi.CloseWith(up, websocket.CloseGoingAway, "client's router shutting down")
	grace := time.Now().Add(time.Second)
	_ = client.SetReadDeadline(grace)
	_ = up.SetReadDeadline(grace)
}

// run serves the session to its end, on a goroutine of its own (the handler has returned): it
// pumps the client's frames up itself and the owner's down on a second goroutine.
func (s *session) run() {
	cfg := s.rt.cfg
	readWait := cfg.PingInterval * 5 / 2
	keepAlive(s.client, readWait, cfg.WriteTimeout)
	keepAlive(s.up, readWait, cfg.WriteTimeout)
	s.client.SetReadLimit(cfg.MaxFrame)
	down := make(chan struct{})
	go func() {
		defer close(down)
		s.downEnded(s.pumpDown(readWait))
	}()
	s.mu.Lock()
	s.ping = time.AfterFunc(cfg.PingInterval, s.pingBoth)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.ended = true
		s.ping.Stop()
		s.mu.Unlock()
		s.pinging.Wait()
		s.client.Close()
		s.upstream().Close()
		s.forgetPending()
	}()

	end := s.pumpUp(readWait)
	select {
	case <-down: // the down pump ended first and closed the client leg, which ended this one
		return
	default:
	}
	// The client closed or vanished: tell the owner, and give the down pump a moment to see the
	// close handshake end before cutting the owner leg.
	s.stop() // no re-dial for a client that left
	code, text := closeOf(end.err, "client went away")
	tooBig := errors.Is(end.err, websocket.ErrReadLimit)
	if tooBig {
		code, text = websocket.CloseGoingAway, "client sent a frame over the limit"
	}
	httpapi.CloseWith(s.upstream(), code, text)
	if tooBig {
		protocol.CloseGently(s.client.NetConn(), time.Second) // gorilla sent the 1009
	}
	select {
	case <-down:
	case <-time.After(time.Second):
		s.client.Close()
		s.upstream().Close()
		<-down
	}
}

// downEnded tells the client why the owner leg ended for good, or the owner that the client
// is gone, and makes sure the up pump's read ends within a second.
func (s *session) downEnded(end pumpEnd) {
	if end.read { // the owner is gone for good: tell the client why
		code, text := closeOf(end.err, "the room's owner went away")
		httpapi.CloseWith(s.client, code, text)
		s.logger().Debug("owner closed a proxied connection", "code", code)
	} else { // writing to the client failed: the client is gone
		s.stop()
		httpapi.CloseWith(s.upstream(), websocket.CloseGoingAway, "client went away")
	}
	_ = s.client.SetReadDeadline(time.Now().Add(time.Second))
}

// pingBoth is the ping timer's callback: it pings the client and the owner leg. A client that
// cannot take a ping is cut, which ends the session.
func (s *session) pingBoth() {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.pinging.Add(1)
	s.ping.Reset(s.rt.cfg.PingInterval)
	s.mu.Unlock()
	defer s.pinging.Done()
	deadline := time.Now().Add(s.rt.cfg.WriteTimeout)
	if s.client.WriteControl(websocket.PingMessage, nil, deadline) != nil {
		s.client.Close()
	}
	_ = s.upstream().WriteControl(websocket.PingMessage, nil, deadline)
}

// buffers hold one message while a pump forwards it; an idle session holds none.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooled: a buffer grown past this by a big message is left to the collector.
const maxPooled = 64 << 10

// readMessage reads one whole message into a pooled buffer; put it back with release once the
// message is forwarded.
func readMessage(c *websocket.Conn) (int, *bytes.Buffer, error) {
	mt, r, err := c.NextReader()
	if err != nil {
		return 0, nil, err
	}
	buf := buffers.Get().(*bytes.Buffer)
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		release(buf)
		return 0, nil, err
	}
	return mt, buf, nil
}

func release(buf *bytes.Buffer) {
	if buf.Cap() <= maxPooled {
		buffers.Put(buf)
	}
}

// pumpDown forwards the owner's frames to the client, re-dialing when the owner leg ends.
func (s *session) pumpDown(readWait time.Duration) pumpEnd {
	frames, bytes := s.rt.metrics.frames.WithLabelValues("down"), s.rt.metrics.bytes.WithLabelValues("down")
	for {
		up := s.upstream()
		if up != s.hooked {
			s.hook(up)
		}
		mt, buf, err := readMessage(up)
		if err != nil {
			if s.shouldRedial(err) && s.redial(err) == nil {
				s.tellUnsure()
				continue
			}
			s.endBatch()
			return pumpEnd{err: err, read: true}
		}
		_ = up.SetReadDeadline(time.Now().Add(readWait))
		msg := buf.Bytes()
		forward := s.observe(mt, msg)
		s.seen.Store(s.lastSeq)
		if !forward {
			release(buf)
			continue
		}
		s.clientWrites.Lock()
		s.out.Begin()
		_ = s.client.SetWriteDeadline(time.Now().Add(s.rt.cfg.WriteTimeout))
		err = s.client.WriteMessage(mt, msg)
		s.clientWrites.Unlock()
		release(buf)
		if err != nil {
			s.endBatch()
			return pumpEnd{err: err}
		}
		frames.Inc()
		bytes.Add(float64(len(msg)))
	}
}

// The owner sends its frames in bursts (one write per wake-up); the down pump passes them on to
// the client the same way: written into a batch, which ends before the pump reads the owner's
// socket again, that is, when gorilla's read buffer holds no more of the burst. (Kept out of
// pumpDown's frame: its goroutine's stack sits just under 4 KiB at its deepest, and one that
// grows to 8 KiB stays so for an idle connection's life.)

// hook makes reads of the owner leg up end the client leg's batch.
func (s *session) hook(up *websocket.Conn) {
	s.hooked = up
	if h := batch.HookOf(up.NetConn()); h != nil && s.out != nil {
		h.Before(s.endBatch)
	}
}

// endBatch sends what the down pump gathered. An error is kept: the next write returns it.
func (s *session) endBatch() { _ = s.out.End() }

// pumpUp forwards the client's frames to the owner, keeping them until they are answered. It
// ends only when the client leg does. A failed write upstream ends the owner leg (a gorilla
// connection takes no write after one fails, while its reads may go on): the down pump then
// re-dials, and the frame, kept, goes to the next leg with the others (see pending.settle), or the
// session ends and the client is closed.
func (s *session) pumpUp(readWait time.Duration) pumpEnd {
	frames, bytes := s.rt.metrics.frames.WithLabelValues("up"), s.rt.metrics.bytes.WithLabelValues("up")
	for {
		mt, buf, err := readMessage(s.client)
		if err != nil {
			return pumpEnd{err: err, read: true}
		}
		_ = s.client.SetReadDeadline(time.Now().Add(readWait))
		msg := buf.Bytes()
		s.upMu.Lock()
		refused := s.kept.keep(s.rt, s.seen.Load(), mt, msg)
		if refused == nil {
			_ = s.up.SetWriteDeadline(time.Now().Add(s.rt.cfg.WriteTimeout))
			if err := s.up.WriteMessage(mt, msg); err == nil {
				frames.Inc()
				bytes.Add(float64(len(msg)))
			} else {
				s.logger().Debug("writing to the room's owner failed; re-dialing", "err", err)
				_ = s.up.NetConn().Close()
			}
		}
		s.upMu.Unlock()
		release(buf)
		if refused != nil {
			s.tell(refused)
		}
	}
}

// tell writes a frame of the router's own to the client (a refusal), between the down pump's.
// A failed write ends the client leg, which the pumps see.
func (s *session) tell(f *protocol.ErrorFrame) {
	b, _ := json.Marshal(f)
	s.clientWrites.Lock()
	defer s.clientWrites.Unlock()
	_ = s.client.SetWriteDeadline(time.Now().Add(s.rt.cfg.WriteTimeout))
	if s.client.WriteMessage(websocket.TextMessage, b) != nil {
		s.client.Close()
	}
}

// forgetPending lets go of the publishes kept for re-sending, when the session ends.
func (s *session) forgetPending() {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	s.kept.forget(s.rt.budget)
}

var (
	messagePrefix = []byte(`{"type":"message","seq":`)
	typePrefix    = []byte(`{"type":"`)
)

// observe follows a frame from the owner and reports whether to forward it to the client. Room
// messages are recognised by the prefix the node writes them with, so the hot path does not
// parse JSON.
func (s *session) observe(mt int, msg []byte) bool {
	if mt == websocket.BinaryMessage {
		if len(msg) >= 8 {
			s.lastSeq = binary.BigEndian.Uint64(msg)
		}
		return true
	}
	if rest, ok := bytes.CutPrefix(msg, messagePrefix); ok {
		end := bytes.IndexByte(rest, ',')
		if seq, err := strconv.ParseUint(string(rest[:max(end, 0)]), 10, 64); err == nil {
			s.lastSeq = seq
		}
		return true
	}
	if !bytes.HasPrefix(msg, typePrefix) {
		return true
	}
	var f protocol.Incoming
	if json.Unmarshal(msg, &f) != nil {
		return true
	}
	switch f.Type {
	case protocol.TypeWelcome:
		if s.welcomed {
			return false // the client has its welcome; this one is from a re-dial
		}
		s.welcomed, s.clientID, s.epoch, s.lastSeq = true, f.Client, f.Epoch, f.Seq
		s.owner.Store(&f.Node)
		if since, err := strconv.ParseUint(s.query.Get("since"), 10, 64); err == nil && since <= f.Seq {
			s.lastSeq = since // a resume: the owner replays from since+1
		}
	case protocol.TypeReset:
		s.epoch, s.lastSeq = f.Epoch, 0 // the owner replays the new epoch's history next
	case protocol.TypeGap:
		s.lastSeq = f.To
	case protocol.TypeAck:
		s.answered(f.ID, false)
	case protocol.TypeError:
		// Refused as moved: it is re-sent on the next leg, so the client is not told. Refused
		// otherwise (rate_limited, forbidden, ...): the owner has answered it, so a move must not
		// re-send it; the client decides whether to try again.
		return !s.answered(f.ID, f.Code == protocol.CodeMoved)
	}
	return true
}

// answered takes the owner's answer to a kept frame (see pending.answered).
func (s *session) answered(id string, moved bool) bool {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	return s.kept.answered(s.rt.budget, id, moved)
}

// shouldRedial: the owner leg ended in a way another owner can take over from.
func (s *session) shouldRedial(err error) bool {
	if !s.welcomed || s.isStopping() {
		return false
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case protocol.CloseMoved, websocket.CloseGoingAway, websocket.CloseAbnormalClosure, websocket.CloseServiceRestart, websocket.CloseTryAgainLater:
			return true
		}
		return false
	}
	return true // the connection broke: the owner may have crashed
}

// redial replaces the owner leg: it dials the room's owner (the one a 4001 names, else the
// current one by this router's ring) with since/epoch/client, swallows its welcome and re-sends
// the pending publishes. It keeps trying for RedialTimeout, as an owner that crashed is only
// replaced once the ring notices.
func (s *session) redial(cause error) error {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	start := time.Now()
	var moved protocol.MovedReason
	var ce *websocket.CloseError
	if errors.As(cause, &ce) && ce.Code == protocol.CloseMoved {
		_ = json.Unmarshal([]byte(ce.Text), &moved)
	}
	q := url.Values{}
	for k, v := range s.query {
		q[k] = v
	}
	q.Set("since", strconv.FormatUint(s.lastSeq, 10))
	q.Set("epoch", s.epoch)
	q.Set("client", s.clientID)
	// The owner's close frame comes after its answers to everything it took (it flushes them
	// first, and takes no publish for the room after closing its connections): what it left
	// unanswered, it did not take. A leg that broke without one leaves that unknown.
	closed := ce != nil && (ce.Code == protocol.CloseMoved || ce.Code == websocket.CloseGoingAway)
	ctx, cancel := context.WithTimeout(context.Background(), s.rt.cfg.RedialTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		target := ""
		if m, ok := s.rt.ring.Placement().Member(moved.Node); ok && attempt == 0 {
			target = m.WSURL(s.room)
		} else if o, ok := s.rt.ring.Placement().Owner(s.room); ok {
			target = o.WSURL(s.room)
		}
		if target != "" {
			dctx, dcancel := context.WithTimeout(ctx, s.rt.cfg.DialTimeout)
			c, _, err := s.rt.dial(dctx, target, q.Encode(), s.header)
			dcancel()
			if err == nil {
				err = s.adopt(c, closed)
				closed = closed && !errors.Is(err, errResend)
				if err == nil {
					s.rt.metrics.redials.WithLabelValues("ok").Inc()
					s.logger().Debug("re-dialed the room's owner", "cause", cause, "since", s.lastSeq, "took", time.Since(start))
					return nil
				}
			}
		}
		if s.isStopping() {
			return errClosed
		}
		select {
		case <-ctx.Done():
			s.rt.metrics.redials.WithLabelValues("failed").Inc()
			s.logger().Warn("could not re-dial the room's owner; closing the client", "cause", cause, "took", time.Since(start))
			return ctx.Err()
		case <-time.After(min(50*time.Millisecond<<min(attempt, 5), time.Second)):
		}
	}
}

// adopt makes c the owner leg: it reads and swallows c's welcome, re-sends the pending frames
// that settle says are safe to, and closes the old leg. closed says whether the old leg ended
// with the owner's close frame. s.upMu is held.
func (s *session) adopt(c *websocket.Conn, closed bool) error {
	_ = c.SetReadDeadline(time.Now().Add(s.rt.cfg.DialTimeout))
	var w protocol.Welcome
	if err := c.ReadJSON(&w); err != nil || w.Type != protocol.TypeWelcome {
		c.Close()
		return errors.New("no welcome from the new owner")
	}
	resend, unsure := s.kept.settle(closed, w.Epoch == s.epoch, w.Seq, s.rt.cfg.DedupeIDs)
	for _, p := range resend {
		_ = c.SetWriteDeadline(time.Now().Add(s.rt.cfg.WriteTimeout))
		if err := c.WriteMessage(p.messageType(), p.frame); err != nil {
			c.Close()
			// pending is as it was and the next attempt settles it again, but that leg may
			// have taken some of what it was sent: its end is not a close of the owner's.
			return fmt.Errorf("%w: %w", errResend, err)
		}
	}
	s.kept.settled(s.rt.budget, resend, unsure)
	s.unsure = unsure
	if len(resend)+len(unsure) > 0 {
		s.logger().Debug("re-sent the client's unanswered publishes to the room's new owner", "resent", len(resend), "in_doubt", len(unsure))
	}
	readWait := s.rt.cfg.PingInterval * 5 / 2
	keepAlive(c, readWait, s.rt.cfg.WriteTimeout)
	old := s.up
	s.up = c
	s.owner.Store(&w.Node)
	old.Close()
	return nil
}

// tellUnsure answers, in order, the frames the last re-dial could not re-send: the old owner may
// or may not have taken them. The error frame carries the publish's id ("" for a binary or an
// id-less one, as the owner's own answers to those do).
func (s *session) tellUnsure() {
	for _, p := range s.unsure {
		s.tell(inDoubt(s.rt, p))
	}
	s.unsure = nil
}

// errResend: re-sending the pending frames to a new owner failed part way.
var errResend = errors.New("re-sending the pending publishes failed")

// dropOwnerLeg closes the owner leg's connection: the down pump's read fails and it re-dials the
// room's owner, as after a crash. A session already re-dialing is left to it.
func (s *session) dropOwnerLeg() {
	if !s.upMu.TryLock() {
		return
	}
	up := s.up
	s.upMu.Unlock()
	_ = up.NetConn().Close()
}

// ownerGone reports whether the node the owner leg is on is no longer a live member of p while p
// names another owner for the room: then the leg is worth dropping. With no owner to go to, a
// silent leg is left to wait (the node may come back) rather than turned into a disconnect.
func (s *session) ownerGone(p *ring.Placement) bool {
	id := s.owner.Load()
	if id == nil {
		return false
	}
	if m, ok := p.Member(*id); ok && m.Live() {
		return false
	}
	o, ok := p.Owner(s.room)
	return ok && o.ID != *id
}
