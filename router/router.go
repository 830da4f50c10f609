package router

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/roost-dev/roost/batch"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// Ring is what a router needs from its membership.
type Ring interface {
	ID() string
	Placement() *ring.Placement
	Ready() bool
	UpdateMeta(ctx context.Context, change func(*ring.Meta)) error
}

// Router is the edge: redirects and WebSocket proxying to room owners.
type Router struct {
	cfg      Config
	id       string
	ring     Ring
	log      *slog.Logger
	metrics  *metrics
	upgrader websocket.Upgrader
	dialer   websocket.Dialer
	door     *limit.Door // browser origins and connections per client address

	mu       sync.Mutex
	closed   bool
	sessions map[*session]struct{}
	handlers sync.WaitGroup

	stop  chan struct{} // ends gossipStats
	stats sync.WaitGroup
}

// New makes a router on the membership r.
func New(cfg Config, r Ring) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	rt := &Router{
		cfg:      cfg,
		id:       r.ID(),
		ring:     r,
		log:      cfg.Logger.With("node", r.ID()),
		sessions: map[*session]struct{}{},
		upgrader: websocket.Upgrader{
			// Clients mostly listen: a small read buffer (a publish of more is read in a few
			// reads) keeps an idle connection cheap. Big writes go through the pool.
			ReadBufferSize:  512,
			WriteBufferSize: 1024,
			WriteBufferPool: &sync.Pool{},
			CheckOrigin:     func(*http.Request) bool { return true }, // handleWS checks cfg.Origins

		},
		dialer: websocket.Dialer{
			HandshakeTimeout: cfg.DialTimeout,
			ReadBufferSize:   1024,
			WriteBufferSize:  1024,
			WriteBufferPool:  &sync.Pool{},
			TLSClientConfig:  cfg.DialTLS,
			// A hook on the owner leg ends the client leg's write batch (see pumpDown).
			NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &batch.ReadHook{Conn: c}, nil
			},
		},
		door: &limit.Door{Origins: cfg.Origins, Hops: limit.Hops{Prefixes: cfg.TrustedProxies},
			PerAddr: limit.NewPerAddr(cfg.MaxAddrConns)},
	}
	rt.metrics = newMetrics(rt)
	rt.stop = make(chan struct{})
	rt.stats.Add(1)
	go rt.gossipStats(cfg.StatsInterval)
	return rt, nil
}

// gossipStats spreads the router's connection count, for /v1/cluster and ctl status.
func (rt *Router) gossipStats(every time.Duration) {
	defer rt.stats.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-rt.stop:
			return
		case <-t.C:
			conns := rt.Sessions()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if err := rt.ring.UpdateMeta(ctx, func(m *ring.Meta) { m.Conns = conns }); err != nil {
				rt.log.Debug("could not gossip stats", "err", err)
			}
			cancel()
		}
	}
}

// Handler serves the router's HTTP API.
func (rt *Router) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/rooms/{room}", rt.handleResolve)
	mux.HandleFunc("GET /v1/rooms/{room}/ws", rt.handleWS)
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*") // public, like placement: pages elsewhere may show it
		protocol.WriteJSON(w, rt.ring.Placement().Cluster(rt.id))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		protocol.WriteJSON(w, map[string]string{"status": "ok", "node": rt.id})
	})
	mux.HandleFunc("GET /readyz", rt.handleReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(rt.metrics.reg, promhttp.HandlerOpts{}))
	mux.Handle("GET /{$}", demoPage)
	mux.Handle("GET /demo/", http.StripPrefix("/demo/", demoFiles))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		protocol.WriteError(w, http.StatusNotFound, protocol.CodeNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

func (rt *Router) handleReady(w http.ResponseWriter, _ *http.Request) {
	rt.mu.Lock()
	closed := rt.closed
	rt.mu.Unlock()
	if closed || !rt.ring.Ready() {
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady, "not ready: not joined, no node in the ring, or shutting down")
		return
	}
	protocol.WriteJSON(w, map[string]string{"status": "ready", "node": rt.id, "ring": rt.ring.Placement().Version()})
}

// place validates the room and finds its owner, answering the error itself when it cannot.
func (rt *Router) place(w http.ResponseWriter, r *http.Request) (string, ring.Member, bool) {
	room := r.PathValue("room")
	if err := protocol.ValidRoom(room); err != nil {
		rt.metrics.refused.WithLabelValues("bad_room").Inc()
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRoom, err.Error())
		return "", ring.Member{}, false
	}
	o, ok := rt.ring.Placement().Owner(room)
	if !ok {
		rt.metrics.refused.WithLabelValues("no_nodes").Inc()
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNoNodes, "no node in the ring owns rooms yet; try again shortly")
		return "", ring.Member{}, false
	}
	return room, o, true
}

func (rt *Router) handleResolve(w http.ResponseWriter, r *http.Request) {
	room, o, ok := rt.place(w, r)
	if !ok {
		return
	}
	rt.metrics.redirects.Inc()
	w.Header().Set("Access-Control-Allow-Origin", "*")
	target := o.HTTPURL() + "/v1/rooms/" + room
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	w.Header().Set("Location", target)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// Sessions is the number of open proxied connections.
func (rt *Router) Sessions() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return len(rt.sessions)
}

// Close closes every proxied connection with 1001 and waits for their goroutines.
func (rt *Router) Close() error {
	rt.mu.Lock()
	if rt.closed {
		rt.mu.Unlock()
		return nil
	}
	rt.closed = true
	for s := range rt.sessions {
		s.shutdown()
	}
	rt.mu.Unlock()
	close(rt.stop)
	rt.stats.Wait()
	rt.handlers.Wait()
	return nil
}

// track registers a session unless the router is closing.
func (rt *Router) track(s *session) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed {
		return errClosed
	}
	rt.sessions[s] = struct{}{}
	rt.handlers.Add(1)
	return nil
}

func (rt *Router) untrack(s *session) {
	rt.mu.Lock()
	delete(rt.sessions, s)
	rt.mu.Unlock()
	rt.handlers.Done()
}

var errClosed = errors.New("router closed")
