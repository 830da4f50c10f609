package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/protocol"
)

// TestMemoryBudgetRefusesPublishes: past MemoryBudget, a WebSocket publish gets an error frame
// `overloaded` with its id and is not delivered, a stream source's frame ERR overloaded; what
// was acked before is all delivered, and the connection stays open.
func TestMemoryBudgetRefusesPublishes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MemoryBudget = 1 << 20
	n := startNode(t, "n1", cfg)
	c := dial(t, n.addr, "full", nil)
	big := strings.Repeat("x", 100<<10)
	const sent = 15
	for i := range sent {
		c.publish(fmt.Sprintf("p%d", i), big)
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	wait("every publish answered", func() bool { return len(c.frames(protocol.TypeAck))+len(c.frames(protocol.TypeError)) == sent })
	acks, errs := c.frames(protocol.TypeAck), c.frames(protocol.TypeError)
	if len(acks) == 0 || len(errs) == 0 {
		t.Fatalf("%d acks, %d refusals of %d publishes of 100 KiB into a 1 MiB budget", len(acks), len(errs), sent)
	}
	for i, a := range acks {
		if a.Seq != uint64(i+1) || a.ID != fmt.Sprintf("p%d", i) {
			t.Fatalf("ack %d: %+v", i, a)
		}
	}
	for _, e := range errs {
		if e.Code != limit.CodeOverloaded || e.ID == "" || !strings.Contains(e.Error, "memory") {
			t.Fatalf("refusal %+v", e)
		}
	}
	wait("every acked message delivered", func() bool { return len(c.frames(protocol.TypeMessage)) == len(acks) })
	if got := testutil.ToFloat64(n.metrics.refused.WithLabelValues("overloaded")); got != float64(len(errs)) {
		t.Fatalf("roost_refused_total{reason=overloaded} = %v, want %d", got, len(errs))
	}

	// A stream source into the same room: its frame is held a second, then refused.
	addr := startIngest(t, n)
	src, br, hello := sourceHello(t, addr, `{"room":"full"}`+"\n")
	if !strings.HasPrefix(hello, "OK ") {
		t.Fatalf("source hello: %q", hello)
	}
	if err := writeFrame(src, make([]byte, 200<<10)); err != nil {
		t.Fatal(err)
	}
	_ = src.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "ERR overloaded ") || !strings.Contains(line, "took 0 frames") {
		t.Fatalf("a frame past the budget: %q", line)
	}

	// The connection is still served: a small publish fits in what is left.
	c.publish("small", "hi")
	wait("the small publish acked", func() bool {
		for _, a := range c.frames(protocol.TypeAck) {
			if a.ID == "small" {
				return true
			}
		}
		return false
	})
}
