package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/protocol"
)

// Hostile upgrades (issue 15, items 7 and 8), tried from outside against real processes: what
// an attacker without a token achieves, measured from /metrics.

const (
	upgradeClusterSecret = "hostile-upgrade-cluster-secret-7f3a9c"
	upgradeHMACSecret    = "hostile-upgrade-hmac-secret-0123456789abcdef"
)

// badUpgrades sends n upgrade requests with change applied to a good handshake, for the rooms
// prefix-0 … prefix-(n-1) on base, 16 at a time, and counts the answers by status. Every answer
// must be a JSON error with code want.
func badUpgrades(t *testing.T, base, prefix string, n int, change func(http.Header), want string) map[int]int {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer c.CloseIdleConnections()
	var mu sync.Mutex
	statuses := map[int]int{}
	var bad atomic.Int64
	next := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range next {
				req, _ := http.NewRequestWithContext(t.Context(), "GET", fmt.Sprintf("%s/v1/rooms/%s-%d/ws", base, prefix, i), nil)
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", "websocket")
				req.Header.Set("Sec-WebSocket-Version", "13")
				req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
				change(req.Header)
				resp, err := c.Do(req)
				if err != nil {
					if bad.Add(1) <= 3 {
						t.Errorf("%s-%d: %v", prefix, i, err)
					}
					continue
				}
				var e protocol.Error
				derr := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
				resp.Body.Close()
				if (derr != nil || e.Code != want || e.Error == "") && bad.Add(1) <= 3 {
					t.Errorf("%s-%d: answered %d %+v (%v), want a JSON error %s", prefix, i, resp.StatusCode, e, derr, want)
				}
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return statuses
}

// dialsTotal is a router's dials to owners, whatever their result.
func dialsTotal(t *testing.T, p *proc.Proc) float64 {
	t.Helper()
	var sum float64
	for _, m := range metrics(t, p)["roost_router_dials_total"].GetMetric() {
		sum += m.GetCounter().GetValue()
	}
	return sum
}

// TestFailedUpgradesCreateNoRooms: 1,000 upgrade requests without Sec-WebSocket-Key to a node and
// 500 through a router (and a few hundred more with other flaws) are each answered 400 JSON and
// create no room; the router dials no owner for them. The per-address room rate is off here,
// so what keeps the rooms out is the handshake check alone. One good client then creates one.
func TestFailedUpgradesCreateNoRooms(t *testing.T) {
	n1 := startProc(t, "node", "n1", "", "--room-create-rate", "0")
	r1 := startProc(t, "router", "r1", n1.Gossip)
	proc.WaitRingT(t, []*proc.Proc{n1, r1}, 1)
	if got := gauge(t, n1, "roost_rooms"); got != 0 {
		t.Fatalf("roost_rooms = %v before the test", got)
	}
	dials := dialsTotal(t, r1)
	noKey := func(h http.Header) { h.Del("Sec-WebSocket-Key") }

	start := time.Now()
	direct := badUpgrades(t, n1.URL(), "nokey", 1000, noKey, protocol.CodeBadRequest)
	took := time.Since(start)
	proxied := badUpgrades(t, r1.URL(), "nokey-r", 500, noKey, protocol.CodeBadRequest)
	others := map[string]func(http.Header){
		"version 8":     func(h http.Header) { h.Set("Sec-WebSocket-Version", "8") },
		"no version":    func(h http.Header) { h.Del("Sec-WebSocket-Version") },
		"short key":     func(h http.Header) { h.Set("Sec-WebSocket-Key", "c2hvcnQ=") },
		"no Connection": func(h http.Header) { h.Del("Connection") },
	}
	var flawed int
	for name, change := range others {
		for _, p := range []*proc.Proc{n1, r1} {
			for status, count := range badUpgrades(t, p.URL(), strings.ReplaceAll(name, " ", "-")+"-"+p.ID, 100, change, protocol.CodeBadRequest) {
				if status != http.StatusBadRequest {
					t.Errorf("%s via %s: %d answered %d, want 400", name, p.ID, count, status)
				}
				flawed += count
			}
		}
	}
	if direct[http.StatusBadRequest] != 1000 || proxied[http.StatusBadRequest] != 500 {
		t.Errorf("answers: %v direct, %v through the router; want 1000 and 500 × 400", direct, proxied)
	}
	rooms := gauge(t, n1, "roost_rooms")
	refusedNode := labelled(t, n1, "roost_refused_total", "reason", "bad_handshake")
	refusedRouter := labelled(t, r1, "roost_refused_total", "reason", "bad_handshake")
	newDials := dialsTotal(t, r1) - dials
	t.Logf("1000 upgrades without Sec-WebSocket-Key to the node in %s (%.0f/s), 500 through the router, %d with other flaws: "+
		"roost_rooms %v, refused{bad_handshake} %v on the node and %v on the router, %v dials by the router",
		took.Round(time.Millisecond), 1000/took.Seconds(), flawed, rooms, refusedNode, refusedRouter, newDials)
	if rooms != 0 {
		t.Errorf("roost_rooms = %v after the failed upgrades, want 0", rooms)
	}
	if newDials != 0 {
		t.Errorf("the router dialed the owner %v times for requests that could not upgrade", newDials)
	}
	if refusedRouter < 500 {
		t.Errorf("the router counted %v refusals, want ≥ 500: it passed failed upgrades on", refusedRouter)
	}
	// The gauge does count rooms: one client that really upgrades creates one.
	ws, _, err := websocket.DefaultDialer.DialContext(t.Context(), "ws://"+n1.HTTP+"/v1/rooms/good/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if got := gauge(t, n1, "roost_rooms"); got != 1 {
		t.Errorf("roost_rooms = %v with one client in one room, want 1", got)
	}
}

// dialerFrom dials WebSockets from the local address ip, so one test can be many clients.
func dialerFrom(ip string) *websocket.Dialer {
	local := &net.TCPAddr{IP: net.ParseIP(ip)}
	return &websocket.Dialer{HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return (&net.Dialer{LocalAddr: local}).DialContext(ctx, network, addr)
		}}
}

