package router

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

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

// A client's pending keeps its unacked publishes within PendingBytes and the router's budget,
// refuses the next with `overloaded` (not sent), and gives everything back as acks come and when
// it ends.
func TestPendingPublishesAreBoundedInBytes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PendingBytes = 100 << 10
	rt := &Router{cfg: cfg, budget: limit.NewBudget(150<<10, nil),
		metrics: &metrics{refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"reason"})}}
	var s pending
	for i := range 3 { // 3 × 30 KiB fit in 100 KiB
		if refused := s.keep(rt, 0, websocket.TextMessage, publishFrame(t, "p"+string(rune('0'+i)), 30<<10)); refused != nil {
			t.Fatalf("publish %d refused: %+v", i, refused)
		}
	}
	refused := s.keep(rt, 0, websocket.TextMessage, publishFrame(t, "p3", 30<<10))
	if refused == nil || refused.Code != limit.CodeOverloaded || refused.ID != "p3" {
		t.Fatalf("a publish past PendingBytes: refusal %+v", refused)
	}
	if n := testutil.ToFloat64(rt.metrics.refused.WithLabelValues("overloaded")); n != 1 || len(s.list) != 3 {
		t.Fatalf("refusals counted %v, pending %d", n, len(s.list))
	}

	// Another client: the router's budget (150 KiB) has room for about 2 more.
	var other pending
	kept := 0
	for i := range 5 {
		if refused := other.keep(rt, 0, websocket.TextMessage, publishFrame(t, "q"+string(rune('0'+i)), 30<<10)); refused == nil {
			kept++
		}
	}
	if kept != 1 {
		t.Fatalf("a second client kept %d publishes in what the router's budget had left, want 1", kept)
	}

	s.answered(rt.budget, "p0", false)
	if refused := s.keep(rt, 0, websocket.TextMessage, publishFrame(t, "p4", 30<<10)); refused != nil {
		t.Fatalf("a publish after an ack made room: %+v", refused)
	}
	// Binary and id-less publishes are kept and bounded alike; a refusal names no id.
	if refused := s.keep(rt, 0, websocket.TextMessage, []byte(`{"type":"publish","data":"`+strings.Repeat("y", 60<<10)+`"}`)); refused == nil || refused.ID != "" {
		t.Fatalf("an id-less publish past the bound: %+v", refused)
	}
	if refused := s.keep(rt, 0, websocket.BinaryMessage, make([]byte, 60<<10)); refused == nil || refused.ID != "" {
		t.Fatalf("a binary publish past the bound: %+v", refused)
	}
	s.forget(rt.budget)
	other.forget(rt.budget)
	if got := rt.budget.Used(); got != 0 {
		t.Fatalf("forgotten clients still count %d bytes", got)
	}
	if bad := s.keep(rt, 0, websocket.TextMessage, []byte(`nope`)); bad != nil {
		t.Fatalf("a bad frame is the owner's to answer: %+v", bad)
	}
}

// The bound is in bytes only: many small publishes fit where the old count bound (4096) cut
// them off, and none of them is sent unkept.
func TestPendingHasNoCountBound(t *testing.T) {
	cfg := DefaultConfig()
	rt := &Router{cfg: cfg, budget: limit.NewBudget(0, nil),
		metrics: &metrics{refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"reason"})}}
	var s pending
	for i := range 10_000 {
		if refused := s.keep(rt, 0, websocket.TextMessage, []byte(`{"type":"publish","data":`+strconv.Itoa(i)+`}`)); refused != nil {
			t.Fatalf("publish %d refused: %+v", i, refused)
		}
	}
	if len(s.list) != 10_000 || s.bytes > cfg.PendingBytes {
		t.Fatalf("kept %d publishes costing %d", len(s.list), s.bytes)
	}
	// Answers without an id take the oldest id-less publish, in order.
	s.answered(rt.budget, "", false)
	if string(s.list[0].frame) != `{"type":"publish","data":1}` {
		t.Fatalf("after one id-less ack the oldest kept is %s", s.list[0].frame)
	}
	s.forget(rt.budget)
}
