// Package httpapi is the HTTP surface nodes and routers share: the endpoints every member
// answers alike, finding a room's owner for a request, redirects, WebSocket refusals and close
// frames, and gossiping a member's counters.
package httpapi

import (
	"context"
	"encoding/base64"
	"log/slog"
	"net/http"
	"strings"
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

// IsUpgrade reports whether r is a WebSocket opening handshake the upgrader will take, answering
// it itself (and counting it in refused) when it is not: 400 JSON (405 for a method other than
// GET). It makes the checks gorilla's Upgrade makes (see Handshake), so a member can do everything
// an upgrade costs it — a room created, an owner dialed — only for a request that will upgrade.
func IsUpgrade(w http.ResponseWriter, r *http.Request, refused *prometheus.CounterVec) bool {
	status, why := Handshake(r)
	if status == 0 {
		return true
	}
	reason := "bad_handshake"
	if !websocket.IsWebSocketUpgrade(r) {
		reason = "not_websocket"
	}
	refused.WithLabelValues(reason).Inc()
	if status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodGet)
	}
	protocol.WriteError(w, status, protocol.CodeBadRequest, why)
	return false
}

// Handshake checks r as gorilla's Upgrade does before it takes the connection over (RFC 6455
// §4.2.1): Connection names upgrade, Upgrade names websocket, the method is GET,
// Sec-WebSocket-Version names 13 and Sec-WebSocket-Key is 16 bytes in base64. It returns 0 when
// r passes, else the status gorilla would answer and why, as a sentence for the client.
// (TestHandshakeAgreesWithGorilla holds the two to the same verdicts.)
func Handshake(r *http.Request) (status int, why string) {
	const hint = "; this endpoint takes a WebSocket upgrade (RFC 6455), as a WebSocket client library sends it"
	switch {
	case !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket"):
		return http.StatusBadRequest, "not a WebSocket upgrade: want Connection: Upgrade and Upgrade: websocket" + hint
	case r.Method != http.MethodGet:
		return http.StatusMethodNotAllowed, "a WebSocket upgrade must be a GET, not " + r.Method + hint
	case !headerHasToken(r.Header, "Sec-Websocket-Version", "13"):
		return http.StatusBadRequest, "unsupported WebSocket version: want Sec-WebSocket-Version: 13" + hint
	}
	if key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-Websocket-Key")); err != nil || len(key) != 16 {
		return http.StatusBadRequest, "missing or malformed Sec-WebSocket-Key: want 16 random bytes in base64" + hint
	}
	return 0, ""
}

// headerHasToken reports whether a comma-separated list of tokens in one of h's name headers
// holds value (ASCII case-insensitive). A header value that is not such a list counts for
// nothing, as in gorilla's own parsing.
func headerHasToken(h http.Header, name, value string) bool {
	for _, v := range h.Values(name) {
		for {
			v = strings.TrimLeft(v, " \t")
			i := strings.IndexFunc(v, func(c rune) bool { return !isTokenChar(c) })
			if i < 0 {
				i = len(v)
			}
			tok, rest := v[:i], strings.TrimLeft(v[i:], " \t")
			if tok == "" || rest != "" && rest[0] != ',' {
				break // not a token list: the next header
			}
			if strings.EqualFold(tok, value) {
				return true
			}
			if rest == "" {
				break
			}
			v = rest[1:]
		}
	}
	return false
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110 §5.6.2).
func isTokenChar(c rune) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return c < 0x80 && strings.ContainsRune("!#$%&'*+-.^_`|~", c)
}

// RefuseUpgrade answers a client whose token failed (err from auth): the upgrade completes so a
// browser can read why, then the connection closes with 4401 (no valid token) or 4403 (not for
// this room). A request that is no upgrade gets the status and a JSON error.
func RefuseUpgrade(w http.ResponseWriter, r *http.Request, up *websocket.Upgrader, refused *prometheus.CounterVec, err error) {
	closeCode, status, code := auth.Refusal(err)
	refused.WithLabelValues(code).Inc()
	if st, _ := Handshake(r); st != 0 { // no upgrade gorilla would take: a plain answer
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

// Admission is a client let in: its place among the handshakes in progress and within the
// per-address limit, and what its token says.
type Admission struct {
	Claims    *auth.Claims
	handshake func()
	release   func()
	handed    bool
}

// Hand gives the place to the connection's own goroutine, which calls the returned func when the
// connection ends; Close no longer releases it. The handshake is over: its place is released.
func (a *Admission) Hand() (release func()) {
	a.handed = true
	a.handshake()
	return a.release
}

// Close releases the places unless they were handed to the connection.
func (a *Admission) Close() {
	if !a.handed {
		a.handshake()
		a.release()
	}
}

// Admit lets a client's request to upgrade for room in: its origin and address within the
// limits, its token good for room, and the request a handshake the upgrader will take (IsUpgrade),
// so that what the caller does next for it — create a room, dial an owner — is for a client that
// will be in. It answers every refusal itself. The caller closes the admission when the handler ends, or hands it to the connection.
func (d *Door) Admit(w http.ResponseWriter, r *http.Request, room string) (*Admission, bool) {
	handshake, release, refused := d.Limits.Admit(w, r)
	if refused != "" {
		d.Refused.WithLabelValues(refused).Inc()
		return nil, false
	}
	adm := &Admission{handshake: handshake, release: release}
	claims, err := d.Auth.Check(auth.FromRequest(r), room, false)
	if err != nil {
		adm.Close()
		d.Log.Debug("client refused", "room", room, "reason", err.Error(), "peer", r.RemoteAddr)
		RefuseUpgrade(w, r, d.Upgrader, d.Refused, err)
		return nil, false
	}
	if !IsUpgrade(w, r, d.Refused) {
		adm.Close()
		return nil, false
	}
	adm.Claims = claims
	return adm, true
}
