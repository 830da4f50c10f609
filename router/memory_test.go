package router_test

import (
	"errors"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/router"
)

// TestMemoryGuardTurnsClientsAway: a router over its memory limit takes no new client: it is
// closed with 1013 (try again later) and a reason naming the limit.
func TestMemoryGuardTurnsClientsAway(t *testing.T) {
	cfg := router.DefaultConfig()
	cfg.MaxMemory = 1 << 10 // far below what any Go process holds
	f := start(t, cfg)
	c, _, err := websocket.DefaultDialer.Dial("ws://"+f.addr+"/v1/rooms/lobby/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err = c.ReadMessage(); err != nil {
			break
		}
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseTryAgainLater {
		t.Fatalf("a client of a router over its memory limit: %v, want close 1013", err)
	}
}