// dialFresh opens room's WebSocket on p from the local address ip, reads the welcome and leaves.
// It returns the refusal's status and error code when there is one.
func dialFresh(ctx context.Context, p *proc.Proc, ip, room string) (int, protocol.Error, http.Header, error) {
	d := dialerFrom(ip)
	ws, resp, err := d.DialContext(ctx, "ws://"+p.HTTP+"/v1/rooms/"+room+"/ws", nil)
	if err != nil {
		var e protocol.Error
		if resp == nil {
			return 0, e, nil, err
		}
		defer resp.Body.Close()
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e, resp.Header, nil
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var w protocol.Welcome
	if err := ws.ReadJSON(&w); err != nil || w.Type != protocol.TypeWelcome {
		return 0, protocol.Error{}, nil, fmt.Errorf("no welcome: %v", err)
	}
	return http.StatusSwitchingProtocols, protocol.Error{}, nil, nil
}

// TestRoomCreationIsRatedPerAddress: one address creating rooms as fast as it can, directly and
// through a router, gets its burst and then its rate, and 429 rate_limited (with Retry-After)
// for the rest; joining a room the node holds is not counted, and other addresses keep their
// own rate (through the router too: the node counts the client's address, not the router's).
func TestRoomCreationIsRatedPerAddress(t *testing.T) {
	const rate, burst, tries = 5, 10, 40
	flags := []string{"--room-create-rate", fmt.Sprint(rate), "--room-create-burst", fmt.Sprint(burst)}
	n1 := startProc(t, "node", "n1", "", flags...)
	r1 := startProc(t, "router", "r1", n1.Gossip)
	proc.WaitRingT(t, []*proc.Proc{n1, r1}, 1)
	// The node believes the router's X-Forwarded-For once it knows the router.
	wait.Eventually(t, 10*time.Second, "the node lists the router alive", func() bool { return n1.State(r1.ID) == "alive" })

	flood := func(p *proc.Proc, ip, prefix string) (created int, took time.Duration) {
		t.Helper()
		start := time.Now()
		for i := range tries {
			status, e, h, err := dialFresh(t.Context(), p, ip, fmt.Sprintf("%s-%d", prefix, i))
			switch {
			case err != nil:
				t.Fatalf("%s from %s via %s: %v", prefix, ip, p.ID, err)
			case status == http.StatusSwitchingProtocols:
				created++
			case status != http.StatusTooManyRequests || e.Code != protocol.CodeRateLimited || h.Get("Retry-After") == "":
				t.Fatalf("%s-%d from %s via %s: answered %d %+v (Retry-After %q), want 429 %s", prefix, i, ip, p.ID, status, e, h.Get("Retry-After"), protocol.CodeRateLimited)
			}
		}
		return created, time.Since(start)
	}
	check := func(what string, created int, took time.Duration) {
		t.Helper()
		most := burst + int(rate*took.Seconds()) + 1
		t.Logf("%s: %d of %d new rooms created in %s (burst %d, %d/s: at most %d)", what, created, tries, took.Round(time.Millisecond), burst, rate, most)
		if created < burst || created > most {
			t.Errorf("%s: %d rooms created, want %d to %d", what, created, burst, most)
		}
	}
	before := gauge(t, n1, "roost_rooms")
	direct, tookDirect := flood(n1, "127.0.0.2", "rate-a")
	check("127.0.0.2 to the node", direct, tookDirect)
	// Its bucket is empty, but a room the node holds takes it in.
	if status, e, _, err := dialFresh(t.Context(), n1, "127.0.0.2", "rate-a-0"); err != nil || status != http.StatusSwitchingProtocols {
		t.Errorf("joining an existing room with an empty bucket: %d %+v %v", status, e, err)
	}
	// Another address has its own bucket, directly and through the router.
	proxied, tookProxied := flood(r1, "127.0.0.3", "rate-b")
	check("127.0.0.3 through the router", proxied, tookProxied)
	if status, e, _, err := dialFresh(t.Context(), r1, "127.0.0.4", "rate-c"); err != nil || status != http.StatusSwitchingProtocols {
		t.Errorf("another address through the router after a flood through it: %d %+v %v", status, e, err)
	}
	rooms := gauge(t, n1, "roost_rooms") - before
	refused := labelled(t, n1, "roost_refused_total", "reason", "room_rate")
	t.Logf("roost_rooms +%v, roost_refused_total{reason=room_rate} %v", rooms, refused)
	if int(rooms) != direct+proxied+1 {
		t.Errorf("roost_rooms grew by %v, want the %d rooms created", rooms, direct+proxied+1)
	}
	if int(refused) != 2*tries-direct-proxied {
		t.Errorf("refused{room_rate} = %v, want %d", refused, 2*tries-direct-proxied)
	}
}

// TestExpiredTokenClosesWith4401: a connection whose token expires while it is open is closed
// with 4401 then (at exp, within the verifier's leeway), on the node and through a router; a
// connection with a token that has not expired stays open.
func TestExpiredTokenClosesWith4401(t *testing.T) {
	flags := []string{"--auth-hmac-secret", upgradeHMACSecret, "--cluster-secret", upgradeClusterSecret}
	n1 := startProc(t, "node", "n1", "", flags...)
	r1 := startProc(t, "router", "r1", n1.Gossip, flags...)
	proc.WaitRingT(t, []*proc.Proc{n1, r1}, 1)
	mint := func(ttl time.Duration) (string, time.Time) {
		tok, err := auth.Mint([]byte(upgradeHMACSecret), "ann", []string{"expiring-*"}, true, ttl)
		if err != nil {
			t.Fatal(err)
		}
		var c auth.Claims
		if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil {
			t.Fatal(err)
		}
		return tok, c.ExpiresAt.Time // in whole seconds
	}
	short, exp := mint(2 * time.Second)
	long, _ := mint(time.Hour)

	type closed struct {
		who  string
		code int
		at   time.Time
		err  error
	}
	results := make(chan closed, 4)
	open := func(who string, p *proc.Proc, room, token string) {
		ws, _, err := websocket.DefaultDialer.DialContext(t.Context(), "ws://"+p.HTTP+"/v1/rooms/"+room+"/ws?token="+token, nil)
		if err != nil {
			t.Fatalf("%s: %v", who, err)
		}
		t.Cleanup(func() { ws.Close() })
		go func() {
			_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					var ce *websocket.CloseError
					code := 0
					if errors.As(err, &ce) {
						code = ce.Code
					}
					results <- closed{who, code, time.Now(), err}
					return
				}
			}
		}()
	}
	open("direct", n1, "expiring-a", short)
	open("router", r1, "expiring-b", short)
	open("direct, long token", n1, "expiring-c", long)
	open("router, long token", r1, "expiring-d", long)
	deadline := exp.Add(auth.Leeway)
	for range 2 {
		select {
		case c := <-results:
			late := c.at.Sub(deadline)
			t.Logf("%s: closed %d %s after exp (exp + leeway %+.2fs)", c.who, c.code, c.at.Sub(exp).Round(10*time.Millisecond), late.Seconds())
			switch {
			case strings.Contains(c.who, "long"):
				t.Errorf("%s: closed (%v) although its token is good for an hour", c.who, c.err)
			case c.code != protocol.CloseUnauthorized:
				t.Errorf("%s: ended with %v, want close 4401", c.who, c.err)
			case c.at.Before(exp) || late > 2*time.Second:
				t.Errorf("%s: closed %s after exp, want at exp + leeway (%s)", c.who, c.at.Sub(exp), auth.Leeway)
			}
		case <-time.After(time.Until(deadline) + 5*time.Second):
			t.Fatal("a connection with an expired token is still open 5 s after exp + leeway")
		}
	}
	select {
	case c := <-results:
		t.Errorf("%s: closed %d (%v)", c.who, c.code, c.err)
	case <-time.After(500 * time.Millisecond):
	}
	// The direct client is the node's to close; the router's is closed by whichever checks the
	// token first at exp + leeway: the router itself, or the owner on the router's edge leg.
	node := labelled(t, n1, "roost_drops_total", "reason", "token_expired")
	router := labelled(t, r1, "roost_refused_total", "reason", "token_expired")
	if node < 1 || node+router < 2 {
		t.Errorf("token_expired: %v on the node (roost_drops_total), %v on the router (roost_refused_total), want the direct client on the node and the router's client on either",
			node, router)
	}
}

