package router_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/router"
)

// dialStatus dials through the router with header h and returns the refusal's status and JSON
// error, or 101 and an open connection.
func dialStatus(t *testing.T, f *fixture, room string, h http.Header) (int, protocol.Error, *websocket.Conn) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+f.addr+"/v1/rooms/"+room+"/ws", h)
	if err == nil {
		t.Cleanup(func() { c.Close() })
		return http.StatusSwitchingProtocols, protocol.Error{}, c
	}
	if resp == nil {
		t.Fatal(err)
	}
	var e protocol.Error
	b, _ := io.ReadAll(resp.Body)
	if json.Unmarshal(b, &e) != nil {
		t.Fatalf("refusal %d is not JSON: %q", resp.StatusCode, b)
	}
	return resp.StatusCode, e, nil
}

func TestRouterConnectionsPerAddress(t *testing.T) {
	cfg := router.DefaultConfig()
	cfg.MaxAddrConns = 2
	f := start(t, cfg)
	for range 2 {
		if st, e, _ := dialStatus(t, f, "lobby", nil); st != 101 {
			t.Fatalf("within the limit: %d %+v", st, e)
		}
	}
	// A client cannot step around the limit by naming another address: the router trusts no hop.
	st, e, _ := dialStatus(t, f, "lobby", http.Header{"X-Forwarded-For": {"198.51.100.1"}})
	if st != http.StatusTooManyRequests || e.Code != protocol.CodeLimit {
		t.Fatalf("a 3rd connection from one address: %d %+v, want 429 %s", st, e, protocol.CodeLimit)
	}
}

func TestRouterOrigins(t *testing.T) {
	cfg := router.DefaultConfig()
	var err error
	if cfg.Origins, err = auth.ParseOrigins([]string{"https://app.example.com"}); err != nil {
		t.Fatal(err)
	}
	f := start(t, cfg)
	st, e, _ := dialStatus(t, f, "lobby", http.Header{"Origin": {"https://evil.example"}})
	if st != http.StatusForbidden || e.Code != protocol.CodeOrigin {
		t.Fatalf("a foreign origin: %d %+v, want 403 %s", st, e, protocol.CodeOrigin)
	}
	if st, e, _ := dialStatus(t, f, "lobby", http.Header{"Origin": {"https://app.example.com"}}); st != 101 {
		t.Fatalf("the allowed origin: %d %+v", st, e)
	}
	if st, e, _ := dialStatus(t, f, "lobby", nil); st != 101 {
		t.Fatalf("a client without Origin (not a browser): %d %+v", st, e)
	}
}
