package quorum

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/ring"
	"github.com/roost-dev/roost/ring/ringtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMinority(t *testing.T) {
	now := time.Now()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	const together, hold = 500 * time.Millisecond, 30 * time.Second
	for _, c := range []struct {
		name    string
		reached int
		lost    []time.Time
		want    bool
	}{
		{"nobody lost", 3, nil, false},
		{"cut off from both peers of three", 1, []time.Time{ago(time.Second), ago(1100 * time.Millisecond)}, true},
		{"one peer of two dies: a tie goes on", 1, []time.Time{ago(time.Second)}, false},
		{"peers died one by one, the last alone", 1, []time.Time{ago(time.Second), ago(4 * time.Second), ago(8 * time.Second)}, false},
		{"two of five cut off, the three go on", 3, []time.Time{ago(time.Second), ago(time.Second)}, false},
		{"three of five cut off together, the two stop", 2, []time.Time{ago(time.Second), ago(time.Second), ago(1200 * time.Millisecond)}, true},
		{"a loss chained over rounds, 50 nodes", 1, chain(now, 49, 250*time.Millisecond), true},
		{"past hold the minority carries on", 1, []time.Time{ago(31 * time.Second), ago(31 * time.Second)}, false},
	} {
		if got := Minority(c.reached, c.lost, now, together, hold); got != c.want {
			t.Errorf("%s: Minority = %v, want %v", c.name, got, c.want)
		}
	}
}

func chain(now time.Time, n int, step time.Duration) []time.Time {
	var out []time.Time
	for i := range n {
		out = append(out, now.Add(-time.Second-time.Duration(i)*step))
	}
	return out
}

// A node reaching both its peers takes writes; once neither answers, within one window, it is
// in a minority; when one answers again, it is not.
func TestTrackerFindsItselfCutOff(t *testing.T) {
	peers := peer.New(nil, nil, 1<<20, nil)
	defer peers.Close()
	up := map[string]*atomic.Bool{"n2": {}, "n3": {}}
	var members []ring.Member
	members = append(members, ring.Member{ID: "n1", State: ring.StateAlive, Meta: ring.Meta{Role: ring.RoleNode, HTTP: "127.0.0.1:1"}})
	var servers []*httptest.Server
	for _, id := range []string{"n2", "n3"} {
		up[id].Store(true)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !up[id].Load() {
				time.Sleep(300 * time.Millisecond) // past the call's deadline: silent
			}
			w.WriteHeader(http.StatusOK)
		}))
		servers = append(servers, srv)
		members = append(members, ring.Member{ID: id, State: ring.StateAlive, Meta: ring.Meta{Role: ring.RoleNode, HTTP: srv.Listener.Addr().String()}})
	}
	defer func() {
		for _, s := range servers {
			s.CloseClientConnections()
			s.Close()
		}
	}()
	var changes []bool
	tr := New(Config{Ring: ringtest.New("n1", ring.NewPlacement(members, ring.DefaultPlacementConfig())), Peers: peers,
		Interval: 50 * time.Millisecond, Hold: time.Minute, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Changed: func(m bool) { changes = append(changes, m) }})
	tr.round(t.Context())
	if !tr.Writable() || tr.Reached() != 2 {
		t.Fatalf("reaching both peers: writable %v, reached %d", tr.Writable(), tr.Reached())
	}
	up["n2"].Store(false)
	up["n3"].Store(false)
	for start := time.Now(); tr.Writable(); tr.round(t.Context()) {
		if time.Since(start) > 2*time.Second {
			t.Fatal("still writable 2 s after both peers went silent")
		}
	}
	up["n2"].Store(true)
	tr.round(t.Context())
	if !tr.Writable() {
		t.Fatal("one peer of two answers again, yet still in a minority")
	}
	if len(changes) != 2 || !changes[0] || changes[1] {
		t.Fatalf("told %v, want [true false]", changes)
	}
}

// TestAnswersAsksADeadMember: a member this node's ring calls dead is still asked at its
// address, and one that answers is reported alive (and counted as heard); a member nothing
// answers for is not; outcomes within an Interval are reused.
func TestAnswersAsksADeadMember(t *testing.T) {
	peers := peer.New(nil, nil, 1<<20, nil)
	defer peers.Close()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	gone := httptest.NewServer(http.NotFoundHandler())
	goneAddr := gone.Listener.Addr().String()
	gone.Close() // nothing listens there now
	members := []ring.Member{
		{ID: "n1", State: ring.StateAlive, Meta: ring.Meta{Role: ring.RoleNode, HTTP: "127.0.0.1:1"}},
		{ID: "n2", State: ring.StateDead, Meta: ring.Meta{Role: ring.RoleNode, HTTP: srv.Listener.Addr().String()}},
		{ID: "n3", State: ring.StateDead, Meta: ring.Meta{Role: ring.RoleNode, HTTP: goneAddr}},
	}
	tr := New(Config{Ring: ringtest.New("n1", ring.NewPlacement(members, ring.DefaultPlacementConfig())), Peers: peers,
		Interval: time.Second, Hold: time.Minute, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if !tr.Answers(t.Context(), "n2") {
		t.Fatal("a member the ring calls dead but that answers was not reported answering")
	}
	if !tr.Heard("n2") {
		t.Error("an answer to Answers did not count as heard")
	}
	if tr.Answers(t.Context(), "n3") || tr.Answers(t.Context(), "n4") {
		t.Fatal("a member nothing answers for (or one the ring does not know) was reported answering")
	}
	tr.Answers(t.Context(), "n2")
	if n := calls.Load(); n != 1 {
		t.Errorf("%d calls to n2 within one Interval, want 1 (the outcome reused)", n)
	}
}
