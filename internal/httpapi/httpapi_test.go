package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

type fakeRing struct {
	p     *ring.Placement
	ready bool
}

func (f *fakeRing) ID() string                                         { return "n1" }
func (f *fakeRing) Placement() *ring.Placement                         { return f.p }
func (f *fakeRing) Ready() bool                                        { return f.ready }
func (f *fakeRing) UpdateMeta(context.Context, func(*ring.Meta)) error { return nil }

func newRing(nodes ...string) *fakeRing {
	var ms []ring.Member
	for _, id := range nodes {
		ms = append(ms, ring.Member{ID: id, State: ring.StateAlive, Meta: ring.Meta{Role: ring.RoleNode, HTTP: id + ":9000"}})
	}
	return &fakeRing{p: ring.NewPlacement(ms, ring.DefaultPlacementConfig()), ready: len(nodes) > 0}
}

func errorCode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var e protocol.Error
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("body %q is not a JSON error: %v", rec.Body, err)
	}
	return e.Code
}

func TestPlace(t *testing.T) {
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "r"}, []string{"reason"})
	place := func(r *fakeRing, room string) (*httptest.ResponseRecorder, ring.Member, bool) {
		mux := http.NewServeMux()
		var o ring.Member
		var ok bool
		mux.HandleFunc("GET /v1/rooms/{room}", func(w http.ResponseWriter, req *http.Request) {
			_, o, ok = Place(w, req, r.Placement(), refused)
		})
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/rooms/"+room, nil))
		return rec, o, ok
	}
	if rec, _, ok := place(newRing("n1"), "bad%20room"); ok || rec.Code != 400 || errorCode(t, rec) != protocol.CodeBadRoom {
		t.Fatalf("bad room: %d %s", rec.Code, rec.Body)
	}
	if rec, _, ok := place(newRing(), "lobby"); ok || rec.Code != 503 || errorCode(t, rec) != protocol.CodeNoNodes {
		t.Fatalf("no nodes: %d %s", rec.Code, rec.Body)
	}
	if _, o, ok := place(newRing("n1", "n2"), "lobby"); !ok || (o.ID != "n1" && o.ID != "n2") {
		t.Fatalf("owner %+v %v", o, ok)
	}
	if testutil.ToFloat64(refused.WithLabelValues("bad_room")) != 1 || testutil.ToFloat64(refused.WithLabelValues("no_nodes")) != 1 {
		t.Fatal("refusals not counted by reason")
	}
}

func TestRedirectKeepsTheQuery(t *testing.T) {
	rec := httptest.NewRecorder()
	Redirect(rec, httptest.NewRequest("GET", "/v1/rooms/a/ws?since=3&epoch=e", nil), "ws://n2:9000/v1/rooms/a/ws")
	if rec.Code != 307 || rec.Header().Get("Location") != "ws://n2:9000/v1/rooms/a/ws?since=3&epoch=e" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
}

func TestRoutes(t *testing.T) {
	r := newRing("n1")
	serving := true
	mux := http.NewServeMux()
	Routes(mux, r, NewRegistry(r), func() bool { return serving })
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec
	}
	if rec := get("/readyz"); rec.Code != 200 {
		t.Fatalf("readyz while serving: %d", rec.Code)
	}
	serving = false
	if rec := get("/readyz"); rec.Code != 503 || errorCode(t, rec) != protocol.CodeNotReady {
		t.Fatalf("readyz while not serving: %d %s", rec.Code, rec.Body)
	}
	if rec := get("/healthz"); rec.Code != 200 {
		t.Fatalf("healthz: %d", rec.Code)
	}
	if rec := get("/nothing/here"); rec.Code != 404 || errorCode(t, rec) != protocol.CodeNotFound {
		t.Fatalf("unknown path: %d %s", rec.Code, rec.Body)
	}
	if rec := get("/v1/cluster"); rec.Code != 200 || rec.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("cluster: %d %v", rec.Code, rec.Header())
	}
	if rec := get("/metrics"); rec.Code != 200 || !strings.Contains(rec.Body.String(), "roost_ring_nodes 1") {
		t.Fatalf("metrics: %d", rec.Code)
	}
}

