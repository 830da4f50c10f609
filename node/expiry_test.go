package node

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/protocol"
)

// tokenSecret signs the tokens of startAuthNode's nodes.
var tokenSecret = []byte("expiry-test-secret-expiry-test-secret!")

// startAuthNode runs a node that checks tokens signed with tokenSecret, configured further by adjust.
func startAuthNode(t *testing.T, adjust func(*Config)) *testNode {
	t.Helper()
	v, err := auth.NewVerifier(auth.Config{HMACSecret: tokenSecret})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Auth = v
	adjust(&cfg)
	return startNode(t, "n1", cfg)
}

// TestExpiredTokenCloses4401: a connection whose token expires is closed with 4401 at exp (plus
// the leeway) while the room streams to it and it publishes; one with a good token is
// unaffected. (Run it with -race: the expiry timer, the reader and the room's writer all touch
// the connection.)
func TestExpiredTokenCloses4401(t *testing.T) {
	n := startAuthNode(t, func(cfg *Config) { cfg.PublishRate, cfg.PublishBurst = 1000, 1000 })
	short, _ := auth.Mint(tokenSecret, "ann", []string{"exp"}, true, time.Second)
	long, _ := auth.Mint(tokenSecret, "bo", []string{"exp"}, true, time.Hour)
	expiring := dial(t, n.addr, "exp", url.Values{"token": {short}})
	staying := dial(t, n.addr, "exp", url.Values{"token": {long}})
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // both publish all along, so the close races the writer
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			_ = expiring.ws.WriteJSON(protocol.Publish{Type: protocol.TypePublish, ID: "e" + string(rune('a'+i%26)), Data: []byte(`1`)})
			_ = staying.ws.WriteJSON(protocol.Publish{Type: protocol.TypePublish, Data: []byte(`2`)})
		}
	}()
	select {
	case <-expiring.done:
	case <-time.After(time.Second + auth.Leeway + 5*time.Second):
		t.Fatal("the connection is open 5 s after its token expired")
	}
	took := time.Since(start)
	var ce *websocket.CloseError
	if err := expiring.closeErr(); !errors.As(err, &ce) || ce.Code != protocol.CloseUnauthorized {
		t.Fatalf("the expired connection ended with %v, want close 4401", err)
	}
	if took < auth.Leeway || took > time.Second+auth.Leeway+2*time.Second {
		t.Errorf("closed %s after connecting with a 1 s token, want about 1 s + %s leeway", took, auth.Leeway)
	}
	select {
	case <-staying.done:
		t.Fatalf("the connection with a good token ended too: %v", staying.closeErr())
	case <-time.After(200 * time.Millisecond):
	}
}

// TestExpiredTokenStopsASource: a stream source whose token expires is told so and cut off at
// exp (plus the leeway), with the frames it had put in the room kept; one creating rooms past
// --room-create-rate is refused, as a WebSocket would be.
func TestExpiredTokenStopsASource(t *testing.T) {
	n := startAuthNode(t, func(cfg *Config) { cfg.RoomCreateRate, cfg.RoomCreateBurst = 1, 2 })
	addr := startIngest(t, n)
	short, _ := auth.Mint(tokenSecret, "cam", []string{"*"}, true, time.Second)
	c, br, ok := sourceHello(t, addr, `{"room":"feed","token":"`+short+`"}`+"\n")
	if ok != "OK 0" {
		t.Fatalf("handshake: %q", ok)
	}
	if err := writeFrame(c, []byte("frame")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(time.Second + auth.Leeway + 5*time.Second))
	line, err := br.ReadString('\n')
	if err != nil || line != "ERR unauthorized the token has expired; connect again with a fresh one\n" {
		t.Fatalf("the expired source was told %q (%v)", line, err)
	}
	if took := time.Since(start); took < auth.Leeway || took > time.Second+auth.Leeway+2*time.Second {
		t.Errorf("stopped %s after connecting with a 1 s token, want about 1 s + %s leeway", took, auth.Leeway)
	}
	long, _ := auth.Mint(tokenSecret, "cam", []string{"*"}, true, time.Hour)
	// The bucket (burst 2) has refilled while the token ran out: two more rooms, then refused.
	for i, want := range []string{"OK 0", "OK 0", "ERR rate_limited"} {
		_, _, got := sourceHello(t, addr, `{"room":"new-`+string(rune('a'+i))+`","token":"`+long+`"}`+"\n")
		if !strings.HasPrefix(got, want) {
			t.Fatalf("source %d creating a room: %q, want %q", i, got, want)
		}
	}
	if _, _, got := sourceHello(t, addr, `{"room":"new-a","token":"`+long+`"}`+"\n"); got != "OK 1" && got != "OK 0" {
		t.Fatalf("a source joining a room the node holds: %q, want OK (joining is not creating)", got)
	}
}
