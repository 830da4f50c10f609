package test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/protocol"
)

// TestRouterIsATrustedHopAfterStatsGossip: a node counts the clients of a router by their own
// addresses (the router's X-Forwarded-For), not as the router's, also after gossip has updated
// the members' counters (which rebuilds placement on its fast path, where the members' hosts
// were once dropped) and for a router that joined after the node.
func TestRouterIsATrustedHopAfterStatsGossip(t *testing.T) {
	const perAddr = 3
	n := startProc(t, "node", "n1", "", "--max-addr-conns", fmt.Sprint(perAddr))
	proc.WaitRingT(t, []*proc.Proc{n}, 1)
	rt := startProc(t, "router", "r1", n.Gossip)
	proc.WaitRingT(t, []*proc.Proc{n, rt}, 1)

	// One client through the router, held until the node has heard the router's count of it: a
	// stats gossip has reached the node and been folded into its placement.
	first := dialFrom(t, rt, "127.0.0.1", "hops")
	defer first.Close()
	wait.Eventually(t, 15*time.Second, "the node hears the router's connection count", func() bool {
		c, err := n.Cluster()
		if err != nil {
			return false
		}
		for _, m := range c.Members {
			if m.ID == rt.ID && m.Conns == 1 {
				return true
			}
		}
		return false
	})
	// Twice the node's per-address limit, from distinct addresses, all through the one router.
	for i := range 2 * perAddr {
		ws := dialFrom(t, rt, fmt.Sprintf("127.0.0.%d", 2+i), "hops")
		defer ws.Close()
	}
}

// dialFrom opens room's WebSocket through p from the local address ip and reads its welcome.
func dialFrom(t *testing.T, p *proc.Proc, ip, room string) *websocket.Conn {
	t.Helper()
	local := &net.TCPAddr{IP: net.ParseIP(ip)}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return (&net.Dialer{LocalAddr: local}).DialContext(ctx, network, addr)
		}}
	u := "ws" + strings.TrimPrefix(p.URL(), "http") + "/v1/rooms/" + room + "/ws"
	ws, resp, err := d.DialContext(t.Context(), u, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("client from %s through %s: %v (status %d)", ip, p.ID, err, status)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var w protocol.Welcome
	if err := ws.ReadJSON(&w); err != nil || w.Type != protocol.TypeWelcome {
		ws.Close()
		t.Fatalf("client from %s through %s: no welcome (%v)", ip, p.ID, err)
	}
	return ws
}
