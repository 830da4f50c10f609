package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/protocol"
)

// baseline is the whole server: its rooms by name, and how many frames may wait per connection.
type baseline struct {
	upgrader websocket.Upgrader
	queue    int
	mu       sync.Mutex
	rooms    map[string]*baselineRoom
}

// baselineRoom is one room: the seq of its last message and its members.
type baselineRoom struct {
	mu   sync.Mutex
	seq  uint64
	subs map[*baselineConn]struct{}
}

// baselineConn is one member: its socket and the queue its writer goroutine drains.
type baselineConn struct {
	ws   *websocket.Conn
	send chan *websocket.PreparedMessage
}

// runBaseline serves the minimal broadcast server that roost bench measures roost against,
// in the same run, with the same clients: rooms in one map, one writer goroutine per connection
// fed by a channel, every message encoded once (with roost's own encoder) and written to every
// member. It speaks enough of roost's protocol for the load generator (welcome, message, ack) and
// nothing more: no history, ids, presence, placement, limits or hand-off. That is the floor roost's
// features are measured against. It is a hidden command: the fan-out workloads start it.
func runBaseline(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("roost-bench baseline", flag.ContinueOnError)
	addr := fs.String("http", "127.0.0.1:0", "host:port to serve on")
	queue := fs.Int("send-queue", 1<<16, "frames queued per connection before it is dropped")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	b := &baseline{rooms: map[string]*baselineRoom{}, queue: *queue}
	b.upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024, WriteBufferPool: &sync.Pool{},
		CheckOrigin: func(*http.Request) bool { return true }}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/rooms/{room}/ws", b.serve)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (b *baseline) room(name string) *baselineRoom {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.rooms[name]
	if r == nil {
		r = &baselineRoom{subs: map[*baselineConn]struct{}{}}
		b.rooms[name] = r
	}
	return r
}

func (b *baseline) serve(w http.ResponseWriter, req *http.Request) {
	ws, err := b.upgrader.Upgrade(w, req, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	r := b.room(req.PathValue("room"))
	c := &baselineConn{ws: ws, send: make(chan *websocket.PreparedMessage, b.queue)}
	done := make(chan struct{})
	go func() { // the writer
		defer close(done)
		for pm := range c.send {
			if ws.WritePreparedMessage(pm) != nil {
				ws.Close()
				return
			}
		}
	}()
	client := "c-" + strconv.FormatUint(uint64(time.Now().UnixNano()), 36)
	r.mu.Lock()
	welcome, _ := json.Marshal(protocol.Welcome{Type: protocol.TypeWelcome, Room: req.PathValue("room"), Node: "baseline", Client: client, Epoch: "b", Seq: r.seq, Count: len(r.subs) + 1})
	pm, _ := websocket.NewPreparedMessage(websocket.TextMessage, welcome)
	c.send <- pm
	r.subs[c] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		if _, ok := r.subs[c]; ok {
			delete(r.subs, c)
			close(c.send)
		}
		r.mu.Unlock()
		<-done
	}()
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var p protocol.Publish
		if json.Unmarshal(data, &p) != nil {
			continue
		}
		r.mu.Lock()
		r.seq++
		msg, _ := websocket.NewPreparedMessage(websocket.TextMessage, protocol.AppendMessage(nil, r.seq, client, p.ID, p.Data))
		for s := range r.subs {
			select {
			case s.send <- msg:
			default: // too slow: dropped, like roost's 4008
				delete(r.subs, s)
				close(s.send)
			}
		}
		ack, _ := json.Marshal(protocol.Ack{Type: protocol.TypeAck, ID: p.ID, Seq: r.seq})
		if _, ok := r.subs[c]; ok {
			pm, _ := websocket.NewPreparedMessage(websocket.TextMessage, ack)
			select {
			case c.send <- pm:
			default:
			}
		}
		r.mu.Unlock()
	}
}
