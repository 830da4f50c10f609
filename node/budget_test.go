package node

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roost-dev/roost/internal/wait"
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

// TestHandoffPastTheBudgetIsTaken: a node whose budget has no room for the rooms the ring gives
// it takes them all the same (refusing would leave them to be started afresh, their state lost),
// counts them, and refuses their growth, not what they hold.
func TestHandoffPastTheBudgetIsTaken(t *testing.T) {
	a := startNode(t, "n1", DefaultConfig())
	const rooms = 24
	big := strings.Repeat("x", 100<<10)
	for i := range rooms {
		c := dial(t, a.addr, fmt.Sprintf("kept-%d", i), nil)
		c.publish("m", big)
		c.waitFrames(protocol.TypeAck, 1)
		c.ws.Close()
	}
	cfg := DefaultConfig()
	cfg.MemoryBudget = 64 << 10 // less than any of the rooms' state
	b := startNode(t, "n2", cfg, a.ring.GossipAddr())
	var moved []string
	wait.Eventually(t, 20*time.Second, "n2 holding the rooms the ring gives it", func() bool {
		moved = moved[:0]
		for i := range rooms {
			name := fmt.Sprintf("kept-%d", i)
			if o, _, _ := b.owner(name); o.ID == "n2" {
				if !b.HasRoom(name) {
					return false
				}
				moved = append(moved, name)
			}
		}
		return len(moved) > 0
	})
	if used := b.budget().Used(); used <= int64(cfg.MemoryBudget) {
		t.Fatalf("n2 holds %d rooms of 100 KiB and counts %d bytes", len(moved), used)
	}
	// What a moved room holds is there; what would grow it is refused.
	c := dial(t, b.addr, moved[0], url.Values{"since": {"0"}})
	if m := c.waitFrames(protocol.TypeMessage, 1); m[0].Seq != 1 || m[0].ID != "m" {
		t.Fatalf("%s on n2: %+v", moved[0], m[0])
	}
	c.publish("more", big)
	if e := c.waitFrames(protocol.TypeError, 1); e[0].Code != limit.CodeOverloaded || e[0].ID != "more" {
		t.Fatalf("a publish into a room past n2's budget: %+v", e[0])
	}
}
