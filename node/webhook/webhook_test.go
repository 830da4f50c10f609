package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/node/room"
)

// fresh is a pause watchdog that never finds the node paused.
type fresh struct{}

func (fresh) Stale() bool                      { return false }
func (fresh) AwaitFresh(context.Context) error { return nil }

func testMetrics() Metrics {
	return Metrics{
		Events:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "e"}, []string{"result"}),
		Batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "b"}, []string{"result"}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "l"}),
	}
}

// A receiver that refuses the first posts gets every event of every room, in each room's order,
// in signed batches no larger than asked; failures are retried with backoff, and what was
// delivered leaves the outboxes.
func TestDispatcherRetriesUntilDelivered(t *testing.T) {
	const secret = "s3cret"
	var mu sync.Mutex
	var got []room.Event
	var attempts []time.Time
	posts := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get(SignatureHeader) != Sign([]byte(secret), body) || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("signature %q, content type %q", r.Header.Get(SignatureHeader), r.Header.Get("Content-Type"))
		}
		mu.Lock()
		defer mu.Unlock()
		posts++
		attempts = append(attempts, time.Now())
		if posts <= 3 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		var b struct{ Events []room.Event }
		if err := json.Unmarshal(body, &b); err != nil || len(b.Events) == 0 || len(b.Events) > 4 {
			t.Errorf("a body of %d events (%v): %.200s", len(b.Events), err, body)
		}
		got = append(got, b.Events...)
	}))
	defer srv.Close()

	rooms := map[string]*room.Room{}
	var roomsMu sync.Mutex
	m := testMetrics()
	d := New(Config{URL: srv.URL, Secret: []byte(secret), BatchEvents: 4, BatchBytes: 1 << 20, Timeout: time.Second,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 80 * time.Millisecond, Concurrency: 2, Log: slog.New(slog.DiscardHandler), Metrics: m,
		Room: func(name string) Outbox {
			roomsMu.Lock()
			defer roomsMu.Unlock()
			if r := rooms[name]; r != nil {
				return r
			}
			return nil
		}})
	cfg := &room.Config{Node: "n1", HistoryCount: 100, HistoryBytes: 1 << 20, DedupeIDs: 10, MaxConns: 10, MaxSources: 1,
		PresenceAnnounceMax: 10, PresenceInterval: time.Second, HoldWrites: time.Second, SendQueue: 16, WriteTimeout: time.Second,
		PingInterval: time.Minute, Gate: fresh{}, Webhook: &room.Webhook{Types: map[string]bool{room.EventMessage: true}, MaxBytes: 1 << 20, Grace: time.Second, Notify: d.Notify},
		Metrics: room.Metrics{Messages: prometheus.NewCounter(prometheus.CounterOpts{Name: "m"}), Duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "d"}),
			Deliveries: prometheus.NewCounter(prometheus.CounterOpts{Name: "v"}), SlowConsumers: prometheus.NewCounter(prometheus.CounterOpts{Name: "s"})}}
	for _, name := range []string{"a", "b", "c"} {
		rooms[name] = room.New(cfg, name)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	const each = 10
	for i := range each {
		for _, r := range rooms {
			if _, _, err := r.PublishCommitted(t.Context(), "", fmt.Sprint("p", i), []byte(fmt.Sprint(i)), false); err != nil {
				t.Fatal(err)
			}
		}
	}
	wait.Eventually(t, 10*time.Second, "every room's outbox delivered", func() bool {
		for _, r := range rooms {
			if r.OutboxLen() > 0 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	got, attempts = slices.Clone(got), slices.Clone(attempts)
	mu.Unlock()
	next := map[string]uint64{}
	for _, e := range got {
		if e.Seq < next[e.Room] {
			t.Fatalf("room %s: seq %d after %d", e.Room, e.Seq, next[e.Room])
		}
		next[e.Room] = e.Seq
	}
	seen := map[string]bool{}
	for _, e := range got {
		seen[e.ID] = true
	}
	if len(seen) != 3*each {
		t.Fatalf("%d distinct events delivered, want %d", len(seen), 3*each)
	}
	if f := testutil.ToFloat64(m.Batches.WithLabelValues("failed")); f != 3 {
		t.Fatalf("%v failed batches counted, want 3", f)
	}
	if n := testutil.ToFloat64(m.Events.WithLabelValues("delivered")); n < 3*each {
		t.Fatalf("%v events counted delivered, want at least %d", n, 3*each)
	}
	if testutil.CollectAndCount(m.Latency) != 1 {
		t.Fatal("no delivery latency observed")
	}
	// The three failures were retried after a backoff, not at once.
	if gap := attempts[3].Sub(attempts[0]); gap < 10*time.Millisecond {
		t.Fatalf("three failures retried within %s", gap)
	}
}

// The backoff doubles from BackoffMin up to BackoffMax, jittered over each step's upper half.
func TestBackoffGrowsJitteredAndBounded(t *testing.T) {
	d := New(Config{BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second, Concurrency: 1})
	for attempt, step := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		step *= time.Millisecond
		lo, hi := time.Duration(1<<62), time.Duration(0)
		for range 200 {
			b := d.backoff(attempt + 1)
			lo, hi = min(lo, b), max(hi, b)
		}
		if lo < step/2 || hi > step || hi == lo {
			t.Fatalf("attempt %d: backoff in [%s, %s], want jittered within [%s, %s]", attempt+1, lo, hi, step/2, step)
		}
	}
}

func TestParseTypes(t *testing.T) {
	got, err := ParseTypes(" message, member.join ,")
	if err != nil || len(got) != 2 || !got["message"] || !got["member.join"] {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", " , ", "message,room.full"} {
		if _, err := ParseTypes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSignIsTheHexHMACOfTheBody(t *testing.T) {
	// HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), a published test vector.
	const want = "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
	if got := Sign([]byte("key"), []byte("The quick brown fox jumps over the lazy dog")); got != want {
		t.Fatalf("%s, want %s", got, want)
	}
}
