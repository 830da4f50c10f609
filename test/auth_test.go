package test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/protocol"
)

// TestAuthWithRealProcesses: nodes and a router started with --auth-hmac-secret let in only
// clients and stream sources whose token is valid and covers the room; read-only tokens read
// but cannot publish; placement needs no token. Every door is tried: router, node, TCP.
func TestAuthWithRealProcesses(t *testing.T) {
	secret := []byte("test-secret-test-secret-test-secret!")
	flags := []string{"--auth-hmac-secret", string(secret), "--cluster-secret", "auth-test-cluster-secret"}
	n1 := startProc(t, "node", "n1", "", flags...)
	n2 := startProc(t, "node", "n2", n1.Gossip, flags...)
	rt := startProc(t, "router", "r1", n1.Gossip, flags...)
	proc.WaitRingT(t, []*proc.Proc{n1, n2, rt}, 2)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	mint := func(sub string, pub bool, ttl time.Duration, rooms ...string) string {
		tok, err := auth.Mint(secret, sub, rooms, pub, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	writer := mint("ann", true, time.Hour, "team-*")
	reader := mint("bo", false, time.Hour, "team-red")
	expiredClaims := auth.Claims{Rooms: []string{"team-*"}, Pub: true}
	expiredClaims.Subject, expiredClaims.ExpiresAt = "ann", jwt.NewNumericDate(time.Now().Add(-time.Minute))
	expired, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, expiredClaims).SignedString(secret)
	forged, _ := auth.Mint([]byte("not-the-secret-not-the-secret-not"), "eve", []string{"*"}, true, time.Hour)
	const room = "team-red"

	// Placement is public.
	if o, err := client.Resolve(ctx, rt.URL(), room, nil); err != nil || o.Node == "" {
		t.Fatalf("resolve without a token: %+v %v", o, err)
	}
	owner, err := ownerFrom(ctx, rt, room)
	if err != nil {
		t.Fatal(err)
	}
	ownerURL := n1.URL()
	if owner.Node == n2.ID {
		ownerURL = n2.URL()
	}

	for _, base := range []string{rt.URL(), ownerURL} {
		for _, c := range []struct {
			name, token, room string
			code              int
		}{
			{"no token", "", room, protocol.CloseUnauthorized},
			{"expired", expired, room, protocol.CloseUnauthorized},
			{"forged", forged, room, protocol.CloseUnauthorized},
			{"garbage", "abc.def.ghi", room, protocol.CloseUnauthorized},
			{"room outside the claim", reader, "team-blue", protocol.CloseForbidden},
			{"prefix claim, other prefix", writer, "lobby", protocol.CloseForbidden},
		} {
			_, err := client.Dial(ctx, base, c.room, &client.Options{Token: c.token})
			var ce *client.CloseError
			if !errors.As(err, &ce) || ce.Code != c.code {
				t.Errorf("%s via %s: %v, want close %d", c.name, base, err, c.code)
			}
		}
	}
	// A browser-like client sees the close code after the upgrade, with a reason.
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+rt.HTTP+"/v1/rooms/"+room+"/ws", nil)
	if err != nil {
		t.Fatalf("the upgrade should complete so a browser can read why: %v", err)
	}
	_, _, err = ws.ReadMessage()
	ws.Close()
	if !websocket.IsCloseError(err, protocol.CloseUnauthorized) {
		t.Fatalf("raw client without a token: %v", err)
	}

	// The writer (through the router, token in the query) publishes; the reader (direct, token
	// in the header) reads, sees who wrote, and cannot publish.
	w, err := client.Dial(ctx, rt.URL(), room, &client.Options{Token: writer})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := client.Dial(ctx, ownerURL, room, &client.Options{Token: reader})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := w.Publish(ctx, map[string]string{"text": "hi"}); err != nil {
		t.Fatal(err)
	}
	_, err = r.Publish(ctx, "not allowed")
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != protocol.CodeForbidden {
		t.Fatalf("read-only publish: %v, want a forbidden error", err)
	}
	if _, err := w.Publish(ctx, "second"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 {
		ev, err := r.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == client.EventMessage {
			got = append(got, ev.Client+":"+string(ev.Data))
		}
	}
	if got[0] != `ann:{"text":"hi"}` || got[1] != `ann:"second"` {
		t.Fatalf("the reader got %q; want both of ann's messages, attributed to her sub, and nothing of its own", got)
	}

	// Stream sources: the token is in the handshake and must allow publishing.
	for _, c := range []struct{ name, token, want string }{
		{"no token", "", "ERR unauthorized "},
		{"expired", expired, "ERR unauthorized "},
		{"read-only", reader, "ERR forbidden "},
		{"writer", writer, "OK "},
	} {
		line := `{"room":"` + room + `"}`
		if c.token != "" {
			line = `{"room":"` + room + `","token":"` + c.token + `"}`
		}
		conn, err := net.DialTimeout("tcp", owner.TCPAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write([]byte(line + "\n"))
		answer, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if !strings.HasPrefix(answer, c.want) {
			t.Errorf("stream source, %s: %q, want %q...", c.name, answer, c.want)
		}
	}
	src, err := client.OpenStream(ctx, rt.URL(), room, &client.StreamOptions{Token: writer})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Send(ctx, []byte("frame")); err != nil {
		t.Fatal(err)
	}
	if err := src.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := r.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == client.EventBinary {
			if string(ev.Payload) != "frame" {
				t.Fatalf("binary %q", ev.Payload)
			}
			break
		}
	}

	// Plain HTTP GET of the WebSocket path without a token: 401 JSON.
	resp, err := http.Get(ownerURL + "/v1/rooms/" + room + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET of the ws path without a token: %d, want 401", resp.StatusCode)
	}
}
