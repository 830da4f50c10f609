package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/node/handoff"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/protocol"
)

// The hostile-client suite: one cluster of real processes (two nodes, two routers), two witness
// rooms that carry a steady numbered stream the whole time, and one subtest per hostile
// behaviour aimed at the witnesses' owners, rooms and routers. Each subtest checks the answer
// the hostile client gets (status, close code, timing, metrics); the witnesses check that
// everyone else was served throughout and lost nothing: every message once, in order, no gap,
// no reconnect. Between subtests, the connection gauges must fall back to the witnesses alone.
//
// The node-level tests (node/*_test.go, router/*_test.go) cover the same rules one handler at a
// time; this suite shows them holding in the built binary, with real sockets, under load, and
// at both doors (node and router) at once.

const (
	hostileSecret   = "hostile-test-cluster-secret"
	hostileMaxFrame = 64 << 10
)

// TestHostileClients throws bad clients at nodes and routers while witness rooms carry a steady
// stream through both; the witnesses must lose nothing and never reconnect, and every bad client
// must get the documented answer.
func TestHostileClients(t *testing.T) {
	// n1 and r1 ping every 400 ms, so silent sockets go within a second; n2 and r2 ping rarely
	// and n2 has a short send queue, so a subscriber that never reads is dropped by the queue
	// (4008), not for silence, and their long write timeout leaves it time to read its close.
	// Every member has the cluster secret: forged node-to-node calls must be refused.
	common := []string{"--cluster-secret", hostileSecret, "--handshake-timeout", "1s", "--max-frame", strconv.Itoa(hostileMaxFrame)}
	nodeCommon := slices.Concat(common, []string{"--ingest-handshake-timeout", "1s"})
	n1 := startProc(t, "node", "n1", "", slices.Concat(nodeCommon, []string{"--ping-interval", "400ms"})...)
	n2 := startProc(t, "node", "n2", n1.Gossip, slices.Concat(nodeCommon, []string{"--ping-interval", "10s", "--send-queue", "64", "--write-timeout", "20s"})...)
	r1 := startProc(t, "router", "r1", n1.Gossip, slices.Concat(common, []string{"--ping-interval", "400ms"})...)
	r2 := startProc(t, "router", "r2", n1.Gossip, slices.Concat(common, []string{"--ping-interval", "10s", "--send-queue", "64", "--write-timeout", "20s"})...)
	proc.WaitRingT(t, []*proc.Proc{n1, n2, r1, r2}, 2)

	byOwner := map[string][]string{}
	for room, owner := range roomsByOwner(t, r1, "hostile-", 3, "n1", "n2") {
		byOwner[owner] = append(byOwner[owner], room)
	}
	for _, rooms := range byOwner {
		sort.Strings(rooms)
	}
	if len(byOwner["n1"]) < 3 || len(byOwner["n2"]) < 1 {
		t.Fatalf("rooms by owner: %v", byOwner)
	}
	roomA, fresh, utf8Room := byOwner["n1"][0], byOwner["n1"][1], byOwner["n1"][2] // on n1
	roomB := byOwner["n2"][0]                                                      // on n2

	wA := startWitness(t, "wa", roomA, n1, r1)
	wB := startWitness(t, "wb", roomB, n2, r2)
	// Between subtests only the witnesses are connected: on each owner its direct subscriber
	// and the router's legs of the other subscriber and the publisher, on each router those two.
	const baseN1, baseR1, baseN2, baseR2 = 3, 2, 3, 2
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			wait.Eventually(t, 5*time.Second, "only the witnesses connected (what the last subtest opened is closed)", func() bool {
				return gauge(t, n1, "roost_connections") == baseN1 && gauge(t, r1, "roost_router_connections") == baseR1 &&
					gauge(t, n2, "roost_connections") == baseN2 && gauge(t, r2, "roost_router_connections") == baseR2
			})
			f(t)
		})
	}

	run("slowloris", func(t *testing.T) {
		// 200 connections trickle an upgrade request a byte every 50 ms: none can finish its
		// headers within --handshake-timeout (1s), so each is cut after about 1s, never
		// upgraded; meanwhile normal clients connect at once.
		const conns = 200
		request := fmt.Sprintf("GET /v1/rooms/%s/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", roomA)
		type cut struct {
			target string
			lived  time.Duration
			sent   int
			answer []byte
			err    error
		}
		cuts := make(chan cut, conns)
		var ready, wg sync.WaitGroup
		ready.Add(conns)
		for i := range conns {
			target := []*proc.Proc{n1, r1}[i%2]
			wg.Go(func() {
				c, err := net.DialTimeout("tcp", target.HTTP, 2*time.Second)
				if err != nil {
					ready.Done()
					cuts <- cut{target: target.ID, err: err}
					return
				}
				defer c.Close()
				start := time.Now()
				res := cut{target: target.ID}
				readyOnce := sync.OnceFunc(ready.Done)
				defer readyOnce()
				buf := make([]byte, 512)
				for time.Since(start) < 6*time.Second {
					if res.sent < len(request) {
						if _, err := c.Write([]byte{request[res.sent]}); err != nil {
							break // reset by the server
						}
						res.sent++
					}
					readyOnce()
					_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
					n, err := c.Read(buf)
					res.answer = append(res.answer, buf[:n]...)
					if err != nil && !isTimeout(err) {
						break // closed by the server
					}
				}
				res.lived = time.Since(start)
				cuts <- res
			})
		}
		// Every slow connection is open and trickling: a normal client is served at once, on the
		// node and through the router.
		ready.Wait()
		for _, p := range []*proc.Proc{n1, r1} {
			start := time.Now()
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			c, err := client.Dial(ctx, p.URL(), roomA, &client.Options{DisableReconnect: true})
			cancel()
			if err != nil {
				t.Errorf("a normal client of %s during the slowloris: %v", p.ID, err)
				continue
			}
			took := time.Since(start)
			c.Close()
			if took > 500*time.Millisecond {
				t.Errorf("a normal client of %s during the slowloris took %s to be welcomed", p.ID, took)
			}
			t.Logf("a normal client of %s during the slowloris: welcomed in %s", p.ID, took.Round(time.Millisecond))
		}
		wg.Wait()
		close(cuts)
		var lived []time.Duration
		for c := range cuts {
			switch {
			case c.err != nil:
				t.Errorf("%s: %v", c.target, c.err)
			case c.lived < 900*time.Millisecond || c.lived > 3*time.Second:
				t.Errorf("%s: a slowloris connection was cut after %s (%d bytes sent), want about the 1s handshake timeout", c.target, c.lived, c.sent)
			case c.sent >= len(request):
				t.Errorf("%s: a slowloris connection sent its whole request", c.target)
			case len(c.answer) > 0 && !bytes.HasPrefix(c.answer, []byte("HTTP/1.1 400 Bad Request\r\n")):
				// net/http takes the part of the request line that came before the timeout for
				// the whole line, and answers 400 to it; nothing else may come back.
				t.Errorf("%s: a slowloris connection was answered %q, want a close (and at most net/http's 400)", c.target, c.answer)
			}
			lived = append(lived, c.lived)
		}
		slices.Sort(lived)
		if len(lived) == conns {
			t.Logf("%d slowloris connections cut after %s (min) %s (median) %s (max)", conns,
				lived[0].Round(time.Millisecond), lived[conns/2].Round(time.Millisecond), lived[conns-1].Round(time.Millisecond))
		}
		// None of them ever counted as a client.
		wait.Eventually(t, 5*time.Second, "connection gauges back to where they were", func() bool {
			return gauge(t, n1, "roost_connections") == baseN1 && gauge(t, r1, "roost_router_connections") == baseR1
		})
	})

	run("silent sockets", func(t *testing.T) {
		// WebSockets opened by hand on raw TCP, then silent: they never answer a ping. Half drain
		// what the server sends (so only the missing pongs give them away), half never read a
		// byte (a half-open peer). With --ping-interval 400ms the node and the router close
		// them all after 2.5 intervals (1s).
		const perDoor = 10
		openedN1, openedR1 := gauge(t, n1, "roost_connections_opened_total"), gauge(t, r1, "roost_router_connections_total")
		silentN1 := labelled(t, n1, "roost_drops_total", "reason", "silent")
		type end struct {
			target string
			lived  time.Duration
		}
		ends := make(chan end, 2*perDoor)
		var wg sync.WaitGroup
		var halfOpen []net.Conn
		start := time.Now()
		for i := range 2 * perDoor {
			target := []*proc.Proc{n1, r1}[i%2]
			c, err := rawUpgrade(target.HTTP, "/v1/rooms/"+roomA+"/ws")
			if err != nil {
				t.Fatalf("%s: %v", target.ID, err)
			}
			t.Cleanup(func() { c.Close() })
			if i%4 >= 2 {
				halfOpen = append(halfOpen, c)
				continue
			}
			upgraded := time.Now()
			wg.Go(func() {
				_ = c.SetReadDeadline(time.Now().Add(8 * time.Second))
				_, err := io.Copy(io.Discard, c)
				lived := time.Since(upgraded)
				if isTimeout(err) {
					lived = -1
				}
				ends <- end{target: target.ID, lived: lived}
			})
		}
		wg.Wait()
		close(ends)
		var lived []time.Duration
		for e := range ends {
			if e.lived < 0 {
				t.Errorf("%s: a silent socket was still open after 8s", e.target)
			} else if e.lived < 900*time.Millisecond || e.lived > 4*time.Second {
				t.Errorf("%s: a silent socket was closed after %s, want about 2.5 ping intervals (1s)", e.target, e.lived)
			}
			lived = append(lived, e.lived)
		}
		slices.Sort(lived)
		t.Logf("silent sockets that drain closed after %s (min) to %s (max)", lived[0].Round(time.Millisecond), lived[len(lived)-1].Round(time.Millisecond))
		wait.Eventually(t, 5*time.Second, "connection gauges back to where they were", func() bool {
			return gauge(t, n1, "roost_connections") == baseN1 && gauge(t, r1, "roost_router_connections") == baseR1
		})
		t.Logf("all %d silent sockets gone from the gauges %s after the first was opened", 2*perDoor, time.Since(start).Round(time.Millisecond))
		// The ones that never read find what was sent to them, then the end of the connection.
		for _, c := range halfOpen {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := io.Copy(io.Discard, c); isTimeout(err) {
				t.Errorf("a socket that never read: still open after the gauges fell")
			}
		}
		// All were served: n1 saw its 10 and the router's 10 legs, the router its 10. Only the
		// 10 direct ones were silent at n1: the router closes its leg with 1001 when its client
		// goes silent.
		if d := gauge(t, n1, "roost_connections_opened_total") - openedN1; d != 2*perDoor {
			t.Errorf("n1 opened %v connections, want %d", d, 2*perDoor)
		}
		if d := gauge(t, r1, "roost_router_connections_total") - openedR1; d != perDoor {
			t.Errorf("r1 proxied %v connections, want %d", d, perDoor)
		}
		if d := labelled(t, n1, "roost_drops_total", "reason", "silent") - silentN1; d != perDoor {
			t.Errorf("roost_drops_total{reason=silent} on n1 rose by %v, want %d", d, perDoor)
		}
	})

	run("connect flood", func(t *testing.T) {
		// 1,000 WebSocket connects, each welcomed and then closed (half with a close frame, half
		// by dropping the socket), as fast as 50 goroutines can, half on n1 and half through r1.
		// Afterwards connections, goroutines and file descriptors are back where they were.
		const total, workers = 1000, 50
		openedN1, openedR1 := gauge(t, n1, "roost_connections_opened_total"), gauge(t, r1, "roost_router_connections_total")
		goN1, goR1 := gauge(t, n1, "go_goroutines"), gauge(t, r1, "go_goroutines")
		fdN1, fdR1 := gauge(t, n1, "process_open_fds"), gauge(t, r1, "process_open_fds")
		dialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		var next atomic.Int64
		var mu sync.Mutex
		failures := map[string]int{}
		start := time.Now()
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for {
					i := next.Add(1) - 1
					if i >= total {
						return
					}
					target := []*proc.Proc{n1, r1}[i%2]
					err := connectAndLeave(t.Context(), &dialer, target.HTTP, roomA, i%4 < 2)
					if err != nil {
						mu.Lock()
						failures[fmt.Sprintf("%s: %v", target.ID, err)]++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		took := time.Since(start)
		t.Logf("%d connects and closes in %s (%.0f/s)", total, took.Round(time.Millisecond), total/took.Seconds())
		for f, n := range failures {
			t.Errorf("%d connects failed: %s", n, f)
		}
		wait.Eventually(t, 10*time.Second, "connection gauges back to where they were", func() bool {
			return gauge(t, n1, "roost_connections") == baseN1 && gauge(t, r1, "roost_router_connections") == baseR1
		})
		if d := gauge(t, n1, "roost_connections_opened_total") - openedN1; d != total {
			t.Errorf("n1 opened %v connections, want %d (%d direct, %d legs of r1)", d, total, total/2, total/2)
		}
		if d := gauge(t, r1, "roost_router_connections_total") - openedR1; d != total/2 {
			t.Errorf("r1 proxied %v connections, want %d", d, total/2)
		}
		// No leak: goroutines and descriptors settle back (a few idle keep-alive connections of
		// the metrics requests are allowed).
		wait.Eventually(t, 10*time.Second, "goroutines and file descriptors of n1 and r1 back to where they were", func() bool {
			return gauge(t, n1, "go_goroutines") <= goN1+10 && gauge(t, r1, "go_goroutines") <= goR1+10 &&
				gauge(t, n1, "process_open_fds") <= fdN1+5 && gauge(t, r1, "process_open_fds") <= fdR1+5
		})
	})

	run("subscriber that never reads", func(t *testing.T) {
		// Two subscribers of the witness room B never read: one on its owner n2, one through r2
		// (on r2's edge leg of the room, which r2 fans out to its clients, each with its queue).
		// Heavy traffic fills the send queues (--send-queue 64 on n2 and r2): each drops its lazy
		// one with 4008, while the witness's subscribers, on n2 and through the same r2, reading as they
		// go, get every message. When the lazy ones finally read, each finds the messages that
		// were in flight, then the 4008 close - through the router too, which passes the
		// owner's close on.
		// With edge legs the router queues to each of its clients itself (--send-queue 64 on r2
		// too): r2 drops its lazy client alone, n2 the direct one; either way 4008 reaches it.
		drops := func() float64 {
			return labelled(t, n2, "roost_drops_total", "reason", "slow_consumer") + labelled(t, r2, "roost_drops_total", "reason", "slow_consumer")
		}
		slowBase := drops()
		lazyDialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: smallReceiveBuffer}
		var lazies []*websocket.Conn
		for _, p := range []*proc.Proc{n2, r2} {
			ws, _, err := lazyDialer.DialContext(t.Context(), "ws://"+p.HTTP+"/v1/rooms/"+roomB+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ws.Close() })
			lazies = append(lazies, ws)
		}
		// Publishers push 56 KiB messages (within --publish-burst each) until n2 has dropped both
		// lazy connections: socket buffers first take what they can.
		blob := strings.Repeat("x", 56<<10)
		var dropped atomic.Bool
		var wg, poller sync.WaitGroup
		var published atomic.Int64
		start := time.Now()
		var pubs []*client.Conn
		for range 8 {
			c, err := client.Dial(t.Context(), n2.URL(), roomB, &client.Options{DisableReconnect: true, Discard: true, MaxFrame: hostileMaxFrame})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			pubs = append(pubs, c)
		}
		for p, c := range pubs {
			for k := range 2 { // two publishes in flight per connection
				wg.Go(func() {
					for i := 0; i < 75 && !dropped.Load(); i++ {
						id := fmt.Sprintf("heavy-%d-%d-%d", p, k, i)
						ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
						_, err := c.PublishID(ctx, id, blob)
						cancel()
						if err != nil {
							t.Errorf("heavy publisher %d: %v", p, err)
							return
						}
						wB.expect(id)
						published.Add(1)
					}
				})
			}
		}
		stop := make(chan struct{})
		poller.Go(func() {
			for !dropped.Load() {
				v, err := metricValue(n2, "roost_drops_total", "reason", "slow_consumer")
				v2, err2 := metricValue(r2, "roost_drops_total", "reason", "slow_consumer")
				if err == nil && err2 == nil && v+v2-slowBase >= 2 {
					dropped.Store(true)
				}
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		})
		wg.Wait()
		close(stop)
		poller.Wait()
		t.Logf("%d messages of 56 KiB in %s until n2 and r2 dropped the lazy subscribers", published.Load(), time.Since(start).Round(time.Millisecond))
		wait.Eventually(t, 5*time.Second, "n2 and r2 dropped both lazy subscribers", func() bool {
			return drops()-slowBase >= 2
		})
		if d := drops() - slowBase; d != 2 {
			t.Fatalf("roost_drops_total{reason=slow_consumer} on n2 and r2 rose by %v, want 2 (the lazy subscriber on n2 and the one through r2)", d)
		}
		// Now they read: what was in flight, then the close.
		for i, ws := range lazies {
			via := []string{"n2", "r2"}[i]
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			msgs := 0
			for {
				_, _, err := ws.ReadMessage()
				if err == nil {
					msgs++
					continue
				}
				var ce *websocket.CloseError
				switch {
				case isTimeout(err):
					t.Errorf("the lazy subscriber on %s: no close within 10s (%d messages read)", via, msgs)
				case errors.As(err, &ce) && ce.Code == protocol.CloseSlowConsumer:
					t.Logf("the lazy subscriber on %s: %d frames that were in flight, then close %d %q", via, msgs, ce.Code, ce.Text)
				default:
					t.Errorf("the lazy subscriber on %s ended with %v after %d frames, want close 4008", via, err, msgs)
				}
				break
			}
		}
		wait.Eventually(t, 5*time.Second, "r2's session of the lazy subscriber gone", func() bool {
			return gauge(t, r2, "roost_router_connections") == baseR2
		})
	})

	run("bad frames", func(t *testing.T) {
		// On either door, frames that are not JSON, of an unknown type, or malformed publishes
		// each get an error frame and the connection stays open; binary garbage is a legal binary
		// publish (delivered to the room with its seq); a frame over --max-frame closes with 1009.
		for _, target := range []*proc.Proc{n1, r1} {
			ws, _, err := websocket.DefaultDialer.DialContext(t.Context(), "ws://"+target.HTTP+"/v1/rooms/"+roomA+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ws.Close() })
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			next := func(want string) (int, []byte) {
				t.Helper()
				for {
					mt, b, err := ws.ReadMessage()
					if err != nil {
						t.Fatalf("%s: waiting for %s: %v", target.ID, want, err)
					}
					if want == "binary" && mt == websocket.BinaryMessage {
						return mt, b
					}
					var f protocol.Incoming
					if mt == websocket.TextMessage && json.Unmarshal(b, &f) == nil && f.Type == want {
						return mt, b
					}
				}
			}
			next(protocol.TypeWelcome)
			deep := `{"type":"publish","data":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`
			for _, bad := range []struct{ frame, code string }{
				{"not json", protocol.CodeBadJSON},
				{"\xff\xfe\xfd", protocol.CodeBadJSON},
				{`{"type":"publish","data":1} trailing`, protocol.CodeBadJSON},
				{`{"type":"publish","id":1,"data":1}`, protocol.CodeBadJSON},
				{deep, protocol.CodeBadJSON},
				{`{"type":"subscribe","id":"s1"}`, protocol.CodeUnknownType},
				{`{"data":1}`, protocol.CodeUnknownType},
				{`{"type":"publish","id":"no-data"}`, protocol.CodeBadRequest},
				{`{"type":"publish","id":"` + strings.Repeat("i", protocol.MaxIDLen+1) + `","data":1}`, protocol.CodeBadRequest},
			} {
				if err := ws.WriteMessage(websocket.TextMessage, []byte(bad.frame)); err != nil {
					t.Fatal(err)
				}
				_, b := next(protocol.TypeError)
				var e protocol.Incoming
				_ = json.Unmarshal(b, &e)
				if e.Code != bad.code || e.Error == "" {
					t.Errorf("%s: %.40q answered %s, want code %s", target.ID, bad.frame, b, bad.code)
				}
				wB.forbid(e.ID) // nothing of it reaches any room
				wA.forbid(e.ID)
			}
			// Binary garbage is published as binary: it comes back with its seq, and the
			// witnesses see it too.
			garbage := make([]byte, 1000)
			_, _ = rand.Read(garbage)
			garbage[0] = 0xff // never mistaken for text
			if err := ws.WriteMessage(websocket.BinaryMessage, garbage); err != nil {
				t.Fatal(err)
			}
			_, b := next("binary")
			if seq, payload, err := protocol.ParseBinary(b); err != nil || seq == 0 || !bytes.Equal(payload, garbage) {
				t.Errorf("%s: binary garbage came back as seq %d, %d bytes, %v", target.ID, seq, len(payload), err)
			}
			wA.expectBinary(garbage)
			// Still open: a good publish is acked and delivered.
			id := "bad-frames-ok-" + target.ID
			if err := ws.WriteJSON(protocol.Publish{Type: protocol.TypePublish, ID: id, Data: []byte(`"still here"`)}); err != nil {
				t.Fatal(err)
			}
			next(protocol.TypeAck)
			wA.expect(id)
			// Over --max-frame: closed with 1009.
			if err := ws.WriteMessage(websocket.TextMessage, make([]byte, hostileMaxFrame+1000)); err != nil {
				t.Fatal(err)
			}
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
						t.Errorf("%s: a frame over --max-frame ended with %v, want close 1009", target.ID, err)
					}
					break
				}
			}
		}
	})

	run("invalid UTF-8 in a publish", func(t *testing.T) {
		// A publish whose JSON string holds bytes that are not UTF-8: the server must refuse it
		// (an error frame, or close 1007 as RFC 6455 has it) or repair it, never put it in a
		// text frame. RFC 6455 (8.1) makes every receiver of a text frame that is not UTF-8 fail
		// the connection, so one such message delivered would cut every browser in the room,
		// again on each resume while the room retains it. (A room of its own: the witnesses'
		// Go clients would take it without complaint.)
		for _, target := range []*proc.Proc{n1, r1} {
			ws, _, err := websocket.DefaultDialer.DialContext(t.Context(), "ws://"+target.HTTP+"/v1/rooms/"+utf8Room+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
			id := "utf8-" + target.ID
			if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"publish","id":"`+id+`","data":"caf`+"\xe9 \xff"+`"}`)); err != nil {
				t.Fatal(err)
			}
			for {
				mt, b, err := ws.ReadMessage()
				if websocket.IsCloseError(err, websocket.CloseInvalidFramePayloadData) {
					t.Logf("%s: a publish with invalid UTF-8 was answered with %v", target.ID, err)
					break
				}
				if err != nil {
					t.Fatalf("%s: %v", target.ID, err)
				}
				if mt == websocket.TextMessage && !utf8.Valid(b) {
					t.Errorf("%s: the server sent a text frame that is not UTF-8 (a browser fails the connection): %q", target.ID, b)
				}
				var f protocol.Incoming
				_ = json.Unmarshal(b, &f)
				if f.Type == protocol.TypeError || (f.ID == id && f.Type == protocol.TypeMessage) {
					t.Logf("%s: a publish with invalid UTF-8 was answered with %s", target.ID, b)
					break
				}
			}
		}
	})

	run("bad requests", func(t *testing.T) {
		// Malformed HTTP on either door: JSON errors with the right status, never an upgrade.
		upgrade := func(req *http.Request) {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		}
		ws := "/v1/rooms/" + roomA + "/ws"
		for _, target := range []*proc.Proc{n1, r1} {
			for _, c := range []struct {
				path    string
				upgrade bool
				status  int
				code    string
			}{
				{"/v1/rooms/bad%20room/ws", true, 400, protocol.CodeBadRoom},
				{"/v1/rooms/caf%C3%A9/ws", true, 400, protocol.CodeBadRoom},
				{"/v1/rooms/" + strings.Repeat("r", 129) + "/ws", true, 400, protocol.CodeBadRoom},
				{"/v1/rooms/" + strings.Repeat("r", 129), false, 400, protocol.CodeBadRoom},
				{ws + "?since=abc", true, 400, protocol.CodeBadRequest},
				{ws + "?since=-1", true, 400, protocol.CodeBadRequest},
				{ws + "?since=18446744073709551616", true, 400, protocol.CodeBadRequest},
				{ws + "?since=1&epoch=" + strings.Repeat("e", 65), true, 400, protocol.CodeBadRequest},
				{ws + "?client=%00", true, 400, protocol.CodeBadRequest},
				{ws + "?client=" + strings.Repeat("c", 129), true, 400, protocol.CodeBadRequest},
				{ws + "?presence=yes", true, 400, protocol.CodeBadRequest},
				{ws, false, 400, protocol.CodeBadRequest}, // the WebSocket path without an upgrade
				{"/v1/nothing", false, 404, protocol.CodeNotFound},
			} {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				req, _ := http.NewRequestWithContext(ctx, "GET", target.URL()+c.path, nil)
				if c.upgrade {
					upgrade(req)
				}
				resp, err := quickHTTP.Do(req)
				if err != nil {
					cancel()
					t.Errorf("%s %s: %v", target.ID, c.path, err)
					continue
				}
				var e protocol.Error
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				cancel()
				if resp.StatusCode != c.status || json.Unmarshal(body, &e) != nil || e.Code != c.code || e.Error == "" {
					t.Errorf("%s GET %.80s: %d %s, want %d with JSON code %s", target.ID, c.path, resp.StatusCode, bytes.TrimSpace(body), c.status, c.code)
				}
			}
			// An upgrade with a WebSocket version nobody speaks: 400 with a JSON error, checked
			// before anything else, so neither a connection nor (through the router) an owner
			// leg is opened for it.
			opened := gauge(t, n1, "roost_connections_opened_total")
			req, _ := http.NewRequestWithContext(t.Context(), "GET", target.URL()+ws, nil)
			upgrade(req)
			req.Header.Set("Sec-WebSocket-Version", "8")
			if resp, err := quickHTTP.Do(req); err != nil {
				t.Errorf("%s: %v", target.ID, err)
			} else {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var e protocol.Error
				if resp.StatusCode != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || e.Code != protocol.CodeBadRequest {
					t.Errorf("%s: an upgrade with Sec-WebSocket-Version 8: %d %q, want 400 %s", target.ID, resp.StatusCode, bytes.TrimSpace(body), protocol.CodeBadRequest)
				}
				if d := gauge(t, n1, "roost_connections_opened_total") - opened; d != 0 {
					t.Errorf("%s: n1 opened %v connections for an upgrade with Sec-WebSocket-Version 8", target.ID, d)
				}
			}
			// Headers over net/http's 1 MB limit: 431.
			if status, err := rawStatus(target.HTTP, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Huge: "+strings.Repeat("h", 1<<20+8<<10)+"\r\n\r\n"); err != nil || status != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("%s: 1 MB of headers: %d %v, want 431", target.ID, status, err)
			}
			// A request line that is not HTTP: 400 from net/http.
			if status, err := rawStatus(target.HTTP, "HELLO\r\n\r\n"); err != nil || status != http.StatusBadRequest {
				t.Errorf("%s: a request line that is not HTTP: %d %v, want 400", target.ID, status, err)
			}
		}
		wait.Eventually(t, 5*time.Second, "no connection left behind", func() bool { return gauge(t, n1, "roost_connections") == baseN1 })
	})

	run("publish flood", func(t *testing.T) {
		// One connection in the witness room A publishing as fast as it can, on n1 and through
		// r1, is held to --publish-rate (100/s, burst 200): the excess is refused, each with an
		// error frame, and none of it is delivered; what was acked is delivered once.
		for _, target := range []*proc.Proc{n1, r1} {
			acks, limited, took := publishFlood(t, target, roomA, "flood-"+target.ID+"-", 1000, wA)
			t.Logf("%s: 1000 publishes in %s: %d acked, %d refused as rate_limited", target.ID, took.Round(time.Millisecond), acks, limited)
			// The burst (200) and what 100/s refills while the flood lasts pass; the rest is refused.
			if allowed := 200 + 100*took.Seconds() + 5; float64(acks) > allowed || limited == 0 {
				t.Errorf("%s: 1000 publishes in %s: %d acked (at most %.0f allowed), %d rate limited", target.ID, took, acks, allowed, limited)
			}
		}
	})

	run("refused publishes through the router", func(t *testing.T) {
		// The router keeps a client's publishes until they are answered, to re-send them to the
		// room's next owner after a move (at most 4096 per connection, then it counts
		// roost_refused_total{reason="pending_full"}). A publish the owner refused is answered
		// too: it must not stay kept. Kept, it would be re-sent - and delivered - after the next
		// move although its publisher was told it was not, and it would hold the router's
		// memory: up to 4096 frames of --max-frame (4 GiB at the default 1 MiB) per connection.
		const total = 4500
		full := labelled(t, r1, "roost_refused_total", "reason", "pending_full")
		acks, limited, took := publishFlood(t, r1, roomA, "refused-", total, wA)
		t.Logf("r1: %d publishes in %s: %d acked, %d refused as rate_limited", total, took.Round(time.Millisecond), acks, limited)
		if d := labelled(t, r1, "roost_refused_total", "reason", "pending_full") - full; d != 0 {
			t.Errorf("after %d publishes, every one answered (%d refused), r1 found its re-send buffer full %v times: "+
				"it keeps refused publishes (to re-send after a move) until the connection ends", total, limited, d)
		}
	})

	run("stream ingest junk", func(t *testing.T) {
		// Junk on n1's TCP ingest port gets an ERR line and a close; a source that says nothing
		// is cut after --ingest-handshake-timeout (1s); a source that sends a bad frame header
		// after good frames keeps the good ones. A real source then streams into the witness
		// room A, and the witnesses get every frame.
		for _, c := range []struct {
			name, send, want string
			min              time.Duration
		}{
			{"junk handshake", "\x00\xff garbage that is not a handshake\n", "ERR bad_handshake ", 0},
			{"unknown field", `{"room":"` + roomA + `","x":1}` + "\n", "ERR bad_handshake ", 0},
			{"bad room", `{"room":"no room"}` + "\n", "ERR bad_room ", 0},
			{"handshake too long", strings.Repeat("{", 5000), "ERR too_large ", 0},
			{"silent", "", "ERR bad_handshake ", 900 * time.Millisecond},
		} {
			start := time.Now()
			line, err := tcpExchange(n1.TCP, []byte(c.send))
			took := time.Since(start)
			switch {
			case err != nil:
				t.Errorf("%s: %v", c.name, err)
			case !strings.HasPrefix(line, c.want):
				t.Errorf("%s: answered %q, want %q...", c.name, line, c.want)
			case took < c.min || took > c.min+2*time.Second:
				t.Errorf("%s: answered after %s, want after %s", c.name, took, c.min)
			}
		}
		// Good frames, then a frame length of zero: the good ones are in the room, then ERR.
		var hello bytes.Buffer
		fmt.Fprintf(&hello, `{"room":%q}`+"\n", roomA)
		var good [][]byte
		for i := range 3 {
			f := fmt.Appendf(nil, "before-junk-%d", i)
			good = append(good, f)
			hello.Write(binary.BigEndian.AppendUint32(nil, uint32(len(f))))
			hello.Write(f)
		}
		hello.Write([]byte{0, 0, 0, 0})
		answer, err := tcpExchangeAll(n1.TCP, hello.Bytes())
		if err != nil || !strings.HasPrefix(answer, "OK ") || !strings.Contains(answer, "\nERR bad_frame ") {
			t.Errorf("good frames then a zero length: answered %q %v, want OK then ERR bad_frame", answer, err)
		}
		wA.expectBinary(good...)
		// A real source, through the router's placement, into the witness room.
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		src, err := client.OpenStream(ctx, r1.URL(), roomA, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		var frames [][]byte
		for i := range 20 {
			f := fmt.Appendf(nil, "stream-frame-%d", i)
			if err := src.Send(ctx, f); err != nil {
				t.Fatal(err)
			}
			frames = append(frames, f)
		}
		if err := src.Finish(ctx); err != nil {
			t.Fatal(err)
		}
		wA.expectBinary(frames...)
	})

	run("forged hand-off", func(t *testing.T) {
		// The node-to-node endpoints of n1 refuse every request not signed with the cluster
		// secret, or signed too long ago: 401, nothing installed, the witness room untouched.
		// A correctly signed harmless request is heard (proving the signatures below differ
		// only in what they claim to).
		key := peer.Key(hostileSecret)
		probe := func(room string) protocol.Welcome {
			t.Helper()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			c, err := client.Dial(ctx, n1.URL(), room, &client.Options{DisableReconnect: true, Discard: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			return c.Welcome()
		}
		before := probe(roomA)
		gained := labelled(t, n1, "roost_rooms_gained_total", "how", "handoff")
		refused := labelled(t, n1, "roost_refused_total", "reason", "peer_auth")
		// The forged states: the witness room (held by n1) jumping ahead in its own epoch, and
		// a room n1 owns but does not hold yet.
		batch := handoff.Batch{From: "n2", Ring: "forged", Rooms: []room.State{
			{Room: roomA, Epoch: before.Epoch, Seq: before.Seq + 1_000_000},
			{Room: fresh, Epoch: "forged-epoch", Seq: 1_000_000},
		}}
		forged, err := handoff.Encode(batch)
		if err != nil {
			t.Fatal(err)
		}
		handoffPath, release := handoff.Path, handoff.ReleasePath(roomA)
		now := time.Now().Unix()
		sent := 0
		for _, c := range []struct {
			name, path string
			body       []byte
			sig        string
		}{
			{"no signature", handoffPath, forged, ""},
			{"not a signature", handoffPath, forged, "123.deadbeef"},
			{"garbage", handoffPath, forged, strings.Repeat("x", 200)},
			{"another secret", handoffPath, forged, signFor(n1, peer.Key("not-the-secret"), handoffPath, now, forged)},
			{"signed 5 minutes ago (a replay)", handoffPath, forged, signFor(n1, key, handoffPath, now-300, forged)},
			{"signed 5 minutes ahead", handoffPath, forged, signFor(n1, key, handoffPath, now+300, forged)},
			{"signature of another body", handoffPath, forged, signFor(n1, key, handoffPath, now, []byte("other"))},
			{"signature of another path", handoffPath, forged, signFor(n1, key, release, now, forged)},
			{"release, no signature", release, nil, ""},
			{"release, another secret", release, nil, signFor(n1, peer.Key("not-the-secret"), release, now, nil)},
			{"release, signed 5 minutes ago", release, nil, signFor(n1, key, release, now-300, nil)},
		} {
			status, body, err := postPeer(t.Context(), n1.URL()+c.path, c.body, c.sig)
			sent++
			if err != nil || status != http.StatusUnauthorized || !strings.Contains(body, protocol.CodeUnauthorized) {
				t.Errorf("%s: %d %s %v, want 401 unauthorized", c.name, status, body, err)
			}
		}
		// Signed right and fresh, a hand-off check (which installs nothing) is heard: n1 says it
		// owns the room.
		check, _ := handoff.Encode(handoff.Batch{From: "n2", Ring: "x", Check: true, Rooms: []room.State{{Room: roomA}}})
		status, body, err := postPeer(t.Context(), n1.URL()+handoffPath, check, signFor(n1, key, handoffPath, time.Now().Unix(), check))
		if err != nil || status != http.StatusOK || !strings.Contains(body, roomA) {
			t.Errorf("a correctly signed hand-off check: %d %s %v, want 200 naming %s", status, body, err, roomA)
		}
		// The router has no node-to-node endpoints.
		if status, body, err := postPeer(t.Context(), r1.URL()+handoffPath, forged, ""); err != nil || status != http.StatusNotFound {
			t.Errorf("hand-off posted to the router: %d %s %v, want 404", status, body, err)
		}
		if d := labelled(t, n1, "roost_refused_total", "reason", "peer_auth") - refused; d != float64(sent) {
			t.Errorf("roost_refused_total{reason=peer_auth} rose by %v, want %d", d, sent)
		}
		if d := labelled(t, n1, "roost_rooms_gained_total", "how", "handoff") - gained; d != 0 {
			t.Errorf("%v rooms arrived by hand-off", d)
		}
		after := probe(roomA)
		if after.Epoch != before.Epoch || after.Seq < before.Seq || after.Seq >= batch.Rooms[0].Seq {
			t.Errorf("the witness room went from epoch %s seq %d to epoch %s seq %d", before.Epoch, before.Seq, after.Epoch, after.Seq)
		}
		if w := probe(fresh); w.Seq != 0 || w.Epoch == "forged-epoch" {
			t.Errorf("a room n1 did not hold: epoch %s seq %d after the forged hand-off, want a fresh room", w.Epoch, w.Seq)
		}
	})

	run("witnesses", func(t *testing.T) {
		wA.finish(t)
		wB.finish(t)
	})
}

// publishFlood publishes total small messages to room on target as fast as it reads their
// answers (an ack or an error frame each): it stays at most 300 publishes ahead, so the flooder
// is refused for its rate and not dropped for reading too slowly (--send-queue 1024). The ids
// acked and refused are told to w.
func publishFlood(t *testing.T, target *proc.Proc, room, prefix string, total int64, w *witness) (acks, limited int64, took time.Duration) {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.DialContext(t.Context(), "ws://"+target.HTTP+"/v1/rooms/"+room+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	_ = ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	var acked, refused atomic.Int64
	read, reading := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(reading)
		_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		for acked.Load()+refused.Load() < total {
			var f protocol.Incoming
			if err := ws.ReadJSON(&f); err != nil {
				read <- fmt.Errorf("%s: after %d acks and %d refusals: %w", target.ID, acked.Load(), refused.Load(), err)
				return
			}
			switch {
			case f.Type == protocol.TypeAck:
				w.expect(f.ID)
				acked.Add(1)
			case f.Type == protocol.TypeError && f.Code == protocol.CodeRateLimited:
				w.forbid(f.ID)
				refused.Add(1)
			case f.Type == protocol.TypeError:
				read <- fmt.Errorf("%s: unexpected error frame %+v", target.ID, f)
				return
			}
		}
		read <- nil
	}()
	start := time.Now()
write:
	for i := range total {
		for i-acked.Load()-refused.Load() > 300 {
			select {
			case <-reading:
				break write // the reader failed: its error says why
			case <-time.After(time.Millisecond):
			}
		}
		if err := ws.WriteJSON(protocol.Publish{Type: protocol.TypePublish, ID: fmt.Sprint(prefix, i), Data: []byte(`1`)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	return acked.Load(), refused.Load(), time.Since(start)
}

// witness is a room that carries a steady numbered stream, with one subscriber through a router
// and one straight on the owner, neither allowed to reconnect, while hostile clients do their
// worst to the same owner and router. Other well-behaved publishers may use the room too, and
// say what they got acked (expect) or refused (forbid). At the end every subscriber must have
// every message of the room once, in order, with no gap, and nothing refused.
type witness struct {
	name, room string
	owner      *proc.Proc
	pub        *client.Conn
	subs       []*witnessSub
	stop       chan struct{}
	done       chan struct{}

	mu       sync.Mutex
	acked    []string // the witness's own publishes, in order
	pubErr   error
	expected map[string]bool // ids others got acked in the room
	refused  map[string]bool // ids others got refused
	binaries [][][]byte      // binary payloads others sent, in order per sender
}

type witnessSub struct {
	via     string
	c       *client.Conn
	welcome protocol.Welcome
	done    chan struct{}

	mu      sync.Mutex
	msgs    []witnessMsg
	oddness []string // what a witness must never see: gap, reset, reconnected, error events
	lastSeq uint64
}

type witnessMsg struct {
	seq    uint64
	id     string // text messages
	binary bool
	sum    [32]byte // binary messages: the payload's hash
}

func startWitness(t *testing.T, name, room string, owner, rt *proc.Proc) *witness {
	t.Helper()
	w := &witness{name: name, room: room, owner: owner, stop: make(chan struct{}), done: make(chan struct{}),
		expected: map[string]bool{}, refused: map[string]bool{}}
	for _, base := range []*proc.Proc{rt, owner} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		c, err := client.Dial(ctx, base.URL(), room, &client.Options{DisableReconnect: true, MaxFrame: hostileMaxFrame})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s := &witnessSub{via: base.ID, c: c, welcome: c.Welcome(), done: make(chan struct{})}
		w.subs = append(w.subs, s)
		go s.read(t.Context())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	pub, err := client.Dial(ctx, rt.URL(), room, &client.Options{DisableReconnect: true, Discard: true})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	w.pub = pub
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("%s-%d", name, i)
			ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
			_, err := pub.PublishID(ctx, id, i)
			cancel()
			w.mu.Lock()
			if err != nil {
				w.pubErr = fmt.Errorf("publish %s: %w", id, err)
				w.mu.Unlock()
				return
			}
			w.acked = append(w.acked, id)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		select {
		case <-w.stop:
		default:
			close(w.stop)
		}
		pub.Close()
		<-w.done
	})
	return w
}

// read records the subscriber's events until its Conn or the test ends.
func (s *witnessSub) read(ctx context.Context) {
	defer close(s.done)
	for {
		ev, err := s.c.Next(ctx)
		if err != nil {
			return // the Conn ended: finish checks whether that was its own Close
		}
		s.mu.Lock()
		switch ev.Type {
		case client.EventMessage:
			s.msgs = append(s.msgs, witnessMsg{seq: ev.Seq, id: ev.ID})
			s.lastSeq = ev.Seq
		case client.EventBinary:
			s.msgs = append(s.msgs, witnessMsg{seq: ev.Seq, binary: true, sum: sha256.Sum256(ev.Payload)})
			s.lastSeq = ev.Seq
		case client.EventPresence:
		default:
			s.oddness = append(s.oddness, fmt.Sprintf("%s event (%v)", ev.Type, ev.Err))
		}
		s.mu.Unlock()
	}
}

func (s *witnessSub) last() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeq
}

// expect says ids were acked in the room: each must reach every subscriber once.
func (w *witness) expect(ids ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range ids {
		w.expected[id] = true
	}
}

// forbid says ids were refused: none may reach a subscriber.
func (w *witness) forbid(ids ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range ids {
		if id != "" {
			w.refused[id] = true
		}
	}
}

// expectBinary says one sender put these binary payloads into the room, in this order.
func (w *witness) expectBinary(payloads ...[]byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.binaries = append(w.binaries, payloads)
}

// finish stops the stream and checks every subscriber against the room.
func (w *witness) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	<-w.done
	w.mu.Lock()
	acked, pubErr := slices.Clone(w.acked), w.pubErr
	w.mu.Unlock()
	if pubErr != nil {
		t.Errorf("witness %s: %v", w.name, pubErr)
	}
	if len(acked) < 50 {
		t.Errorf("witness %s: its publisher got only %d acks", w.name, len(acked))
	}
	// Nothing is published any more: the room's seq now is what every subscriber must reach.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	probe, err := client.Dial(ctx, w.owner.URL(), w.room, &client.Options{DisableReconnect: true, Discard: true})
	if err != nil {
		t.Fatalf("witness %s: %v", w.name, err)
	}
	final := probe.Welcome()
	probe.Close()
	for _, s := range w.subs {
		deadline := time.Now().Add(10 * time.Second)
		for s.last() < final.Seq && time.Now().Before(deadline) && s.c.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		if err := s.c.Err(); err != nil {
			t.Errorf("witness %s, subscriber via %s: its connection ended (a reconnect would have been needed): %v", w.name, s.via, err)
		}
	}
	for _, s := range w.subs {
		s.c.Close()
		<-s.done
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.subs {
		s.mu.Lock()
		msgs, odd := s.msgs, s.oddness
		s.mu.Unlock()
		who := fmt.Sprintf("witness %s, subscriber via %s", w.name, s.via)
		for _, o := range odd {
			t.Errorf("%s: %s", who, o)
		}
		if s.welcome.Epoch != final.Epoch {
			t.Errorf("%s: joined epoch %s, the room is in epoch %s now", who, s.welcome.Epoch, final.Epoch)
		}
		// Every seq from the welcome on, once, in order.
		if uint64(len(msgs)) != final.Seq-s.welcome.Seq {
			t.Errorf("%s: %d messages, the room sequenced %d after its welcome", who, len(msgs), final.Seq-s.welcome.Seq)
		}
		for i, m := range msgs {
			if m.seq != s.welcome.Seq+uint64(i)+1 {
				t.Errorf("%s: message %d has seq %d, want %d", who, i, m.seq, s.welcome.Seq+uint64(i)+1)
				break
			}
		}
		// Its own stream in order, everything acked to others once, nothing refused.
		count := map[string]int{}
		var own []string
		for _, m := range msgs {
			if !m.binary {
				count[m.id]++
				if strings.HasPrefix(m.id, w.name+"-") {
					own = append(own, m.id)
				}
			}
		}
		if !slices.Equal(own, acked) {
			t.Errorf("%s: %d of its own messages for %d acked (first difference at %d)", who, len(own), len(acked), firstDiff(own, acked))
		}
		missing, doubled := 0, 0
		for id := range w.expected {
			switch count[id] {
			case 1:
			case 0:
				missing++
			default:
				doubled++
			}
		}
		if missing > 0 || doubled > 0 {
			t.Errorf("%s: of %d messages acked to other publishers, %d missing and %d delivered twice", who, len(w.expected), missing, doubled)
		}
		for id := range w.refused {
			if count[id] > 0 {
				t.Errorf("%s: refused publish %q was delivered", who, id)
			}
		}
		// Binary payloads: each once, in each sender's order.
		at := map[[32]byte][]int{}
		for i, m := range msgs {
			if m.binary {
				at[m.sum] = append(at[m.sum], i)
			}
		}
		for _, group := range w.binaries {
			prev := -1
			for _, p := range group {
				idx := at[sha256.Sum256(p)]
				if len(idx) != 1 || idx[0] < prev {
					t.Errorf("%s: binary payload %.20q arrived %d times (at %v, after %d)", who, p, len(idx), idx, prev)
					break
				}
				prev = idx[0]
			}
		}
		t.Logf("%s: %d messages (seq %d..%d), %d of its own, %d from other publishers, %d binary groups", who,
			len(msgs), s.welcome.Seq+1, final.Seq, len(own), len(w.expected), len(w.binaries))
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// rawUpgrade opens a WebSocket by hand on a raw TCP connection and returns the connection right
// after the 101, for a client that then does what a library would not.
func rawUpgrade(addr, path string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", path, addr, key)
	// Read the answer's head byte by byte: what follows it stays in the socket.
	var head []byte
	one := make([]byte, 1)
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if _, err := c.Read(one); err != nil {
			c.Close()
			return nil, fmt.Errorf("upgrade %s: %w after %q", path, err, head)
		}
		head = append(head, one[0])
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		c.Close()
		return nil, fmt.Errorf("upgrade %s: answered %q", path, head)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// connectAndLeave opens a WebSocket to room on addr, waits for the welcome and leaves: with a
// close frame, or by dropping the socket.
func connectAndLeave(ctx context.Context, d *websocket.Dialer, addr, room string, closeFrame bool) error {
	ws, _, err := d.DialContext(ctx, "ws://"+addr+"/v1/rooms/"+room+"/ws", nil)
	if err != nil {
		return err
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f protocol.Incoming
	if err := ws.ReadJSON(&f); err != nil || f.Type != protocol.TypeWelcome {
		return fmt.Errorf("no welcome: %+v %v", f, err)
	}
	if closeFrame {
		return ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	}
	return nil
}

// smallReceiveBuffer dials with the smallest socket receive buffer, so a client that does not
// read backs up at once instead of after the megabytes autotuning would allow.
func smallReceiveBuffer(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	return d.DialContext(ctx, network, addr)
}

// rawStatus sends request on a raw connection and returns the status of the answer; the request
// is written while the answer is read, as a server may answer before reading all of it.
func rawStatus(addr, request string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	go func() { _, _ = io.WriteString(c, request) }()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// tcpExchange sends b to a stream ingest port and returns the first line of the answer.
func tcpExchange(addr string, b []byte) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if len(b) > 0 {
		if _, err := c.Write(b); err != nil {
			return "", err
		}
	}
	return bufio.NewReader(c).ReadString('\n')
}

// tcpExchangeAll sends b to a stream ingest port and returns all it answers until it closes.
func tcpExchangeAll(addr string, b []byte) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		return "", err
	}
	out, err := io.ReadAll(c)
	return string(out), err
}

// postPeer POSTs body to url with the signature header (none when sig is empty).
func postPeer(ctx context.Context, url string, body []byte, sig string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	req.Header.Set("Content-Type", handoff.ContentType)
	if sig != "" {
		req.Header.Set(peer.SignatureHeader, sig)
	}
	resp, err := quickHTTP.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
