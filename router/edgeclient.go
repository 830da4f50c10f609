package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/batch"
	"github.com/roost-dev/roost/internal/httpapi"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// edgeClient is one client socket of a leg. Its reader (run) owns it; frames for it are queued
// without blocking and written by a writer goroutine that runs only while something is queued,
// in batches, like a node's room connection. A client whose queue fills is closed with 4008
// alone: the leg and the room's other clients never wait for it.
type edgeClient struct {
	leg      *leg
	h        uint32
	ws       *websocket.Conn
	out      *batch.Conn
	presence bool
	join     protocol.EdgeOp // the first join, as the client asked

	// Guarded by leg.mu.
	joined bool   // its welcome came: it is sent the room's frames
	client string // its client id, from its welcome

	// The leg's reader's alone: where the client's own replay is (see leg.own and leg.adopt).
	welcomed bool
	wseq     uint64 // its welcome's seq: its replay ends there
	wepoch   string
	pos      uint64 // the last seq of its replay it was sent

	// Guarded by leg.pmu.
	kept pending

	mu      sync.Mutex
	queue   []edgeFrame
	queued  int // bytes queued
	spare   []edgeFrame
	writer  bool
	pingDue bool
	closing bool // no more frames are queued; the writer sends bye
	ended   bool // the reader has ended: no writer starts again
	bye     int
	byeText string
	ping    *time.Timer
	writers sync.WaitGroup
}

// edgeFrame is one frame queued to a client: a room frame prepared once for all, or its own.
type edgeFrame struct {
	pm   *websocket.PreparedMessage
	mt   int
	data []byte
	size int
}

func (f *edgeFrame) cost() int { return max(f.size, len(f.data)) + 64 }

// send queues f; a client whose queue is full is closed with 4008 and leaves the room.
func (c *edgeClient) send(f edgeFrame) {
	c.mu.Lock()
	if c.closing || c.ended {
		c.mu.Unlock()
		return
	}
	cfg := c.leg.rt.cfg
	held := c.queued
	if len(c.queue) >= cfg.SendQueue || (held > 0 && held+f.cost() > cfg.SendQueueBytes) {
		c.closing, c.bye, c.byeText = true, protocol.CloseSlowConsumer, "slow consumer: fell too far behind the room"
		clear(c.queue)
		c.queue, c.queued = c.queue[:0], 0
		c.kick()
		c.mu.Unlock()
		// It leaves the room when its reader ends: at the close handshake, or a second after
		// the close frame (see writeQueued); meanwhile nothing more is queued to it.
		c.leg.rt.metrics.drops.WithLabelValues("slow_consumer").Inc()
		return
	}
	c.queue = append(c.queue, f)
	c.queued += f.cost()
	c.kick()
	c.mu.Unlock()
}

// closeWith sends the client a close frame, after what is queued, and ends it.
func (c *edgeClient) closeWith(code int, text string) {
	c.mu.Lock()
	if !c.closing {
		c.closing, c.bye, c.byeText = true, code, text
	}
	c.kick()
	c.mu.Unlock()
}

// kick starts a writer unless one runs. c.mu is held.
func (c *edgeClient) kick() {
	if c.writer || c.ended {
		return
	}
	c.writer = true
	c.writers.Add(1)
	go c.writeQueued()
}

func (c *edgeClient) writeQueued() {
	defer c.writers.Done()
	timeout := c.leg.rt.cfg.WriteTimeout
	for {
		c.mu.Lock()
		batch, ping, closing := c.queue, c.pingDue, c.closing
		if c.ended || len(batch) == 0 && !ping && !closing {
			c.writer = false
			c.mu.Unlock()
			return
		}
		c.queue, c.queued, c.pingDue = c.spare[:0], 0, false
		c.mu.Unlock()
		err := c.writeBatch(batch, ping, timeout)
		clear(batch)
		c.spare = batch
		if err != nil {
			_ = c.ws.Close()
			return // writer stays set: nothing more is written
		}
		if closing {
			c.mu.Lock()
			code, text := c.bye, c.byeText
			c.mu.Unlock()
			_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, protocol.CloseReason(text)), time.Now().Add(time.Second))
			_ = c.ws.SetReadDeadline(time.Now().Add(time.Second))
			return
		}
	}
}

func (c *edgeClient) writeBatch(batch []edgeFrame, ping bool, timeout time.Duration) (err error) {
	c.out.Begin()
	defer func() {
		if ferr := c.out.End(); err == nil {
			err = ferr
		}
	}()
	_ = c.ws.SetWriteDeadline(time.Now().Add(timeout))
	if ping {
		if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(timeout)); err != nil {
			return err
		}
	}
	for i := range batch {
		f := &batch[i]
		if f.pm != nil {
			err = c.ws.WritePreparedMessage(f.pm)
		} else {
			err = c.ws.WriteMessage(f.mt, f.data)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *edgeClient) pingTick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended || c.closing {
		return
	}
	c.pingDue = true
	c.kick()
	c.ping.Reset(c.leg.rt.cfg.PingInterval)
}

// run reads the client's frames and publishes them on the leg until the client leaves, then
// takes it off the leg and waits for its writer.
func (c *edgeClient) run() {
	cfg := c.leg.rt.cfg
	readWait := cfg.PingInterval * 5 / 2
	c.ws.SetReadLimit(cfg.MaxFrame)
	_ = c.ws.SetReadDeadline(time.Now().Add(readWait))
	c.ws.SetPongHandler(func(string) error { return c.extendRead(readWait) })
	c.mu.Lock()
	c.ping = time.AfterFunc(cfg.PingInterval, c.pingTick)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.ended = true
		c.ping.Stop()
		c.mu.Unlock()
		c.writers.Wait()
		c.ws.Close()
	}()
	for {
		mt, msg, err := c.ws.ReadMessage()
		if err != nil {
			c.leg.remove(c, true)
			if errors.Is(err, websocket.ErrReadLimit) {
				protocol.CloseGently(c.ws.NetConn(), time.Second) // gorilla sent the 1009
			}
			return
		}
		if c.isClosing() {
			continue
		}
		_ = c.extendRead(readWait)
		if refused := c.leg.publish(c, mt, msg); refused != nil {
			c.tell(refused)
		}
	}
}

