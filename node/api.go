package node

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"unicode/utf8"

	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/internal/httpapi"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/node/handoff"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/protocol"
)

// The server API (API.md, "Server API"): application backends publish into rooms and read their
// history and presence over plain HTTP. The owner serves it; another node answers 307 to the
// owner's same path (method and body kept). A publish goes through the same commit path as a
// WebSocket publish (room.PublishCommitted), so its answer means what an ack means.

// APIAck is the answer to POST /v1/rooms/{room}/messages.
type APIAck struct {
	Room  string `json:"room"`
	Seq   uint64 `json:"seq"`
	ID    string `json:"id"`
	Epoch string `json:"epoch"`
}

// APIPresence is the answer to GET /v1/rooms/{room}/presence.
type APIPresence struct {
	Room    string   `json:"room"`
	Count   int      `json:"count"`
	Clients []string `json:"clients"`
}

// apiMoveAttempts bounds how often a publish follows its room to a new copy on this node.
const apiMoveAttempts = 3

// apiPlace answers for a request of the server API that this node does not own (307 to the
// owner's same path, keeping the query) and for one it cannot take now; it returns the room when
// this node is its owner.
func (n *Node) apiPlace(w http.ResponseWriter, r *http.Request) (string, bool) {
	if !n.fresh(w, r) {
		return "", false
	}
	name, o, ok := httpapi.Place(w, r, n.ring.Placement(), n.metrics.refused)
	if !ok {
		return "", false
	}
	if o.ID != n.id {
		n.metrics.redirects.Inc()
		httpapi.Redirect(w, r, o.HTTPURL()+r.URL.Path)
		return "", false
	}
	return name, true
}

// apiAuth checks a server API request's credentials for room: an API key (--api-key, every
// room, publishing allowed, as client ""), or a client token covering room (and allowing
// publishing when publish is set; its sub is the client). With neither auth nor API keys
// configured the API is open; with API keys but no token auth, a key is required. It answers
// the refusal itself.
func (n *Node) apiAuth(w http.ResponseWriter, r *http.Request, room string, publish bool) (client string, ok bool) {
	token := auth.FromRequest(r)
	if token != "" && n.apiKey(token) {
		return "", true
	}
	if n.cfg.Auth == nil {
		if len(n.cfg.APIKeys) == 0 {
			return "", true
		}
		n.metrics.refused.WithLabelValues(protocol.CodeUnauthorized).Inc()
		protocol.WriteError(w, http.StatusUnauthorized, protocol.CodeUnauthorized,
			"the server API needs Authorization: Bearer with one of this node's API keys (--api-key, --api-key-file)")
		return "", false
	}
	claims, err := n.cfg.Auth.Check(token, room, publish)
	if err != nil {
		_, status, code := auth.Refusal(err)
		n.metrics.refused.WithLabelValues(code).Inc()
		protocol.WriteError(w, status, code, err.Error())
		return "", false
	}
	return claims.Subject, true
}

// apiKey reports whether token is one of the configured API keys (compared in constant time).
func (n *Node) apiKey(token string) bool {
	found := 0
	for _, k := range n.cfg.APIKeys {
		found |= subtle.ConstantTimeCompare([]byte(token), []byte(k))
	}
	return found == 1
}

// apiBody is the JSON body of a server API publish.
type apiBody struct {
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
}

// handleAPIPublish serves POST /v1/rooms/{room}/messages.
func (n *Node) handleAPIPublish(w http.ResponseWriter, r *http.Request) {
	name, ok := n.apiPlace(w, r)
	if !ok {
		return
	}
	client, ok := n.apiAuth(w, r, name, true)
	if !ok {
		return
	}
	if !n.apiRate.Allow(n.door.Limits.Hops.Client(r)) {
		n.metrics.refused.WithLabelValues("api_rate").Inc()
		w.Header().Set("Retry-After", "1")
		protocol.WriteError(w, http.StatusTooManyRequests, protocol.CodeRateLimited,
			"your address publishes through the server API faster than this node allows (--api-publish-rate); send it again shortly, with the same id")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, n.cfg.MaxFrame))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			n.metrics.refused.WithLabelValues("too_big").Inc()
			protocol.WriteError(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge,
				"the body is larger than this node takes (--max-frame, "+strconv.FormatInt(n.cfg.MaxFrame, 10)+" bytes)")
			return
		}
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, "could not read the body: "+err.Error())
		return
	}
	id := r.URL.Query().Get("id") // a binary publish's id; a JSON body's own id wins
	data, binary := body, false
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/octet-stream" {
		binary = true
	} else {
		var b apiBody
		switch err := json.Unmarshal(body, &b); {
		case !utf8.Valid(body) || err != nil:
			n.metrics.refused.WithLabelValues(protocol.CodeBadJSON).Inc()
			why := "not valid UTF-8"
			if err != nil {
				why = err.Error()
			}
			protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadJSON,
				`the body is not a JSON object {"id":"...","data":<JSON>} (`+why+`); send Content-Type: application/octet-stream for a binary message`)
			return
		case len(b.Data) == 0 || string(b.Data) == "null" && !hasData(body):
			n.metrics.refused.WithLabelValues(protocol.CodeBadRequest).Inc()
			protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, `a publish needs "data" (any JSON value)`)
			return
		}
		if b.ID != "" {
			id = b.ID
		}
		data = b.Data
	}
	if len(id) > protocol.MaxIDLen {
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, "publish id is longer than 256 bytes")
		return
	}
	if id == "" {
		// Every server API publish is remembered by id, so that a retry after a move (the
		// redirect below carries it) or a lost answer is acked once, not delivered twice.
		id = newClientID()[2:]
	}
	if n.rooms.Get(name) == nil {
		if refused := n.door.Limits.AdmitRoom(w, r); refused != "" {
			n.metrics.refused.WithLabelValues(refused).Inc()
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.APITimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		rm, err := n.mover.Acquire(ctx, name)
		if !n.apiServed(w, r, name, id, err) {
			return
		}
		seq, epoch, err := rm.PublishCommitted(ctx, client, id, data, binary)
		switch {
		case err == nil:
			n.metrics.apiPublishes.Inc()
			protocol.WriteJSON(w, APIAck{Room: name, Seq: seq, ID: id, Epoch: epoch})
			return
		case errors.Is(err, room.ErrOverloaded):
			n.metrics.refused.WithLabelValues(limit.CodeOverloaded).Inc()
			w.Header().Set("Retry-After", "1")
			protocol.WriteError(w, http.StatusTooManyRequests, limit.CodeOverloaded, overloadedAPI)
			return
		case errors.Is(err, room.ErrClosed) && attempt < apiMoveAttempts && ctx.Err() == nil:
			continue // the room moved or closed meanwhile: look again (a redirect if it is elsewhere)
		}
		w.Header().Set("Retry-After", "1")
		protocol.WriteError(w, http.StatusServiceUnavailable, protocol.CodeNotReady,
			"the message was not acknowledged in time (the room is moving or its replicas are slow); send it again with the same id ("+id+")")
		return
	}
}

