package room

import (
	"cmp"
	"encoding/json"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/batch"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/protocol"
)

// outFrame is one item of a connection's send queue: a shared message, a batch of history owed
// to a resuming client, or a frame for this connection alone.
type outFrame struct {
	msg    *entry   // a room message, shared by all receivers
	replay []*entry // history to send, oldest first (one queue slot however long)
	text   []byte   // a text frame for this connection only (welcome, ack, error, gap, ...)
	shared *websocket.PreparedMessage
	// On an edge leg (see edge.go): via marks a frame for its client to alone; code, one that
	// ends that client (text is the reason).
	via  bool
	to   uint32
	code int
}

// sharedCost is what a shared frame (a presence event) is counted as in a send queue: it is
// small, and made once for every receiver.
const sharedCost = 1 << 10

// cost is the memory f holds while queued, as SendQueueBytes counts it: what its message costs,
// or its own bytes. A resume's replay counts nothing: it is the room's history, which
// --history-bytes bounds and the budget counts, and counting it would close every client that
// resumes in a room whose history is larger than the bound.
func (f *outFrame) cost() int {
	switch {
	case f.msg != nil:
		return f.msg.cost()
	case f.replay != nil:
		return 0
	case f.shared != nil:
		return sharedCost
	default:
		return len(f.text) + 64
	}
}

// hold counts the queue in as a holder of f's messages (see entry).
func (f *outFrame) hold(b *limit.Budget) {
	if f.msg != nil {
		f.msg.hold(b)
	}
	for _, e := range f.replay {
		e.hold(b)
	}
}

// drop counts the queue out as a holder of f's messages, once f is written or dropped.
func (f *outFrame) drop() {
	if f.msg != nil {
		f.msg.drop()
	}
	for _, e := range f.replay {
		e.drop()
	}
}

// dropAll drops every frame of q.
func dropAll(q []outFrame) {
	for i := range q {
		q[i].drop()
		q[i] = outFrame{}
	}
}

// Conn is one WebSocket client of a room, as the room writes to it. The room queues frames to it without blocking. No
// goroutine writes while nothing is queued: send starts a writer when a frame arrives and the
// writer ends when the queue is empty, so an idle connection costs its reader goroutine and a
// ping timer, not a second goroutine. The reader (serve) owns the connection: when it ends it
// waits for the writer of the moment.
type Conn struct {
	cfg      *Config
	ws       *websocket.Conn
	nc       *batch.Conn // ws's connection, to gather a batch into few writes
	client   string
	presence bool
	ping     *time.Timer // fires every PingInterval; the writer sends the ping
	isLeg    bool        // a router's edge leg (see edge.go)
	leg      *Conn       // a via: the leg its frames go on
	handle   uint32      // a via's handle on its leg

	mu      sync.Mutex
	queue   []outFrame
	queued  int            // what queue costs (outFrame.cost)
	writing int            // what the batch being written costs; it is pinned until written
	spare   []outFrame     // the last writer's batch, reused
	writer  bool           // a writer goroutine is running; at most one is
	pingDue bool           // the writer owes the peer a ping
	ended   bool           // the reader has ended: no writer starts again
	closing bool           // no more frames are queued
	flush   bool           // send what is queued before the close frame
	bye     Farewell       // the close frame to send; Code 0: none (the peer went away)
	epoch   string         // the room's epoch, for a 4001's reason
	writers sync.WaitGroup // the running writer and ping timer callback

	lastSent  uint64 // highest message seq written; writers only, one at a time
	delivered int    // messages written in this batch, not yet counted; writers only
}

// NewConn wraps ws, a client's upgraded connection, for joining a room as client; presence says
// whether it is sent presence.
func NewConn(cfg *Config, ws *websocket.Conn, client string, presence bool) *Conn {
	return &Conn{cfg: cfg, ws: ws, nc: batch.Of(ws.NetConn()), client: client, presence: presence}
}

// Client is the client id the connection joins as.
func (c *Conn) Client() string { return c.client }

// kick starts a writer unless one is running or the connection is over. c.mu is held.
func (c *Conn) kick() {
	if c.writer || c.ended {
		return
	}
	c.writer = true
	c.writers.Add(1)
	go c.writeQueued()
}

// send queues f. It never blocks. It reports false when the queue was full — SendQueue frames,
// or more than SendQueueBytes of memory with what is being written (a first frame always fits,
// so a resume's replay of a whole history goes through): the connection is then closing with
// 4008, what was queued is dropped, and the caller must stop sending to it.
func (c *Conn) send(f outFrame) bool {
	if c.leg != nil {
		return c.sendVia(f)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.ended {
		return true
	}
	cost := f.cost()
	held := c.queued + c.writing
	maxFrames, maxBytes := c.cfg.SendQueue, c.cfg.SendQueueBytes
	if c.isLeg {
		maxFrames, maxBytes = cmp.Or(c.cfg.LegSendQueue, maxFrames), cmp.Or(c.cfg.LegSendQueueBytes, maxBytes)
	}
	if len(c.queue) >= maxFrames || (maxBytes > 0 && held > 0 && held+cost > maxBytes) {
		c.closing, c.flush = true, false
		c.bye = Farewell{Code: protocol.CloseSlowConsumer, Reason: "slow consumer: fell too far behind the room"}
		c.dropQueue()
		c.cfg.Metrics.SlowConsumers.Inc()
		c.kick()
		return false
	}
	f.hold(c.cfg.Budget)
	c.queue = append(c.queue, f)
	c.queued += cost
	c.kick()
	return true
}

// dropQueue drops what is queued and not yet being written. c.mu is held.
func (c *Conn) dropQueue() {
	dropAll(c.queue)
	c.queue, c.queued = nil, 0
}

// SendJSON queues a text frame for this connection alone, as send does.
func (c *Conn) SendJSON(v any) bool { return c.sendJSON(v) }

func (c *Conn) sendJSON(v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // our own frame types always marshal
	}
	return c.send(outFrame{text: b})
}

