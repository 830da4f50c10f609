package router

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/batch"
	"github.com/roost-dev/roost/internal/httpapi"
	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/ring"
)

// Ring is what a router needs from its membership: what every member's HTTP surface reads, and
// word of placement changes.
type Ring interface {
	httpapi.Ring
	Subscribe() (<-chan *ring.Placement, func())
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
	door     *limit.Door   // browser origins and connections per client address
	clients  *httpapi.Door // lets clients' WebSockets in, through door
	budget   *limit.Budget // what sessions keep for clients: unacked publishes
	api      *http.Client  // proxies the server API to owners
	peers    *peer.Client  // signs edge legs
	// legDialer dials edge legs: bigger buffers than a client's, as a leg carries a whole room.
	legDialer websocket.Dialer

	mu        sync.Mutex
	closed    bool
	sessions  map[*session]struct{}
	legs      map[string]*leg // the edge legs, by room
	handlers  sync.WaitGroup
	edgeConns atomic.Int64 // clients on edge legs

	stop  context.CancelFunc // ends gossipStats
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
		budget:   limit.NewBudget(cfg.memoryBudget(), limit.NewMemory(cfg.MaxMemory)),
		sessions: map[*session]struct{}{},
		legs:     map[string]*leg{},
		peers:    peer.New(cfg.PeerKey, nil, 1<<10, cfg.DialTLS),
		legDialer: websocket.Dialer{
			HandshakeTimeout: cfg.DialTimeout,
			ReadBufferSize:   64 << 10,
			WriteBufferSize:  16 << 10,
			TLSClientConfig:  cfg.DialTLS,
		},
		upgrader: httpapi.NewUpgrader(),
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
			PerAddr: limit.NewPerAddr(cfg.MaxAddrConns), Handshakes: limit.NewInFlight(cfg.MaxHandshakes)},
	}
	rt.api = newAPIClient(cfg)
	rt.metrics = newMetrics(rt)
	rt.clients = &httpapi.Door{Limits: rt.door, Auth: cfg.Auth, Upgrader: &rt.upgrader, Refused: rt.metrics.refused, Log: rt.log}
	ctx, stop := context.WithCancel(context.Background())
	rt.stop = stop
	rt.stats.Add(2)
	changes, unsubscribe := r.Subscribe()
	go func() {
		defer rt.stats.Done()
		defer unsubscribe()
		rt.watchOwners(ctx, changes)
	}()
	go func() {
		defer rt.stats.Done()
		// The router's connection count, for /v1/cluster and ctl status.
		httpapi.GossipStats(ctx, r, cfg.StatsInterval, rt.log, func(m *ring.Meta) { m.Conns = rt.Sessions() })
	}()
	return rt, nil
}

// Handler serves the router's HTTP API.
func (rt *Router) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/rooms/{room}", rt.handleResolve)
	mux.HandleFunc("GET /v1/rooms/{room}/ws", rt.handleWS)
	mux.HandleFunc("POST /v1/rooms/{room}/messages", rt.handleAPI)
	mux.HandleFunc("GET /v1/rooms/{room}/messages", rt.handleAPI)
	mux.HandleFunc("GET /v1/rooms/{room}/presence", rt.handleAPI)
	mux.Handle("GET /{$}", demoPage)
	mux.Handle("GET /demo/", http.StripPrefix("/demo/", demoFiles))
	httpapi.Routes(mux, rt.ring, rt.metrics.reg, func() bool { return !rt.isClosed() })
	return mux
}

func (rt *Router) isClosed() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.closed
}

// watchOwners drops the owner legs on nodes the ring declares dead, so their sessions re-dial
// the rooms' new owners at once. A node that dies or is cut off without closing its sockets
// (a lost machine, a partition) leaves its legs silent, and without this its clients would wait
// for the leg's read deadline (2.5 ping intervals) before hearing from the room again.
func (rt *Router) watchOwners(ctx context.Context, changes <-chan *ring.Placement) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-changes:
			rt.mu.Lock()
			var gone []*session
			for s := range rt.sessions {
				if s.ownerGone(p) {
					gone = append(gone, s)
				}
			}
			var lost []*leg
			for _, l := range rt.legs {
				if l.ownerGone(p) {
					lost = append(lost, l)
				}
			}
			rt.mu.Unlock()
			for _, s := range gone {
				rt.log.Debug("owner declared dead: re-dialing the room's new owner", "room", s.room, "peer", *s.owner.Load())
				s.dropOwnerLeg()
			}
			for _, l := range lost {
				rt.log.Debug("owner declared dead: re-attaching the edge leg at the room's new owner", "room", l.room)
				l.drop()
			}
		}
	}
}

// handleResolve redirects to the room's owner, which answers its coordinates.
func (rt *Router) handleResolve(w http.ResponseWriter, r *http.Request) {
	room, o, ok := httpapi.Place(w, r, rt.ring.Placement(), rt.metrics.refused)
	if !ok {
		return
	}
	rt.metrics.redirects.Inc()
	w.Header().Set("Access-Control-Allow-Origin", "*")
	httpapi.Redirect(w, r, o.HTTPURL()+"/v1/rooms/"+room)
}

// Sessions is the number of open client connections, proxied or on edge legs.
func (rt *Router) Sessions() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return len(rt.sessions) + int(rt.edgeConns.Load())
}

// Legs is the number of open edge legs: one per room the router's clients are in.
func (rt *Router) Legs() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return len(rt.legs)
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
	legs := make([]*leg, 0, len(rt.legs))
	for _, l := range rt.legs {
		legs = append(legs, l)
	}
	rt.mu.Unlock()
	for _, l := range legs {
		l.shutdown()
	}
	rt.stop()
	rt.stats.Wait()
	rt.handlers.Wait()
	rt.api.CloseIdleConnections()
	rt.peers.Close()
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

// trackEdge counts in a client's goroutine on an edge leg unless the router is closing.
func (rt *Router) trackEdge() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed {
		return errClosed
	}
	rt.handlers.Add(1)
	rt.edgeConns.Add(1)
	return nil
}

func (rt *Router) untrackEdge() {
	rt.edgeConns.Add(-1)
	rt.handlers.Done()
}

func (rt *Router) untrack(s *session) {
	rt.mu.Lock()
	delete(rt.sessions, s)
	rt.mu.Unlock()
	rt.handlers.Done()
}

var errClosed = errors.New("router closed")
