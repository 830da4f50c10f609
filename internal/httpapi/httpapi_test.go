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
