package node

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/protocol"
)

// TestPublishRateLimited: a connection publishing faster than PublishRate gets rate_limited error
// frames for the excess, the connection stays open, and the room delivers exactly what was acked.
func TestPublishRateLimited(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PublishRate, cfg.PublishBurst = 20, 5
	n := startNode(t, "n1", cfg)
	pub := dial(t, n.addr, "rated", nil)
	sub := dial(t, n.addr, "rated", nil)
	for i := range 30 {
		pub.publish(fmt.Sprint("p", i), i)
	}
	wait.Eventually(t, 5*time.Second, "an answer to every publish", func() bool {
		return len(pub.frames(protocol.TypeAck))+len(pub.frames(protocol.TypeError)) == 30
	})
	acks, errs := pub.frames(protocol.TypeAck), pub.frames(protocol.TypeError)
	if len(acks) < 5 || len(acks) > 10 {
		t.Fatalf("%d of 30 instant publishes acked; want the burst of 5 and a few refilled", len(acks))
	}
	for _, e := range errs {
		if e.Code != protocol.CodeRateLimited || e.ID == "" || e.Error == "" {
			t.Fatalf("refusal %+v", e)
		}
	}
	msgs := sub.before(sub, "marker")
	if len(msgs) != len(acks) {
		t.Fatalf("subscriber got %d messages for %d acks", len(msgs), len(acks))
	}
	for i, m := range msgs {
		if m.ID != acks[i].ID || m.Seq != acks[i].Seq {
			t.Fatalf("message %d is %s/%d, ack says %s/%d", i, m.ID, m.Seq, acks[i].ID, acks[i].Seq)
		}
	}
	// Binary publishes share the rate.
	for range 10 {
		if err := pub.ws.WriteMessage(websocket.BinaryMessage, []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	wait.Eventually(t, 5*time.Second, "binary refusals", func() bool {
		return len(pub.frames(protocol.TypeError)) > len(errs)
	})
	// The rate refills: after a pause, publishing works again on the same connection.
	time.Sleep(300 * time.Millisecond)
	pub.publish("later", "x")
	wait.Eventually(t, 5*time.Second, "the later publish acked", func() bool {
		for _, a := range pub.frames(protocol.TypeAck) {
			if a.ID == "later" {
				return true
			}
		}
		return false
	})
	if got := testutil.ToFloat64(n.metrics.refused.WithLabelValues("rate_limited")); got < float64(len(errs)) {
		t.Fatalf("roost_refused_total{reason=rate_limited} = %v, want ≥ %d", got, len(errs))
	}
}

// TestConnectionsPerAddress: beyond MaxAddrConns from one address, upgrades get 429 JSON; other
// addresses are not affected, and a closed connection frees its place. X-Forwarded-For counts
// only from a trusted hop: here the test's loopback address, listed in TrustedProxies (a node's
// own address would not do: a node believes only routers among members).
func TestConnectionsPerAddress(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxAddrConns = 3
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	n := startNode(t, "n1", cfg)
	dialFrom := func(addr string) (*client, error) {
		d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		u := "ws://" + n.addr + "/v1/rooms/lobby/ws"
		ws, resp, err := d.Dial(u, http.Header{"X-Forwarded-For": {addr}})
		if err != nil {
			if resp != nil {
				b, _ := io.ReadAll(resp.Body)
				return nil, fmt.Errorf("%d %s", resp.StatusCode, b)
			}
			return nil, err
		}
		c := &client{ws: ws, done: make(chan struct{}), t: t}
		go c.read()
		t.Cleanup(func() { ws.Close(); <-c.done })
		return c, nil
	}
	var held []*client
	for range 3 {
		c, err := dialFrom("203.0.113.7")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	_, err := dialFrom("203.0.113.7")
	if err == nil || !strings.HasPrefix(err.Error(), "429 ") {
		t.Fatalf("a 4th connection from one address: %v, want 429", err)
	}
	var e protocol.Error
	if json.Unmarshal([]byte(strings.TrimPrefix(err.Error(), "429 ")), &e) != nil || e.Code != protocol.CodeLimit || !strings.Contains(e.Error, "--max-addr-conns") {
		t.Fatalf("refusal body: %s", err)
	}
	if _, err := dialFrom("203.0.113.8"); err != nil {
		t.Fatalf("another address was refused: %v", err)
	}
	held[0].ws.Close()
	<-held[0].done
	wait.Eventually(t, 5*time.Second, "a place freed by a close", func() bool {
		c, err := dialFrom("203.0.113.7")
		if err == nil {
			c.ws.Close()
		}
		return err == nil
	})
	if got := testutil.ToFloat64(n.metrics.refused.WithLabelValues("addr_conns")); got < 1 {
		t.Fatalf("roost_refused_total{reason=addr_conns} = %v", got)
	}
	// Stream sources count too, by their TCP peer address (127.0.0.1 here: three places).
	addr := startIngest(t, n)
	for i := range 3 {
		if _, _, got := sourceHello(t, addr, fmt.Sprintf(`{"room":"cam-%d"}`+"\n", i)); got != "OK 0" {
			t.Fatalf("source %d: %q", i, got)
		}
	}
	if _, _, got := sourceHello(t, addr, `{"room":"cam-x"}`+"\n"); !strings.HasPrefix(got, "ERR limit_reached ") {
		t.Fatalf("a 4th source from one address: %q", got)
	}
}

// TestMemoryGuardRefusesNewRooms: over MaxMemory, a new room is refused on both doors with a
// clear error, and the node goes on serving.
func TestMemoryGuardRefusesNewRooms(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxMemory = 1 << 10 // far below what any Go process holds
	n := startNode(t, "n1", cfg)
	_, err := tryDial(n.addr, "fresh", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "status 429") {
		t.Fatalf("a new room over the memory limit: %v, want 429", err)
	}
	addr := startIngest(t, n)
	if _, _, got := sourceHello(t, addr, `{"room":"fresh-cam"}`+"\n"); !strings.HasPrefix(got, "ERR limit_reached ") || !strings.Contains(got, "memory") {
		t.Fatalf("a new stream room over the memory limit: %q", got)
	}
	if got := testutil.ToFloat64(n.metrics.refused.WithLabelValues("memory")); got != 1 {
		t.Fatalf("roost_refused_total{reason=memory} = %v, want 1", got)
	}
	resp, err := http.Get("http://" + n.addr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestOriginCheck: with Origins set, a browser from another origin gets 403 JSON before any
// upgrade; the allowed origin and non-browser clients connect.
func TestOriginCheck(t *testing.T) {
	cfg := DefaultConfig()
	var err error
	if cfg.Origins, err = auth.ParseOrigins([]string{"https://app.example.com"}); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, "n1", cfg)
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	u := "ws://" + n.addr + "/v1/rooms/lobby/ws"
	_, resp, err := d.Dial(u, http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v %v", resp, err)
	}
	var e protocol.Error
	if json.NewDecoder(resp.Body).Decode(&e) != nil || e.Code != protocol.CodeOrigin {
		t.Fatalf("foreign origin refusal: %+v", e)
	}
	for _, h := range []http.Header{{"Origin": {"https://app.example.com"}}, nil} {
		ws, _, err := d.Dial(u, h)
		if err != nil {
			t.Fatalf("with %v: %v", h, err)
		}
		ws.Close()
	}
}
