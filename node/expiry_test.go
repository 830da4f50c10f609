package node

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/protocol"
)

// TestExpiredTokenCloses4401: a connection whose token expires is closed with 4401 at exp (plus
// the leeway) while the room streams to it and it publishes; one with a good token is
// unaffected. (Run it with -race: the expiry timer, the reader and the room's writer all touch
// the connection.)
func TestExpiredTokenCloses4401(t *testing.T) {
	secret := []byte("expiry-test-secret-expiry-test-secret!")
	v, err := auth.NewVerifier(auth.Config{HMACSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Auth = v
	cfg.PublishRate, cfg.PublishBurst = 1000, 1000
	n := startNode(t, "n1", cfg)
	short, _ := auth.Mint(secret, "ann", []string{"exp"}, true, time.Second)
	long, _ := auth.Mint(secret, "bo", []string{"exp"}, true, time.Hour)
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
