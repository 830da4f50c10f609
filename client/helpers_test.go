package client_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/testcluster"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startNode runs a real roost node on loopback (gossip, placement, HTTP, WebSocket and TCP
// ingest), and stops it when the test ends (after the clients the test opened later, as
// cleanups run last-in first-out).
func startNode(t *testing.T) *testcluster.Member {
	t.Helper()
	return testcluster.New(t, testcluster.Config{Nodes: 1}).Member("n1")
}

// startPair runs two nodes, n1 and n2, that have agreed on a ring with both in it.
func startPair(t *testing.T) (*testcluster.Member, *testcluster.Member) {
	t.Helper()
	c := testcluster.New(t, testcluster.Config{Nodes: 2})
	return c.Member("n1"), c.Member("n2")
}

// roomOwnedBy finds a room name that n's placement gives to owner.
func roomOwnedBy(t *testing.T, n *testcluster.Member, owner, prefix string) string {
	t.Helper()
	for i := range 1000 {
		room := fmt.Sprintf("%s-%d", prefix, i)
		if o, ok := n.Ring.Placement().Owner(room); ok && o.ID == owner {
			return room
		}
	}
	t.Fatalf("no room owned by %s", owner)
	return ""
}

// dial connects and closes the connection when the test ends.
func dial(t *testing.T, base, room string, opts *client.Options) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, base, room, opts)
	if err != nil {
		t.Fatalf("Dial %s %s: %v", base, room, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// next returns c's next event, failing the test after 10s.
func next(t *testing.T, c *client.Conn) client.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return ev
}

// messages returns c's next n message and binary events, failing on any other event type.
func messages(t *testing.T, c *client.Conn, n int) []client.Event {
	t.Helper()
	out := make([]client.Event, 0, n)
	for len(out) < n {
		ev := next(t, c)
		if ev.Type != client.EventMessage && ev.Type != client.EventBinary {
			t.Fatalf("after %d messages: unexpected %s event %+v", len(out), ev.Type, ev)
		}
		out = append(out, ev)
	}
	return out
}

// publish publishes data and returns the seq, failing the test on an error.
func publish(t *testing.T, c *client.Conn, id string, data any) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seq, err := c.PublishID(ctx, id, data)
	if err != nil {
		t.Fatalf("publish %q: %v", id, err)
	}
	return seq
}

// acks records the seq each publish id was acked with, from any number of goroutines.
type acks struct {
	mu  sync.Mutex
	seq map[string]uint64
}

// publish publishes v under id, waiting up to timeout for its ack, and records it. It reports
// false, the test marked failed, when the publish was not acked.
func (a *acks) publish(t *testing.T, c *client.Conn, id string, v any, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	seq, err := c.PublishID(ctx, id, v)
	if err != nil {
		t.Errorf("publish %s: %v", id, err)
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seq == nil {
		a.seq = map[string]uint64{}
	}
	a.seq[id] = seq
	return true
}

// of is the seq id was acked with, 0 if none.
func (a *acks) of(id string) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seq[id]
}

// len is how many publishes were acked.
func (a *acks) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seq)
}
