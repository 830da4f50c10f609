package router

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roost-dev/roost/limit"
)

func publishFrame(t *testing.T, id string, size int) []byte {
	b, err := json.Marshal(map[string]any{"type": "publish", "id": id, "data": strings.Repeat("x", size)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A session keeps a client's unacked publishes within PendingBytes and the router's budget,
// refuses the next with `overloaded` (not sent), and gives everything back as acks come and when
// it ends.
func TestPendingPublishesAreBoundedInBytes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PendingBytes = 100 << 10
	rt := &Router{cfg: cfg, budget: limit.NewBudget(150<<10, nil),
		metrics: &metrics{refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"reason"})}}
	s := &session{rt: rt}
	for i := range 3 { // 3 × 30 KiB fit in 100 KiB
		if msg, refused := s.keep(publishFrame(t, "p"+string(rune('0'+i)), 30<<10)); refused != nil || msg == nil {
			t.Fatalf("publish %d refused: %+v", i, refused)
		}
	}
	msg, refused := s.keep(publishFrame(t, "p3", 30<<10))
	if msg != nil || refused == nil || refused.Code != limit.CodeOverloaded || refused.ID != "p3" {
		t.Fatalf("a publish past PendingBytes: sent %v, refusal %+v", msg != nil, refused)
	}
	if n := testutil.ToFloat64(rt.metrics.refused.WithLabelValues("overloaded")); n != 1 || len(s.pending) != 3 {
		t.Fatalf("refusals counted %v, pending %d", n, len(s.pending))
	}

	// Another session: the router's budget (150 KiB) has room for about 2 more.
	other := &session{rt: rt}
	kept := 0
	for i := range 5 {
		if _, refused := other.keep(publishFrame(t, "q"+string(rune('0'+i)), 30<<10)); refused == nil {
			kept++
		}
	}
	if kept != 1 {
		t.Fatalf("a second session kept %d publishes in what the router's budget had left, want 1", kept)
	}

	s.acked("p0")
	if msg, refused := s.keep(publishFrame(t, "p4", 30<<10)); refused != nil || msg == nil {
		t.Fatalf("a publish after an ack made room: %+v", refused)
	}
	// An id-less publish gets one from the router, but a refusal names none the client did not give.
	if _, refused := s.keep([]byte(`{"type":"publish","data":"` + strings.Repeat("y", 60<<10) + `"}`)); refused == nil || refused.ID != "" {
		t.Fatalf("an id-less publish past the bound: %+v", refused)
	}
	s.forgetPending()
	other.forgetPending()
	if got := rt.budget.Used(); got != 0 {
		t.Fatalf("ended sessions still count %d bytes", got)
	}
	if _, bad := s.keep([]byte(`nope`)); bad != nil {
		t.Fatalf("a bad frame is the owner's to answer: %+v", bad)
	}
}