// TestNodeBelievesForwardedForOnlyFromRouters: a node counts a client by the address its
// X-Forwarded-For names only when the request comes from a router's address. From a node's
// address (here a lone node's own: 127.0.0.1) the header is ignored, so naming another address
// does not step around --max-addr-conns; once a router runs on 127.0.0.1, it is believed.
func TestNodeBelievesForwardedForOnlyFromRouters(t *testing.T) {
	const perAddr = 2
	n1 := startProc(t, "node", "n1", "", "--max-addr-conns", fmt.Sprint(perAddr))
	proc.WaitRingT(t, []*proc.Proc{n1}, 1)
	dialAs := func(xff string) (int, error) {
		ws, resp, err := websocket.DefaultDialer.DialContext(t.Context(), "ws://"+n1.HTTP+"/v1/rooms/xff/ws",
			http.Header{"X-Forwarded-For": {xff}})
		if err != nil {
			if resp != nil {
				return resp.StatusCode, nil
			}
			return 0, err
		}
		t.Cleanup(func() { ws.Close() })
		return http.StatusSwitchingProtocols, nil
	}
	var got []int
	for i := range perAddr + 1 {
		status, err := dialAs(fmt.Sprintf("203.0.113.%d", i+1))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, status)
	}
	if want := []int{101, 101, 429}; !slices.Equal(got, want) {
		t.Fatalf("3 connections from a node's address, each naming another X-Forwarded-For: %v, want %v", got, want)
	}
	// A router on the same address makes it a router host: now the header counts.
	r1 := startProc(t, "router", "r1", n1.Gossip)
	proc.WaitRingT(t, []*proc.Proc{n1, r1}, 1)
	wait.Eventually(t, 10*time.Second, "the node believes X-Forwarded-For from a router's address", func() bool {
		status, err := dialAs("203.0.113.50")
		return err == nil && status == http.StatusSwitchingProtocols
	})
}

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
	d := dialerFrom(ip)
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

