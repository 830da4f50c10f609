package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/roost-dev/roost/internal/httpapi"
	"github.com/roost-dev/roost/protocol"
)

// The server API (API.md, "Server API"): a router proxies each request to the room's owner, so a
// backend may use one address. The owner checks the credentials and answers; a node that
// answers 307 (members disagree about the ring for a moment) is followed with the method and
// body kept.

// newAPIClient is the client the router proxies server API requests with: keep-alive to the
// owners, TLS as for the owners' WebSockets, and at most MaxRedirects redirects followed.
func newAPIClient(cfg Config) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil // owners are cluster members: never through an environment proxy
	t.TLSClientConfig = cfg.DialTLS
	t.MaxIdleConnsPerHost = 64
	return &http.Client{
		Transport: t,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > cfg.MaxRedirects {
				return fmt.Errorf("more than %d redirects while the ring converges", cfg.MaxRedirects)
			}
			return nil
		},
	}
}

// handleAPI proxies a server API request to the room's owner and relays its answer.
func (rt *Router) handleAPI(w http.ResponseWriter, r *http.Request) {
	room, o, ok := httpapi.Place(w, r, rt.ring.Placement(), rt.metrics.refused)
	if !ok {
		return
	}
	var body []byte
	if r.Method == http.MethodPost {
		var err error
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, rt.cfg.MaxFrame))
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			rt.metrics.refused.WithLabelValues("too_big").Inc()
			protocol.WriteError(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge,
				"the body is larger than this router takes (--max-frame, "+strconv.FormatInt(rt.cfg.MaxFrame, 10)+" bytes)")
			return
		case err != nil:
			protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, "could not read the body: "+err.Error())
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), rt.cfg.APITimeout)
	defer cancel()
	target := o.HTTPURL() + r.URL.Path
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, target, bytes.NewReader(body))
	if err != nil {
		protocol.WriteError(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
		return
	}
	for _, k := range []string{"Authorization", "Content-Type", "User-Agent"} {
		if v := r.Header.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	req.Header.Set("X-Forwarded-For", rt.door.Hops.ForwardedFor(r))
	resp, err := rt.api.Do(req)
	if err != nil {
		rt.metrics.dials.WithLabelValues("error").Inc()
		rt.log.Warn("owner unreachable for a server API request", "room", room, "peer", o.ID, "err", err)
		protocol.WriteError(w, http.StatusBadGateway, protocol.CodeUnavailable,
			fmt.Sprintf("could not reach node %s, the owner of room %s; try again shortly (a publish with the same id)", o.ID, room))
		return
	}
	defer resp.Body.Close()
	for _, k := range []string{"Content-Type", "Retry-After", "Cache-Control"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}
