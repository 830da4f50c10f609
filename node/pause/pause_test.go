package pause

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/ring"
	"github.com/roost-dev/roost/ring/ringtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func node(id, http string) ring.Member {
	return ring.Member{ID: id, State: ring.StateAlive, Meta: ring.Meta{Role: ring.RoleNode, HTTP: http}}
}

// watched is a watchdog on a clock the test jumps, and what it decided.
type watched struct {
	*Watchdog
	ahead   atomic.Int64
	dropped atomic.Value // why, once dropped
	pauses  *prometheus.CounterVec
}

func newWatched(t *testing.T, r Ring, peers *peer.Client) *watched {
	w := &watched{pauses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "p"}, []string{"outcome"})}
	start := time.Now()
	w.Watchdog = New(Config{
		StaleAfter: 100 * time.Millisecond, Quarantine: 5 * time.Second, Ring: r, Peers: peers,
		Log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Held: func() int { return 1 }, Drop: func(_ time.Duration, why string) { w.dropped.Store(why) },
		Pauses: w.pauses, Decision: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "d"}),
		Clock: func() time.Duration { return time.Since(start) + time.Duration(w.ahead.Load()) },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// serve answers the takeover question for w on a loopback server.
func serve(t *testing.T, w *Watchdog, peers *peer.Client) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+TakeoverPath("{node}"), func(rw http.ResponseWriter, r *http.Request) {
		if _, err := peers.Verify(r, r.Host); err != nil {
			http.Error(rw, err.Error(), http.StatusUnauthorized)
			return
		}
		w.ServeTakeover(rw, r)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// decide pauses a, then checks it serves nothing until it has decided, and returns the outcome.
func decide(t *testing.T, a *watched) string {
	t.Helper()
	a.ahead.Add(int64(time.Second))
	if !a.Stale() {
		t.Fatal("not stale right after the pause")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := a.AwaitFresh(ctx); err != nil {
		t.Fatalf("no decision: %v", err)
	}
	if !a.Quarantined() {
		t.Fatal("no quarantine after the pause")
	}
	switch {
	case testutil.ToFloat64(a.pauses.WithLabelValues("kept")) == 1:
		return "kept"
	case testutil.ToFloat64(a.pauses.WithLabelValues("dropped")) == 1:
		if why, _ := a.dropped.Load().(string); why == "" {
			t.Fatal("counted dropped, but Drop was not called")
		}
		return "dropped"
	}
	return "none"
}

func TestAfterAPause(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	pair := func(t *testing.T) (a, b *watched, bSrv *httptest.Server) {
		peers := peer.New(key, nil, 1<<20, nil)
		t.Cleanup(peers.Close)
		ra, rb := ringtest.New("n1", nil), ringtest.New("n2", nil)
		a, b = newWatched(t, ra, peers), newWatched(t, rb, peers)
		aSrv, bSrv := serve(t, a.Watchdog, peers), serve(t, b.Watchdog, peers)
		p := ring.NewPlacement([]ring.Member{node("n1", aSrv.Listener.Addr().String()), node("n2", bSrv.Listener.Addr().String())},
			ring.DefaultPlacementConfig())
		ra.Set(p)
		rb.Set(p)
		return a, b, bSrv
	}
	t.Run("a peer took over: the rooms go", func(t *testing.T) {
		a, b, _ := pair(t)
		b.NoteTakeover([]string{"n1"})
		if got := decide(t, a); got != "dropped" {
			t.Fatalf("outcome %s, want dropped", got)
		}
		if why := a.dropped.Load().(string); why != "peer n2 took over from this node during the pause" {
			t.Fatalf("why: %s", why)
		}
	})
	t.Run("no peer took over: the rooms stay", func(t *testing.T) {
		a, _, _ := pair(t)
		if got := decide(t, a); got != "kept" {
			t.Fatalf("outcome %s, want kept", got)
		}
	})
	t.Run("a peer cannot be asked: the rooms go", func(t *testing.T) {
		a, _, bSrv := pair(t)
		bSrv.Close()
		if got := decide(t, a); got != "dropped" {
			t.Fatalf("outcome %s, want dropped", got)
		}
	})
	t.Run("alone: nobody could take over", func(t *testing.T) {
		r := ringtest.New("n1", ring.NewPlacement([]ring.Member{node("n1", "127.0.0.1:1")}, ring.DefaultPlacementConfig()))
		a := newWatched(t, r, peer.New(nil, nil, 1<<20, nil))
		if got := decide(t, a); got != "kept" {
			t.Fatalf("outcome %s, want kept", got)
		}
	})
}

// A node that was not paused is never stale and waits for nothing.
func TestNoPauseNoWait(t *testing.T) {
	r := ringtest.New("n1", ring.NewPlacement(nil, ring.DefaultPlacementConfig()))
	a := newWatched(t, r, peer.New(nil, nil, 1<<20, nil))
	for range 20 {
		if a.Stale() || a.Quarantined() || a.AwaitFresh(t.Context()) != nil || a.AwaitQuarantine(t.Context()) != nil {
			t.Fatal("a running node is stale or quarantined")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