func (c *edgeClient) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// extendRead pushes the read deadline d away unless the client is being closed.
func (c *edgeClient) extendRead(d time.Duration) error {
	if c.isClosing() {
		return nil
	}
	return c.ws.SetReadDeadline(time.Now().Add(d))
}

// tell queues a frame of the router's own to the client.
func (c *edgeClient) tell(f *protocol.ErrorFrame) {
	b, _ := json.Marshal(f)
	c.send(edgeFrame{mt: websocket.TextMessage, data: b})
}

// tellUnsure answers a frame a re-attach could not re-send (see inDoubt).
func (c *edgeClient) tellUnsure(p pendingPublish) { c.tell(inDoubt(c.leg.rt, p)) }

// serveEdge serves a client on the room's edge leg, dialing the leg first if the router has none:
// the client is upgraded only once the leg is up, so one the owner refuses gets the owner's own
// answer, as on the proxied path. Its join (client id, since/epoch, presence, token) goes to the
// owner on the leg, which answers with the client's own welcome.
func (rt *Router) serveEdge(w http.ResponseWriter, r *http.Request, room string, o ring.Member, adm *httpapi.Admission) {
	join, err := parseJoin(r)
	if err != nil {
		rt.metrics.refused.WithLabelValues("bad_request").Inc()
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
		return
	}
	if rt.cfg.Auth != nil {
		join.Token = auth.FromRequest(r)
	}
	ctx, cancel := context.WithTimeout(r.Context(), rt.cfg.DialTimeout)
	forwarded := rt.door.Hops.ForwardedFor(r)
	l, err := rt.legFor(ctx, room, o, forwarded)
	cancel()
	switch {
	case errors.Is(err, errClosed):
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady, "router shutting down; reconnect")
		return
	case err != nil:
		rt.metrics.dials.WithLabelValues("error").Inc()
		protocol.WriteError(w, http.StatusBadGateway, protocol.CodeUnavailable,
			fmt.Sprintf("could not reach node %s, the owner of room %s; try again shortly", o.ID, room))
		return
	case l.refusal != nil:
		l.refusal.write(w)
		return
	case l.err != nil:
		protocol.WriteError(w, http.StatusBadGateway, protocol.CodeUnavailable,
			fmt.Sprintf("could not reach node %s, the owner of room %s; try again shortly", o.ID, room))
		return
	}
	if err := rt.trackEdge(); err != nil {
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady, "router shutting down; reconnect")
		return
	}
	ws, err := rt.upgrader.Upgrade(&batch.Hijacker{ResponseWriter: w}, r, nil)
	if err != nil {
		rt.untrackEdge()
		return // the upgrader has answered
	}
	c := &edgeClient{leg: l, ws: ws, out: batch.Of(ws.NetConn()), presence: join.Presence, join: join}
	rt.metrics.opened.Inc()
	if !l.add(c) {
		// The leg ended between legFor and now (its last client left, or the router closes):
		// this client takes a fresh one.
		if l, err = rt.legFor(r.Context(), room, o, forwarded); err != nil || l.refusal != nil || l.err != nil || !l.add(c) {
			httpapi.CloseWith(ws, websocket.CloseTryAgainLater, "the room's owner could not be reached; reconnect")
			ws.Close()
			rt.untrackEdge()
			return
		}
		c.leg = l
	}
	var expiry *time.Timer
	if rt.cfg.Auth != nil && adm.Claims.ExpiresAt != nil {
		// As on the proxied path: an expired token ends the client (the owner does the same).
		expiry = time.AfterFunc(time.Until(adm.Claims.ExpiresAt.Add(auth.Leeway)), func() {
			rt.metrics.refused.WithLabelValues("token_expired").Inc()
			c.closeWith(protocol.CloseUnauthorized, "unauthorized: the token has expired; reconnect with a fresh one")
		})
	}
	release := adm.Hand()
	go func() {
		defer release()
		defer rt.untrackEdge()
		if expiry != nil {
			defer expiry.Stop()
		}
		c.run()
	}()
}

// parseJoin reads a client's query into its join, refusing what the owner would refuse.
func parseJoin(r *http.Request) (protocol.EdgeOp, error) {
	q := r.URL.Query()
	op := protocol.EdgeOp{Op: protocol.EdgeJoin}
	if s := q.Get("since"); s != "" {
		since, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return op, errors.New("since must be a whole number (the last seq you saw)")
		}
		op.Since, op.HasSince = since, true
	}
	op.Epoch = q.Get("epoch")
	if len(op.Epoch) > 64 {
		return op, errors.New("epoch is too long; pass back the epoch a welcome gave you")
	}
	op.Client = q.Get("client")
	if len(op.Client) > 128 || !utf8.ValidString(op.Client) || strings.ContainsFunc(op.Client, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return op, errors.New("client must be at most 128 bytes of printable UTF-8")
	}
	switch q.Get("presence") {
	case "", "0", "false":
	case "1", "true":
		op.Presence = true
	default:
		return op, errors.New("presence must be 1 or 0")
	}
	return op, nil
}
