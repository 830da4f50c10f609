package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/protocol"
)

// witness is a room that carries a steady numbered stream, with one subscriber through the
// router and one straight on the owner, neither allowed to reconnect, while hostile clients do
// their worst to the same owner and router. At the end both must hold every acked message once,
// in order.
type witness struct {
	room  string
	pub   *client.Conn
	subs  []*client.Conn
	got   [][]string // per subscriber, message ids in arrival order
	acked []string
	errs  []error
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startWitness(t *testing.T, rt, owner *proc, room string) *witness {
	t.Helper()
	w := &witness{room: room, stop: make(chan struct{})}
	for _, base := range []string{rt.url(), owner.url()} {
		c, err := client.Dial(t.Context(), base, room, &client.Options{DisableReconnect: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		w.subs = append(w.subs, c)
	}
	w.got = make([][]string, len(w.subs))
	w.errs = make([]error, len(w.subs))
	for i, c := range w.subs {
		w.wg.Go(func() {
			for {
				ev, err := c.Next(context.Background())
				if err != nil {
					if c.Err() != nil && !strings.Contains(err.Error(), "closed") {
						w.errs[i] = err
					}
					return
				}
				switch ev.Type {
				case client.EventMessage:
					if strings.HasPrefix(ev.ID, "w-") {
						w.got[i] = append(w.got[i], ev.ID)
					}
				case client.EventGap, client.EventReset:
					w.errs[i] = fmt.Errorf("%s event", ev.Type)
				}
			}
		})
	}
	pub, err := client.Dial(t.Context(), rt.url(), room, &client.Options{DisableReconnect: true, Discard: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	w.pub = pub
	w.wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			id := fmt.Sprint("w-", i)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := pub.PublishID(ctx, id, i)
			cancel()
			if err != nil {
				w.errs = append(w.errs, fmt.Errorf("witness publish %s: %w", id, err))
				return
			}
			w.acked = append(w.acked, id)
		}
	})
	return w
}

// check stops the stream and verifies both subscribers.
func (w *witness) check(t *testing.T) {
	t.Helper()
	close(w.stop)
	time.Sleep(500 * time.Millisecond) // the last acked message reaches both subscribers
	for _, c := range w.subs {
		c.Close()
	}
	w.pub.Close()
	w.wg.Wait()
	for _, err := range w.errs {
		if err != nil {
			t.Errorf("witness: %v", err)
		}
	}
	if len(w.acked) < 50 {
		t.Errorf("the witness publisher got only %d acks", len(w.acked))
	}
	for i, got := range w.got {
		if strings.Join(got, ",") != strings.Join(w.acked, ",") {
			t.Errorf("witness subscriber %d: %d messages for %d acked (first difference near %d)", i, len(got), len(w.acked), firstDiff(got, w.acked))
		}
	}
	t.Logf("witness: %d messages, each delivered once and in order to both subscribers", len(w.acked))
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// metrics reads p's /metrics.
func metrics(t *testing.T, p *proc) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := quickHTTP.Get(p.url() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// gauge reads one unlabelled gauge or counter from p's /metrics.
func gauge(t *testing.T, p *proc, name string) float64 {
	t.Helper()
	f := metrics(t, p)[name]
	if f == nil || len(f.Metric) == 0 {
		t.Fatalf("%s has no metric %s", p.id, name)
	}
	return f.Metric[0].GetGauge().GetValue() + f.Metric[0].GetCounter().GetValue()
}

// TestHostileClients throws bad clients at a node and a router while a witness room carries a
// steady stream through both; the witness must lose nothing and never reconnect, and every bad
// client must get the documented answer.
func TestHostileClients(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	// n1 and the router ping every 400 ms, so silent sockets go quickly; n2 pings rarely and has a
	// short send queue, so a subscriber that never reads is dropped by the queue, not by pings.
	flags := []string{"--handshake-timeout", "1s", "--cluster-secret", "hostile-test", "--max-frame", "65536"}
	n1 := startProc(t, "node", "n1", "", append(flags, "--ping-interval", "400ms")...)
	n2 := startProc(t, "node", "n2", n1.gossip, append(flags, "--ping-interval", "10s", "--send-queue", "64")...)
	rt := startProc(t, "router", "r1", n1.gossip, append(flags, "--ping-interval", "400ms")...)
	waitProcRing(t, []*proc{n1, n2, rt}, 2)
	var room, other, slow string
	for r, owner := range roomsByOwner(t, rt, "hostile-", 2, "n1", "n2") {
		switch {
		case owner == "n2":
			slow = r
		case room == "":
			room = r
		default:
			other = r
		}
	}
	w := startWitness(t, rt, n1, room)
	baseNode, baseRouter := gauge(t, n1, "roost_connections"), gauge(t, rt, "roost_router_connections")

	t.Run("slowloris", func(t *testing.T) {
		// Request headers trickling in a byte at a time are cut off at --handshake-timeout.
		var wg sync.WaitGroup
		cut := make(chan time.Duration, 200)
		for i := range 200 {
			target := n1.http
			if i%2 == 1 {
				target = rt.http
			}
			wg.Go(func() {
				c, err := net.DialTimeout("tcp", target, 2*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				start := time.Now()
				fmt.Fprintf(c, "GET /v1/rooms/%s/ws HTTP/1.1\r\nHost: x\r\n", room)
				for time.Since(start) < 5*time.Second {
					if _, err := c.Write([]byte("X")); err != nil {
						break
					}
					_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
					if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
						break
					}
				}
				cut <- time.Since(start)
			})
		}
		// Meanwhile a normal client connects at once.
		c, err := client.Dial(t.Context(), n1.url(), other, &client.Options{DisableReconnect: true, HandshakeTimeout: time.Second})
		if err != nil {
			t.Fatalf("a normal client during the slowloris: %v", err)
		}
		c.Close()
		wg.Wait()
		close(cut)
		for d := range cut {
			if d > 3*time.Second {
				t.Fatalf("a slowloris connection lived %s (handshake timeout 1s)", d)
			}
		}
	})

	t.Run("silent sockets", func(t *testing.T) {
		// Upgraded, then never read from: pings go unanswered and the member closes them.
		var held []*websocket.Conn
		for i := range 20 {
			target := n1.http
			if i%2 == 1 {
				target = rt.http
			}
			ws, _, err := websocket.DefaultDialer.Dial("ws://"+target+"/v1/rooms/"+other+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, ws)
		}
		defer func() {
			for _, ws := range held {
				ws.Close()
			}
		}()
		eventually(t, 10*time.Second, "silent connections closed by node and router", func() bool {
			return gauge(t, n1, "roost_connections") <= baseNode && gauge(t, rt, "roost_router_connections") <= baseRouter
		})
		if n := labelled(t, n1, "roost_drops_total", "reason", "silent"); n < 10 {
			t.Fatalf("roost_drops_total{reason=silent} = %v, want 10 (and more for the router's legs)", n)
		}
	})

	t.Run("connect flood", func(t *testing.T) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		failed := 0
		for g := range 40 {
			wg.Go(func() {
				for i := range 15 {
					target := n1.http
					if (g+i)%2 == 1 {
						target = rt.http
					}
					ws, _, err := websocket.DefaultDialer.Dial("ws://"+target+"/v1/rooms/"+other+"/ws", nil)
					if err != nil {
						mu.Lock()
						failed++
						mu.Unlock()
						continue
					}
					ws.Close()
				}
			})
		}
		wg.Wait()
		if failed > 0 {
			t.Errorf("%d of 600 connects failed", failed)
		}
		eventually(t, 10*time.Second, "connection gauges back to where they were", func() bool {
			return gauge(t, n1, "roost_connections") <= baseNode && gauge(t, rt, "roost_router_connections") <= baseRouter
		})
	})

	t.Run("subscriber that never reads", func(t *testing.T) {
		// It sits in a room that then takes 32 MB: far more than its queue and socket buffers.
		// It is dropped with 4008; a subscriber that reads gets everything.
		lazy, _, err := websocket.DefaultDialer.Dial("ws://"+n2.http+"/v1/rooms/"+slow+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer lazy.Close()
		reader, err := client.Dial(t.Context(), rt.url(), slow, &client.Options{DisableReconnect: true})
		if err != nil {
			t.Fatal(err)
		}
		defer reader.Close()
		read := make(chan error, 1)
		go func() {
			for n := 0; n < 1000; {
				ev, err := reader.Next(t.Context())
				if err != nil {
					read <- fmt.Errorf("the reading subscriber after %d messages: %w", n, err)
					return
				}
				if ev.Type == client.EventMessage {
					n++
				}
			}
			read <- nil
		}()
		blob := strings.Repeat("x", 32<<10)
		var wg sync.WaitGroup
		for p := range 10 {
			wg.Go(func() {
				c, err := client.Dial(t.Context(), n2.url(), slow, &client.Options{DisableReconnect: true, Discard: true})
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				for i := range 100 { // within --publish-burst: none is rate limited
					if _, err := c.PublishID(t.Context(), fmt.Sprintf("blast-%d-%d", p, i), blob); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		// Its close frame (4008) waits behind megabytes it never read, so the socket may be
		// reset first; the node counts the drop either way.
		_ = lazy.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			_, _, err := lazy.ReadMessage()
			if err == nil {
				continue
			}
			if isTimeout(err) {
				t.Fatal("the subscriber that never read was not dropped")
			}
			if ce, ok := err.(*websocket.CloseError); ok && ce.Code != protocol.CloseSlowConsumer && ce.Code != websocket.CloseAbnormalClosure {
				t.Fatalf("the subscriber that never read was closed with %v, want 4008 (or no close frame)", err)
			}
			break
		}
		if n := labelled(t, n2, "roost_drops_total", "reason", "slow_consumer"); n < 1 {
			t.Fatalf("roost_drops_total{reason=slow_consumer} = %v", n)
		}
		if err := <-read; err != nil {
			t.Fatal(err)
		}
	})

	t.Run("bad frames", func(t *testing.T) {
		for _, target := range []*proc{n1, rt} {
			ws, _, err := websocket.DefaultDialer.Dial("ws://"+target.http+"/v1/rooms/"+other+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			readType := func(typ string) protocol.Incoming {
				t.Helper()
				for {
					var f protocol.Incoming
					if err := ws.ReadJSON(&f); err != nil {
						t.Fatalf("%s: waiting for %s: %v", target.id, typ, err)
					}
					if f.Type == typ {
						return f
					}
				}
			}
			readType(protocol.TypeWelcome)
			for frame, code := range map[string]string{
				"not json":                  protocol.CodeBadJSON,
				`{"type":"subscribe"}`:      protocol.CodeUnknownType,
				`{"type":"publish"}`:        protocol.CodeBadRequest,
				`{"type":"publish","id":1}`: protocol.CodeBadJSON,
			} {
				if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
					t.Fatal(err)
				}
				if e := readType(protocol.TypeError); e.Code != code {
					t.Fatalf("%s: %q answered %+v, want %s", target.id, frame, e, code)
				}
			}
			// Still open: a good publish is acked.
			if err := ws.WriteJSON(protocol.Publish{Type: protocol.TypePublish, ID: "ok", Data: []byte(`1`)}); err != nil {
				t.Fatal(err)
			}
			readType(protocol.TypeAck)
			// Too big: closed with 1009.
			if err := ws.WriteMessage(websocket.TextMessage, make([]byte, 70000)); err != nil {
				t.Fatal(err)
			}
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
						t.Fatalf("%s: an oversize frame ended with %v, want 1009", target.id, err)
					}
					break
				}
			}
			ws.Close()
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for _, target := range []*proc{n1, rt} {
			for path, want := range map[string]int{
				"/v1/rooms/bad%20room/ws":               http.StatusBadRequest,
				"/v1/rooms/" + room + "/ws?since=abc":   http.StatusBadRequest,
				"/v1/rooms/" + room + "/ws?client=%00":  http.StatusBadRequest,
				"/v1/rooms/" + strings.Repeat("r", 129): http.StatusBadRequest,
				"/v1/nothing":                           http.StatusNotFound,
			} {
				req, _ := http.NewRequest("GET", target.url()+path, nil)
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", "websocket")
				req.Header.Set("Sec-WebSocket-Version", "13")
				req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
				resp, err := quickHTTP.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want || !strings.Contains(string(body), `"code"`) {
					t.Errorf("%s %s: %d %s, want %d with a JSON error", target.id, path, resp.StatusCode, body, want)
				}
			}
			// A WebSocket path without an upgrade, and headers far over the limit.
			resp, err := quickHTTP.Get(target.url() + "/v1/rooms/" + room + "/ws")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: GET of the ws path without an upgrade: %d, want 400", target.id, resp.StatusCode)
			}
			req, _ := http.NewRequest("GET", target.url()+"/healthz", nil)
			req.Header.Set("X-Huge", strings.Repeat("h", 2<<20))
			if resp, err := quickHTTP.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
					t.Errorf("%s: 2 MB of headers: %d, want 431", target.id, resp.StatusCode)
				}
			}
		}
	})

	t.Run("publish flood", func(t *testing.T) {
		// One connection publishing as fast as it can is held to --publish-rate; the excess is
		// refused, each with an error frame, and none of it is delivered.
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+n1.http+"/v1/rooms/"+other+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		// The answers (an ack and the message, or an error frame, per publish) are read as they
		// come; the writer stays at most 300 publishes ahead of them, so the flooder is refused
		// for its rate and not dropped for reading too slowly (--send-queue 1024).
		var acks, limited atomic.Int64
		read := make(chan error, 1)
		go func() {
			_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
			for acks.Load()+limited.Load() < 1000 {
				var f protocol.Incoming
				if err := ws.ReadJSON(&f); err != nil {
					read <- fmt.Errorf("after %d acks and %d refusals: %w", acks.Load(), limited.Load(), err)
					return
				}
				switch {
				case f.Type == protocol.TypeAck:
					acks.Add(1)
				case f.Type == protocol.TypeError && f.Code == protocol.CodeRateLimited:
					limited.Add(1)
				}
			}
			read <- nil
		}()
		start := time.Now()
		for i := range 1000 {
			for int64(i)-acks.Load()-limited.Load() > 300 {
				time.Sleep(time.Millisecond)
			}
			if err := ws.WriteJSON(protocol.Publish{Type: protocol.TypePublish, ID: fmt.Sprint("f", i), Data: []byte(`1`)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := <-read; err != nil {
			t.Fatal(err)
		}
		// The burst (200) and what 100/s refills while the flood lasts pass; the rest is refused.
		if allowed := 200 + 100*time.Since(start).Seconds() + 5; float64(acks.Load()) > allowed || limited.Load() == 0 {
			t.Fatalf("1000 publishes in %s: %d acked (at most %.0f allowed), %d rate limited", time.Since(start), acks.Load(), allowed, limited.Load())
		}
	})

	t.Run("stream ingest junk", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", n1.tcp, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("\x00\xff garbage that is not a handshake\n"))
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.HasPrefix(line, "ERR ") {
			t.Fatalf("junk handshake answered %q", line)
		}
		// A real source streams into the witness room meanwhile.
		src, err := client.OpenStream(t.Context(), n1.url(), room, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		if err := src.Send(t.Context(), []byte("frame")); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := src.Finish(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("forged hand-off", func(t *testing.T) {
		stale := fmt.Sprintf("%d.%s", time.Now().Add(-time.Hour).Unix(), strings.Repeat("ab", 32))
		for _, path := range []string{"/internal/v1/handoff", "/internal/v1/rooms/" + room + "/release"} {
			for _, sig := range []string{"", "123.deadbeef", stale} {
				req, _ := http.NewRequest("POST", n1.url()+path, strings.NewReader("forged"))
				if sig != "" {
					req.Header.Set("Roost-Signature", sig)
				}
				resp, err := quickHTTP.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("%s signed %q: %d, want 401", path, sig, resp.StatusCode)
				}
			}
		}
	})

	w.check(t)
}

// labelled reads the value of metric name{label="value"} from p's /metrics (0 when absent).
func labelled(t *testing.T, p *proc, name, label, value string) float64 {
	t.Helper()
	for _, m := range metrics(t, p)[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
