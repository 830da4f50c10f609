package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/node"
	"github.com/roost-dev/roost/ring"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testNode is a real roost node on loopback: gossip, placement, HTTP and WebSocket.
type testNode struct {
	*node.Node
	ring *ring.Ring
	addr string // host:port of the HTTP listener
}

func (n *testNode) base() string { return "http://" + n.addr }

// startNode runs a node that joins the seeds in join, and stops it when the test ends (after the
// clients the test opened later, as cleanups run last-in first-out).
func startNode(t *testing.T, id string, join ...string) *testNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc := ring.DefaultConfig()
	rc.ID, rc.Gossip, rc.HTTP, rc.Join, rc.Logger = id, "127.0.0.1:0", ln.Addr().String(), join, quiet
	r, err := ring.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	nc := node.DefaultConfig()
	nc.Logger = quiet
	n, err := node.New(nc, r)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: n.Handler(), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		n.Close()
		srv.Close()
		<-served
		r.Close()
	})
	eventually(t, 5*time.Second, id+" ready", r.Ready)
	return &testNode{Node: n, ring: r, addr: ln.Addr().String()}
}

// startPair runs two nodes that have agreed on a ring with both in it.
func startPair(t *testing.T) (*testNode, *testNode) {
	t.Helper()
	a := startNode(t, "n1")
	b := startNode(t, "n2", a.ring.GossipAddr())
	eventually(t, 10*time.Second, "both nodes in both rings", func() bool {
		pa, pb := a.ring.Placement(), b.ring.Placement()
		return len(pa.Nodes()) == 2 && pa.Version() == pb.Version()
	})
	return a, b
}

// roomOwnedBy finds a room name that n's placement gives to owner.
func roomOwnedBy(t *testing.T, n *testNode, owner, prefix string) string {
	t.Helper()
	for i := range 1000 {
		room := fmt.Sprintf("%s-%d", prefix, i)
		if o, ok := n.ring.Placement().Owner(room); ok && o.ID == owner {
			return room
		}
	}
	t.Fatalf("no room owned by %s", owner)
	return ""
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
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