// close asks the writer to send f's close frame, after what is queued when f.Flush is set.
// epoch is the room's, for a 4001's reason.
func (c *Conn) close(f Farewell, epoch string) {
	if c.leg != nil {
		c.CloseVia(f.Code, f.closeReason(epoch, 0))
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		c.closing, c.flush, c.bye, c.epoch = true, f.Flush, f, epoch
		if !f.Flush {
			c.dropQueue()
		}
	}
	c.kick()
}

// StartPings arms the ping timer. A timer, not a ticker goroutine: an idle connection's
// keepalive costs nothing between pings.
func (c *Conn) StartPings() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ping = time.AfterFunc(c.cfg.PingInterval, c.pingTick)
}

func (c *Conn) pingTick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended || c.closing {
		return
	}
	c.pingDue = true
	c.kick()
	c.ping.Reset(c.cfg.PingInterval)
}

// End is called by the reader when it has stopped: no writer starts again, and end returns
// when the running one, if any, has returned.
func (c *Conn) End() {
	c.mu.Lock()
	c.ended = true
	if c.ping != nil {
		c.ping.Stop()
	}
	c.mu.Unlock()
	c.writers.Wait()
	c.mu.Lock()
	c.dropQueue() // what no writer will send now
	c.mu.Unlock()
}

// writeQueued is a writer: it writes what is queued, in batches, and the ping when one is due,
// and returns when there is nothing left or after the close frame.
func (c *Conn) writeQueued() {
	defer c.writers.Done()
	for {
		c.mu.Lock()
		batch, ping := c.queue, c.pingDue
		closing, flush := c.closing, c.flush
		if c.ended || len(batch) == 0 && !ping && !closing {
			c.writer = false
			c.mu.Unlock()
			return
		}
		if closing && !flush {
			c.mu.Unlock()
			c.writeClose()
			return // writer stays set: nothing is written after the close frame
		}
		c.queue, c.pingDue = c.spare[:0], false
		c.writing, c.queued = c.queued, 0
		c.mu.Unlock()
		err := c.writeBatch(batch, ping)
		dropAll(batch) // what an error left unwritten
		c.mu.Lock()
		c.writing = 0
		c.mu.Unlock()
		if err != nil {
			c.abort()
			return
		}
		c.spare = batch
		if closing {
			c.writeClose()
			return
		}
	}
}

// writeBatch writes the ping, if due, and the batch, gathered into as few write system calls as
// the batch's size allows.
func (c *Conn) writeBatch(batch []outFrame, ping bool) (err error) {
	c.nc.Begin()
	defer func() {
		if ferr := c.nc.End(); err == nil {
			err = ferr
		}
	}()
	if ping {
		if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.cfg.WriteTimeout)); err != nil {
			return err
		}
	}
	defer func() {
		// One metric update per batch, not per frame: the counter is shared by every writer.
		if c.delivered > 0 {
			c.cfg.Metrics.Deliveries.Add(float64(c.delivered))
			c.delivered = 0
		}
	}()
	for i := range batch {
		if err := c.write(&batch[i]); err != nil {
			return err
		}
		batch[i].drop()
		batch[i] = outFrame{}
	}
	return nil
}

func (c *Conn) write(f *outFrame) error {
	deadline := time.Now().Add(c.cfg.WriteTimeout)
	if err := c.ws.SetWriteDeadline(deadline); err != nil {
		return err
	}
	if f.via {
		return c.writeVia(f)
	}
	switch {
	case f.msg != nil:
		return c.writeEntry(f.msg)
	case f.replay != nil:
		for _, e := range f.replay {
			if err := c.writeEntry(e); err != nil {
				return err
			}
		}
		return nil
	case f.shared != nil:
		return c.ws.WritePreparedMessage(f.shared)
	default:
		return c.ws.WriteMessage(websocket.TextMessage, f.text)
	}
}

func (c *Conn) writeEntry(e *entry) error {
	var err error
	switch pm := e.prepared(); {
	case c.isLeg && e.binary:
		err = c.writeTagged(protocol.EdgeRoom, 0, e.frame)
	case pm != nil:
		err = c.ws.WritePreparedMessage(pm)
	case e.binary:
		err = c.ws.WriteMessage(websocket.BinaryMessage, e.frame)
	default:
		err = c.ws.WriteMessage(websocket.TextMessage, e.frame)
	}
	if err != nil {
		return err
	}
	c.lastSent = e.seq
	c.delivered++
	return nil
}

// writeClose sends the close frame and gives the peer a moment to answer before the reader
// gives up.
func (c *Conn) writeClose() {
	c.mu.Lock()
	bye, epoch := c.bye, c.epoch
	c.mu.Unlock()
	if bye.Code != 0 {
		msg := websocket.FormatCloseMessage(bye.Code, bye.closeReason(epoch, c.lastSent))
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(time.Second))
}

// abort ends a connection whose writes fail: closing the socket ends the reader too. The
// writer returns after it with writer still set, so no other starts.
func (c *Conn) abort() {
	c.mu.Lock()
	c.closing = true
	c.dropQueue()
	c.mu.Unlock()
	_ = c.ws.Close()
}

// Closing reports whether the connection is on its way out: its reader stops extending the
// read deadline so the close handshake bounds it.
func (c *Conn) Closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}