// TestDemoPageShowsTextNotHTML: the demo page (router/web) puts what the cluster sends it into
// the page as text: a message whose seq, client and text are HTML, and a cluster view whose
// counts are, run nothing and show as written. The page runs in headless Chromium against a
// stand-in server that sends exactly that (a real node only sends numbers for seq).
func TestDemoPageShowsTextNotHTML(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	chromium := chromiumPath()
	if chromium == "" {
		t.Skip("no chromium (apt-get install chromium; .ci/run does)")
	}
	const hostileSeq = `<img src=x onerror="window.pwned='seq'">`
	mux := http.NewServeMux()
	web := http.FileServer(http.Dir("../router/web"))
	mux.Handle("GET /demo/", http.StripPrefix("/demo/", web))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, "../router/web/index.html") })
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"ring":"r","partitions":1,"self":"r1","members":[{"id":"n1","role":"node","state":"alive",`+
			`"conns":"<img src=x onerror=\"window.pwned='conns'\">"}],"rooms":{"n1":"<img src=x onerror=\"window.pwned='rooms'\">"}}`)
	})
	mux.HandleFunc("GET /v1/rooms/{room}", func(w http.ResponseWriter, r *http.Request) {
		protocol.WriteJSON(w, protocol.Owner{Room: r.PathValue("room"), Node: "n1"})
	})
	up := websocket.Upgrader{}
	mux.HandleFunc("GET /v1/rooms/{room}/ws", func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		room := r.PathValue("room")
		_ = ws.WriteJSON(map[string]any{"type": "welcome", "room": room, "node": "n1", "client": "ann", "epoch": "e1", "seq": 0, "count": 1})
		if room == "lobby" {
			_ = ws.WriteJSON(map[string]any{"type": "message", "seq": hostileSeq, "client": `<b onmouseover="window.pwned='who'">eve</b>`,
				"id": "m1", "data": map[string]any{"text": `<img src=x onerror="window.pwned='text'">`}})
		}
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	do(t, tab, 20*time.Second, chromedp.Navigate(srv.URL+"/?room=lobby&name=ann"),
		chromedp.WaitVisible(chromedp.CSS(`#messages li.msg`)), chromedp.WaitVisible(chromedp.CSS(`#members tr`)))
	time.Sleep(500 * time.Millisecond) // an injected image's onerror would have fired by now
	type page struct {
		Pwned  string `json:"pwned"`
		Images int    `json:"images"`
		Seq    string `json:"seq"`
		Line   string `json:"line"`
		Conns  string `json:"conns"`
	}
	got := value(t, tab, chromedp.Evaluate[page](`({
		pwned: String(window.pwned ?? ""),
		images: document.querySelectorAll("#messages img, #members img, #messages b").length,
		seq: document.querySelector("#messages li.msg .seq").textContent,
		line: document.querySelector("#messages li.msg").textContent,
		conns: document.querySelector("#members tr td:last-child").textContent,
	})`))
	t.Logf("the page shows: %+v", got)
	if got.Pwned != "" || got.Images != 0 {
		t.Errorf("HTML from the cluster ran in the page: window.pwned=%q, %d elements injected", got.Pwned, got.Images)
	}
	if got.Seq != hostileSeq || !strings.Contains(got.Line, `<img src=x onerror="window.pwned='text'">`) ||
		!strings.Contains(got.Conns, "<img") {
		t.Errorf("the page does not show what it was sent as text: %+v", got)
	}
}
