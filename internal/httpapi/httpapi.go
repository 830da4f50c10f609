// Package httpapi is the HTTP surface nodes and routers share: the endpoints every member
// answers alike, finding a room's owner for a request, redirects, WebSocket refusals and close
// frames, and gossiping a member's counters.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/internal/loop"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// Ring is what the shared surface reads of the membership.
type Ring interface {
	ID() string
	Placement() *ring.Placement
	Ready() bool
	UpdateMeta(ctx context.Context, change func(*ring.Meta)) error
}

// Routes registers what every member answers alike: GET /v1/cluster, /healthz, /readyz (ready
// when the ring is and serving says so) and /metrics from reg, and a JSON 404 for the rest.
func Routes(mux *http.ServeMux, r Ring, reg *prometheus.Registry, serving func() bool) {
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*") // public: pages served elsewhere may show it
		protocol.WriteJSON(w, r.Placement().Cluster(r.ID()))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		protocol.WriteJSON(w, map[string]string{"status": "ok", "node": r.ID()})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !serving() || !r.Ready() {
			protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady, "not ready: not joined, no node in the ring, or shutting down")
			return
		}
		protocol.WriteJSON(w, map[string]string{"status": "ready", "node": r.ID(), "ring": r.Placement().Version()})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		protocol.WriteError(w, http.StatusNotFound, protocol.CodeNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
}

// Place validates the request's {room} and finds its owner in p, answering the error itself (and
// counting it in refused) when it cannot.
func Place(w http.ResponseWriter, r *http.Request, p *ring.Placement, refused *prometheus.CounterVec) (string, ring.Member, bool) {
	room := r.PathValue("room")
	if err := protocol.ValidRoom(room); err != nil {
		refused.WithLabelValues("bad_room").Inc()
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRoom, err.Error())
		return "", ring.Member{}, false
	}
	o, ok := p.Owner(room)
	if !ok {
		refused.WithLabelValues("no_nodes").Inc()
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNoNodes, "no node in the ring owns rooms yet; try again shortly")
		return "", ring.Member{}, false
	}
	return room, o, true
}

// Redirect answers 307 to target, keeping the request's query.
func Redirect(w http.ResponseWriter, r *http.Request, target string) {
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	w.Header().Set("Location", target)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// NewUpgrader is the upgrader for client WebSockets. Clients mostly listen: a small read buffer
// (a publish of more is read in a few reads) keeps an idle connection cheap; big writes go
// through the pool. It accepts any origin: handlers check the configured origins themselves, to
// answer with a JSON error.
func NewUpgrader() websocket.Upgrader {
	return websocket.Upgrader{
		ReadBufferSize:  512,
		WriteBufferSize: 1024,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     func(*http.Request) bool { return true },
	}
}

// IsUpgrade reports whether r is a WebSocket upgrade, answering 400 itself (and counting it) when
// it is not.
func IsUpgrade(w http.ResponseWriter, r *http.Request, refused *prometheus.CounterVec) bool {
	if websocket.IsWebSocketUpgrade(r) {
		return true
	}
	refused.WithLabelValues("not_websocket").Inc()
	protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, "this endpoint takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)")
	return false
}

// RefuseUpgrade answers a client whose token failed (err from auth): the upgrade completes so a
// browser can read why, then the connection closes with 4401 (no valid token) or 4403 (not for
// this room). A request that is no upgrade gets the status and a JSON error.
func RefuseUpgrade(w http.ResponseWriter, r *http.Request, up *websocket.Upgrader, refused *prometheus.CounterVec, err error) {
	closeCode, status, code := auth.Refusal(err)
	refused.WithLabelValues(code).Inc()
	if !websocket.IsWebSocketUpgrade(r) {
		protocol.WriteError(w, status, code, err.Error())
		return
	}
	ws, uerr := up.Upgrade(w, r, nil)
	if uerr != nil {
		return
	}
	CloseWith(ws, closeCode, err.Error())
	ws.Close()
}

// CloseWith sends a close frame, best effort, its reason cut to fit a control frame.
func CloseWith(c *websocket.Conn, code int, text string) {
	msg := websocket.FormatCloseMessage(code, protocol.CloseReason(text))
	_ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
}

// GossipStats spreads a member's counters (for /v1/cluster and ctl status) every interval until
// ctx ends; stats writes them into the member's metadata.
func GossipStats(ctx context.Context, r Ring, every time.Duration, log *slog.Logger, stats func(*ring.Meta)) {
	loop.Every(ctx, every, func(time.Time) {
		uctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := r.UpdateMeta(uctx, stats); err != nil && ctx.Err() == nil {
			log.Debug("could not gossip stats", "err", err)
		}
	})
}

// NewRegistry is a member's metrics registry (one of its own, so several members can run in one
// process), holding what every member reports: the nodes in its placement, and the Go runtime's
// and the process's collectors.
func NewRegistry(r Ring) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "roost_ring_nodes", Help: "Nodes in this member's placement."},
			func() float64 { return float64(len(r.Placement().Nodes())) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Door is how a member lets a client's WebSocket in.
type Door struct {
	Limits   *limit.Door // browser origins and connections per client address
	Auth     *auth.Verifier
	Upgrader *websocket.Upgrader // for refusals a browser must be able to read
	Refused  *prometheus.CounterVec
	Log      *slog.Logger
}

// Admission is a client let in: its place within the per-address limit, and what its token
// says.
type Admission struct {
	Claims  *auth.Claims
	release func()
	handed  bool
}

// Hand gives the place to the connection's own goroutine, which calls the returned func when the
// connection ends; Close no longer releases it.
func (a *Admission) Hand() (release func()) {
	a.handed = true
	return a.release
}

// Close releases the place unless it was handed to the connection.
func (a *Admission) Close() {
	if !a.handed {
		a.release()
	}
}

// Admit lets a client's request to upgrade for room in: its origin and address within the
// limits, its token good for room, and the request an upgrade at all. It answers every refusal
// itself. The caller closes the admission when the handler ends, or hands it to the connection.
func (d *Door) Admit(w http.ResponseWriter, r *http.Request, room string) (*Admission, bool) {
	release, refused := d.Limits.Admit(w, r)
	if refused != "" {
		d.Refused.WithLabelValues(refused).Inc()
		return nil, false
	}
	claims, err := d.Auth.Check(auth.FromRequest(r), room, false)
	if err != nil {
		release()
		d.Log.Debug("client refused", "room", room, "reason", err.Error(), "peer", r.RemoteAddr)
		RefuseUpgrade(w, r, d.Upgrader, d.Refused, err)
		return nil, false
	}
	if !IsUpgrade(w, r, d.Refused) {
		release()
		return nil, false
	}
	return &Admission{Claims: claims, release: release}, true
}