// handshakeCases are opening handshakes good and bad, each a change to a good one.
var handshakeCases = []struct {
	name   string
	method string
	change func(h http.Header)
}{
	{"good", "GET", func(http.Header) {}},
	{"head", "HEAD", func(http.Header) {}},
	{"post", "POST", func(http.Header) {}},
	{"no key", "GET", func(h http.Header) { h.Del("Sec-WebSocket-Key") }},
	{"empty key", "GET", func(h http.Header) { h.Set("Sec-WebSocket-Key", "") }},
	{"short key", "GET", func(h http.Header) { h.Set("Sec-WebSocket-Key", "c2hvcnQ=") }},
	{"key not base64", "GET", func(h http.Header) { h.Set("Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!!!=") }},
	{"key of 17 bytes", "GET", func(h http.Header) { h.Set("Sec-WebSocket-Key", "MDEyMzQ1Njc4OWFiY2RlZmc=") }},
	{"no version", "GET", func(h http.Header) { h.Del("Sec-WebSocket-Version") }},
	{"version 8", "GET", func(h http.Header) { h.Set("Sec-WebSocket-Version", "8") }},
	{"versions 8, 13", "GET", func(h http.Header) { h.Set("Sec-WebSocket-Version", "8, 13") }},
	{"version 13 in a second header", "GET", func(h http.Header) { h["Sec-Websocket-Version"] = []string{"8", "13"} }},
	{"version garbage then 13", "GET", func(h http.Header) { h.Set("Sec-WebSocket-Version", "foo bar, 13") }},
	{"version 13;x", "GET", func(h http.Header) { h.Set("Sec-WebSocket-Version", "13;x") }},
	{"version 130", "GET", func(h http.Header) { h.Set("Sec-WebSocket-Version", "130") }},
	{"version with spaces", "GET", func(h http.Header) { h.Set("Sec-WebSocket-Version", " \t13 ") }},
	{"no connection", "GET", func(h http.Header) { h.Del("Connection") }},
	{"connection keep-alive, Upgrade", "GET", func(h http.Header) { h.Set("Connection", "keep-alive, Upgrade") }},
	{"connection upgraded", "GET", func(h http.Header) { h.Set("Connection", "upgraded") }},
	{"no upgrade", "GET", func(h http.Header) { h.Del("Upgrade") }},
	{"upgrade h2c", "GET", func(h http.Header) { h.Set("Upgrade", "h2c") }},
	{"upgrade WebSocket", "GET", func(h http.Header) { h.Set("Upgrade", "WebSocket") }},
	{"nothing", "GET", func(h http.Header) {
		for k := range h {
			h.Del(k)
		}
	}},
}

func handshakeRequest(method string, change func(http.Header)) *http.Request {
	r := httptest.NewRequest(method, "/v1/rooms/x/ws", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	change(r.Header)
	return r
}

// TestHandshakeAgreesWithGorilla: Handshake passes exactly the requests gorilla's Upgrade takes,
// and refuses the others with the status gorilla would answer. Upgrade is run against a
// ResponseWriter that cannot be hijacked, which it finds out only after all its checks.
func TestHandshakeAgreesWithGorilla(t *testing.T) {
	up := NewUpgrader()
	for _, c := range handshakeCases {
		rec := httptest.NewRecorder()
		_, err := up.Upgrade(rec, handshakeRequest(c.method, c.change), nil)
		gorillaTakes := err != nil && strings.Contains(err.Error(), "Hijacker")
		status, why := Handshake(handshakeRequest(c.method, c.change))
		switch {
		case gorillaTakes && status != 0:
			t.Errorf("%s: gorilla takes it, Handshake refuses it (%d %s)", c.name, status, why)
		case !gorillaTakes && status == 0:
			t.Errorf("%s: gorilla refuses it (%d %v), Handshake passes it", c.name, rec.Code, err)
		case !gorillaTakes && status != rec.Code:
			t.Errorf("%s: Handshake answers %d, gorilla %d", c.name, status, rec.Code)
		case status != 0 && why == "":
			t.Errorf("%s: refused without a reason", c.name)
		}
		if c.name == "good" && !gorillaTakes {
			t.Fatalf("the good handshake: gorilla answered %d %v; the test no longer reaches gorilla's hijack", rec.Code, err)
		}
	}
}

// TestIsUpgradeAnswersJSON: a request that would fail the upgrade is answered 400 (405 for the
// method) with a JSON error, and counted.
func TestIsUpgradeAnswersJSON(t *testing.T) {
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "refused"}, []string{"reason"})
	for _, c := range []struct {
		name, method string
		change       func(http.Header)
		status       int
		reason       string
	}{
		{"no key", "GET", func(h http.Header) { h.Del("Sec-WebSocket-Key") }, 400, "bad_handshake"},
		{"version 8", "GET", func(h http.Header) { h.Set("Sec-WebSocket-Version", "8") }, 400, "bad_handshake"},
		{"plain GET", "GET", func(h http.Header) { h.Del("Upgrade"); h.Del("Connection") }, 400, "not_websocket"},
		{"HEAD", "HEAD", func(http.Header) {}, 405, "bad_handshake"},
	} {
		before := testutil.ToFloat64(refused.WithLabelValues(c.reason))
		rec := httptest.NewRecorder()
		if IsUpgrade(rec, handshakeRequest(c.method, c.change), refused) {
			t.Errorf("%s: taken for an upgrade", c.name)
			continue
		}
		if rec.Code != c.status || errorCode(t, rec) != protocol.CodeBadRequest {
			t.Errorf("%s: answered %d %s", c.name, rec.Code, rec.Body)
		}
		if got := testutil.ToFloat64(refused.WithLabelValues(c.reason)) - before; got != 1 {
			t.Errorf("%s: refused{reason=%s} went up by %v", c.name, c.reason, got)
		}
	}
	rec := httptest.NewRecorder()
	if !IsUpgrade(rec, handshakeRequest("GET", func(http.Header) {}), refused) || rec.Body.Len() != 0 {
		t.Errorf("a good handshake: refused, %d %s", rec.Code, rec.Body)
	}
}
