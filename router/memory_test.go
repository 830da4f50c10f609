package router_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/router"
)

// TestMemoryGuardTurnsClientsAway: a router over its memory limit takes no new client: it
// answers 429 overloaded, with Retry-After, before upgrading or dialing an owner.
func TestMemoryGuardTurnsClientsAway(t *testing.T) {
	cfg := router.DefaultConfig()
	cfg.MaxMemory = 1 << 10 // far below what any Go process holds
	f := start(t, cfg)
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+f.addr+"/v1/rooms/lobby/ws", nil)
	if err == nil {
		c.Close()
		t.Fatal("a router over its memory limit upgraded a new client")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a client of a router over its memory limit: %v %v, want 429 with Retry-After", resp, err)
	}
	var e protocol.Error
	if json.NewDecoder(resp.Body).Decode(&e) != nil || e.Code != limit.CodeOverloaded {
		t.Fatalf("refusal %+v, want code %s", e, limit.CodeOverloaded)
	}
}