const overloadedAPI = "this node is near its memory limit (--memory-budget-mib, --max-memory-mib); the message was not delivered, send it again later"

// hasData reports whether a JSON object has a "data" member (which may be null).
func hasData(body []byte) bool {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(body, &m)
	_, ok := m["data"]
	return ok
}

// apiServed is served (see http.go) for the server API: a redirect goes to the HTTP path of
// where the room is, with the publish's id in the query so that its retry there is deduplicated.
func (n *Node) apiServed(w http.ResponseWriter, r *http.Request, name, id string, err error) bool {
	var held *handoff.HeldError
	redirect := func(base string) {
		q := r.URL.Query()
		if id != "" && r.Method == http.MethodPost && q.Get("id") == "" {
			q.Set("id", id)
			r.URL.RawQuery = q.Encode()
		}
		n.metrics.redirects.Inc()
		httpapi.Redirect(w, r, base+r.URL.Path)
	}
	switch {
	case err == nil:
		return true
	case errors.As(err, &held):
		redirect(held.To.HTTPURL())
		return false
	case errors.Is(err, ErrNotOwner):
		if o, _, ok := n.owner(name); ok {
			redirect(o.HTTPURL())
			return false
		}
	}
	return n.served(w, r, name, nil, err)
}

// apiRoom is the room a server API read is about, answering 404 no_room when this node (its
// owner) does not hold it.
func (n *Node) apiRoom(w http.ResponseWriter, r *http.Request) (*room.Room, bool) {
	name, ok := n.apiPlace(w, r)
	if !ok {
		return nil, false
	}
	if _, ok := n.apiAuth(w, r, name, false); !ok {
		return nil, false
	}
	rm := n.rooms.Get(name)
	if rm == nil {
		protocol.WriteError(w, http.StatusNotFound, protocol.CodeNoRoom,
			"room "+strconv.Quote(name)+" does not exist (yet): a publish creates it, and an empty room is forgotten after --room-idle")
		return nil, false
	}
	return rm, true
}

// handleAPIHistory serves GET /v1/rooms/{room}/messages?since&epoch&limit.
func (n *Node) handleAPIHistory(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	res, _, _, err := parseResumeQuery(url.Values{"since": q["since"], "epoch": q["epoch"]})
	limit := n.cfg.APIHistoryDefault
	if err == nil && q.Get("limit") != "" {
		limit, err = strconv.Atoi(q.Get("limit"))
		if err != nil || limit < 1 || limit > n.cfg.APIHistoryMax {
			err = errors.New("limit must be a whole number from 1 to " + strconv.Itoa(n.cfg.APIHistoryMax))
		}
	}
	if err != nil {
		n.metrics.refused.WithLabelValues("bad_request").Inc()
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
		return
	}
	rm, ok := n.apiRoom(w, r)
	if !ok {
		return
	}
	protocol.WriteJSON(w, rm.History(res, limit))
}

// handleAPIPresence serves GET /v1/rooms/{room}/presence.
func (n *Node) handleAPIPresence(w http.ResponseWriter, r *http.Request) {
	rm, ok := n.apiRoom(w, r)
	if !ok {
		return
	}
	count, clients := rm.Members(n.cfg.APIPresenceMax)
	protocol.WriteJSON(w, APIPresence{Room: rm.Name(), Count: count, Clients: clients})
}
