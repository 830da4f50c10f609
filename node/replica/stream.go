package replica

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/ring"
)

// maxInFlight bounds the batches sent to one replica and not yet acked.
const maxInFlight = 64

// maxBatchBytes bounds one batch's frames (a seed alone may exceed it).
const maxBatchBytes = 4 << 20

// stream is an owner's replication stream to one node: a WebSocket, reconnected when it
// breaks, that carries batches of items and brings back their acks. Every item queued while
// one batch is in flight goes in the next (group commit), so a busy owner sends few, large
// frames. A reconnect starts a new generation: whatever was in flight is unknown, so every room
// replicated to the node is seeded again (see target).
type stream struct {
	rep  *Replicator
	peer string

	mu       sync.Mutex
	member   ring.Member
	gen      uint64 // the connection's generation; 0: not connected
	queue    []Item
	bytes    int
	inflight map[uint64][]Item
	sentAt   map[uint64]time.Time
	next     uint64
	kick     chan struct{} // cap 1
}

func newStream(rep *Replicator, m ring.Member) *stream {
	return &stream{rep: rep, peer: m.ID, member: m, inflight: map[uint64][]Item{}, sentAt: map[uint64]time.Time{}, kick: make(chan struct{}, 1)}
}

// generation is the current connection's generation, 0 when not connected.
func (s *stream) generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// send queues it on the connection of generation gen; it reports false when that connection is
// gone (the item is dropped: its room is seeded again on the next one).
func (s *stream) send(gen uint64, it Item) bool {
	s.mu.Lock()
	if s.gen == 0 || s.gen != gen {
		s.mu.Unlock()
		s.poke()
		return false
	}
	s.queue = append(s.queue, it)
	if it.Append != nil {
		s.bytes += len(it.Append.Msg.Frame)
	}
	s.mu.Unlock()
	s.poke()
	return true
}

func (s *stream) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run keeps the stream connected and writes batches until ctx ends.
func (s *stream) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		ws, err := s.dial(ctx)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		s.serve(ctx, ws)
	}
}

func (s *stream) dial(ctx context.Context) (*websocket.Conn, error) {
	s.mu.Lock()
	m := s.member
	s.mu.Unlock()
	u := m.HTTPURL()
	scheme := "ws"
	if strings.HasPrefix(u, "https://") {
		scheme = "wss"
	}
	uri := Path + "?from=" + url.QueryEscape(s.rep.self)
	d := websocket.Dialer{HandshakeTimeout: s.rep.cfg.DialTimeout, TLSClientConfig: s.rep.cfg.Peers.TLS(),
		ReadBufferSize: 16 << 10, WriteBufferSize: 64 << 10}
	ctx, cancel := context.WithTimeout(ctx, s.rep.cfg.DialTimeout)
	defer cancel()
	ws, resp, err := d.DialContext(ctx, scheme+"://"+m.HTTP+uri, s.rep.cfg.Peers.Stream(m.HTTP, uri))
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil && resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		s.rep.cfg.Log.Warn("replication stream refused", "peer", s.peer, "status", resp.Status)
	}
	return ws, err
}

// serve runs one connection: a reader for acks, and this goroutine writing batches.
func (s *stream) serve(ctx context.Context, ws *websocket.Conn) {
	s.mu.Lock()
	s.gen = s.rep.gens.Add(1)
	s.queue, s.bytes, s.inflight, s.sentAt = nil, 0, map[uint64][]Item{}, map[uint64]time.Time{}
	s.mu.Unlock()
	s.rep.reconcileSoon()

	c := newConn(ws)
	done := make(chan struct{})
	space := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(done)
		for {
			var ack Ack
			if c.read(&ack) != nil {
				return
			}
			s.mu.Lock()
			items := s.inflight[ack.ID]
			delete(s.inflight, ack.ID)
			delete(s.sentAt, ack.ID)
			s.mu.Unlock()
			s.rep.acked(s, items, ack.Status)
			select {
			case space <- struct{}{}:
			default:
			}
		}
	})
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	// A replica that stops answering (cut off, frozen) is given up on once a batch waits for
	// its ack half of ReplicaTimeout; its rooms count it since that batch left (see lost).
	silent := time.Now()
	check := time.NewTicker(100 * time.Millisecond)
	defer check.Stop()
	defer func() {
		stop()
		ws.Close()
		wg.Wait()
		s.mu.Lock()
		s.gen, s.queue, s.bytes, s.inflight, s.sentAt = 0, nil, 0, map[uint64][]Item{}, map[uint64]time.Time{}
		s.mu.Unlock()
		s.rep.lost(s, silent)
	}()
	for {
		select {
		case <-done:
			silent = time.Now()
			return
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-space:
		case now := <-check.C:
			if oldest, ok := s.oldest(); ok && now.Sub(oldest) > s.rep.cfg.ReplicaTimeout/2 {
				s.rep.cfg.Log.Warn("replica stopped acking; reconnecting", "peer", s.peer, "waited", now.Sub(oldest).Round(time.Millisecond))
				silent = oldest
				return
			}
			continue
		}
		for {
			s.mu.Lock()
			if len(s.queue) == 0 || len(s.inflight) >= maxInFlight {
				s.mu.Unlock()
				break
			}
			n, size := 0, 0
			for n < len(s.queue) && (n == 0 || size < maxBatchBytes) {
				if a := s.queue[n].Append; a != nil {
					size += len(a.Msg.Frame)
				}
				n++
			}
			items := s.queue[:n:n]
			s.queue = s.queue[n:]
			s.bytes -= size
			s.next++
			id := s.next
			s.inflight[id] = items
			s.sentAt[id] = time.Now()
			s.mu.Unlock()
			// A silent heir is given up on as when it stops acking.
			if c.write(Batch{ID: id, Items: items}, time.Now().Add(s.rep.cfg.ReplicaTimeout/2)) != nil {
				return
			}
			s.rep.cfg.Metrics.Batches.Inc()
		}
	}
}

// oldest is when the oldest batch still waiting for its ack was sent.
func (s *stream) oldest() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var at time.Time
	for _, t := range s.sentAt {
		if at.IsZero() || t.Before(at) {
			at = t
		}
	}
	return at, !at.IsZero()
}
