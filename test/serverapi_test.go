package test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/proc"
)

// The server API (API.md, "Server API"), driven as a backend would: plain HTTP requests to real
// processes, a router in front, WebSocket subscribers watching what the room delivers.

// apiHTTP follows redirects (307 keeps the method and body) as curl -L does.
var apiHTTP = &http.Client{Timeout: 30 * time.Second}

type apiAnswer struct {
	Room, ID, Epoch string
	Seq             uint64
	Code, Error     string
}

// apiDo makes one server API request and decodes its JSON answer.
func apiDo(t *testing.T, c *http.Client, method, url, ctype, token string, body []byte) (int, apiAnswer, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a apiAnswer
	_ = json.Unmarshal(raw, &a)
	return resp.StatusCode, a, raw
}

func apiPublish(t *testing.T, base, room, id string, data any) (int, apiAnswer) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"id": id, "data": data})
	code, a, _ := apiDo(t, apiHTTP, "POST", base+"/v1/rooms/"+room+"/messages", "application/json", "", b)
	return code, a
}

// watch collects the messages a WebSocket subscriber of room gets, by seq.
type watch struct {
	mu   sync.Mutex
	msgs []client.Event
	conn *client.Conn
}

func watchRoom(t *testing.T, base, room string) *watch {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, base, room, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &watch{conn: conn}
	t.Cleanup(func() { conn.Close() })
	go func() {
		for {
			ev, err := conn.Next(t.Context())
			if err != nil {
				return
			}
			if ev.Type == client.EventMessage || ev.Type == client.EventBinary {
				w.mu.Lock()
				w.msgs = append(w.msgs, ev)
				w.mu.Unlock()
			}
		}
	}()
	return w
}

func (w *watch) waitFor(t *testing.T, n int) []client.Event {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		w.mu.Lock()
		got := append([]client.Event(nil), w.msgs...)
		w.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) < n {
				t.Fatalf("the subscriber got %d messages, want %d", len(got), n)
			}
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServerAPI: through a router and against every node (a non-owner answers 307, which the
// client follows with its body), with 8 concurrent publishers into one room, retried ids, binary
// bodies, history and presence, and the bad requests a backend can make.
func TestServerAPI(t *testing.T) {
	nodes, rt := startProcClusterWithRouter(t, 3)
	const room = "api-lobby"
	w := watchRoom(t, rt.URL(), room)

	// 8 publishers, 25 messages each, half through the router and half through the nodes (most
	// of them not the owner: redirected).
	const publishers, each = 8, 25
	bases := []string{rt.URL(), nodes[0].URL(), nodes[1].URL(), nodes[2].URL()}
	seqOf := make([][]uint64, publishers)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for k := range each {
				code, a := apiPublish(t, bases[p%len(bases)], room, fmt.Sprintf("p%d-%d", p, k), map[string]int{"p": p, "k": k})
				if code != 200 || a.Room != room || a.Seq == 0 || a.ID != fmt.Sprintf("p%d-%d", p, k) || a.Epoch != w.conn.Epoch() {
					t.Errorf("publisher %d message %d: %d %+v (epoch %s)", p, k, code, a, w.conn.Epoch())
					return
				}
				seqOf[p] = append(seqOf[p], a.Seq)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	got := w.waitFor(t, publishers*each)
	seen := map[uint64]bool{}
	for i, m := range got {
		if m.Seq != uint64(i+1) || seen[m.Seq] {
			t.Fatalf("message %d has seq %d: want every seq once, in order from 1", i, m.Seq)
		}
		seen[m.Seq] = true
		var d struct{ P, K int }
		_ = json.Unmarshal(m.Data, &d)
		if m.ID != fmt.Sprintf("p%d-%d", d.P, d.K) || m.Client != "" || seqOf[d.P][d.K] != m.Seq {
			t.Fatalf("message seq %d: id %q client %q data %s; its publisher was answered seq %d", m.Seq, m.ID, m.Client, m.Data, seqOf[d.P][d.K])
		}
	}
	t.Logf("%d publishers × %d messages: %d distinct seqs, each delivered once, in order", publishers, each, len(seen))

	// A retry of an id the room remembers is answered with its seq and not delivered again, on
	// whichever member it comes in by.
	for _, base := range bases {
		if code, a := apiPublish(t, base, room, "p3-7", map[string]int{"p": 3, "k": 7}); code != 200 || a.Seq != seqOf[3][7] {
			t.Fatalf("retry of p3-7 via %s: %d %+v, want 200 seq %d", base, code, a, seqOf[3][7])
		}
	}
	// A binary body, and a last JSON message: the subscriber sees the binary one, then the last,
	// and no retry in between.
	code, bin, _ := apiDo(t, apiHTTP, "POST", rt.URL()+"/v1/rooms/"+room+"/messages?id=bin-1", "application/octet-stream", "", []byte{0, 1, 2, 0xff})
	if code != 200 || bin.Seq != publishers*each+1 || bin.ID != "bin-1" {
		t.Fatalf("binary publish: %d %+v", code, bin)
	}
	if code, a := apiPublish(t, rt.URL(), room, "last", "bye"); code != 200 || a.Seq != bin.Seq+1 {
		t.Fatalf("last publish: %d %+v", code, a)
	}
	got = w.waitFor(t, publishers*each+2)
	if len(got) != publishers*each+2 || !bytes.Equal(got[len(got)-2].Payload, []byte{0, 1, 2, 0xff}) || got[len(got)-1].ID != "last" {
		t.Fatalf("after the retries: %d messages, the last two %+v %+v", len(got), got[len(got)-2], got[len(got)-1])
	}

	// History, from the router: pages of at most limit, oldest first, binary in base64.
	var page struct {
		Room, Epoch string
		Seq         uint64
		Messages    []struct {
			Seq    uint64
			ID     string
			Binary string
			Data   json.RawMessage
		}
		Gap   *struct{ From, To uint64 }
		Reset bool
	}
	_, _, raw := apiDo(t, apiHTTP, "GET", rt.URL()+"/v1/rooms/"+room+"/messages?since=199&limit=5", "", "", nil)
	if err := json.Unmarshal(raw, &page); err != nil || page.Seq != bin.Seq+1 || len(page.Messages) != 3 || page.Messages[0].Seq != 200 ||
		page.Messages[1].Binary != base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 0xff}) || page.Messages[2].ID != "last" {
		t.Fatalf("GET messages?since=199: %s", raw)
	}
	_, _, raw = apiDo(t, apiHTTP, "GET", nodes[1].URL()+"/v1/rooms/"+room+"/messages?since=3&epoch=not-the-epoch&limit=2", "", "", nil)
	page.Reset, page.Messages = false, nil
	if err := json.Unmarshal(raw, &page); err != nil || !page.Reset || page.Epoch != w.conn.Epoch() || len(page.Messages) != 2 || page.Messages[0].Seq != 1 {
		t.Fatalf("GET messages with another epoch: %s, want reset and the first 2 of epoch %s", raw, w.conn.Epoch())
	}
	_, _, raw = apiDo(t, apiHTTP, "GET", rt.URL()+"/v1/rooms/"+room+"/presence", "", "", nil)
	var pr struct {
		Count   int
		Clients []string
	}
	if err := json.Unmarshal(raw, &pr); err != nil || pr.Count != 1 || len(pr.Clients) != 1 || pr.Clients[0] != w.conn.ClientID() {
		t.Fatalf("GET presence: %s, want the one subscriber %s", raw, w.conn.ClientID())
	}

	// Bad requests.
	msgs := rt.URL() + "/v1/rooms/" + room + "/messages"
	for _, c := range []struct {
		method, url, ctype, body string
		status                   int
		code                     string
	}{
		{"POST", msgs, "application/json", "{not json", 400, "bad_json"},
		{"POST", msgs, "", `{"id":"x"}`, 400, "bad_request"},
		{"POST", msgs, "application/json", `{"id":"` + strings.Repeat("i", 300) + `","data":1}`, 400, "bad_request"},
		{"POST", msgs, "application/octet-stream", strings.Repeat("x", 1<<20+1), 413, "too_large"},
		{"POST", nodes[0].URL() + "/v1/rooms/" + room + "/messages", "application/octet-stream", strings.Repeat("x", 1<<20+1), 413, "too_large"},
		{"POST", rt.URL() + "/v1/rooms/bad%20room/messages", "application/json", `{"data":1}`, 400, "bad_room"},
		{"GET", msgs + "?limit=0", "", "", 400, "bad_request"},
		{"GET", msgs + "?limit=1001", "", "", 400, "bad_request"},
		{"GET", msgs + "?since=-1", "", "", 400, "bad_request"},
		{"GET", rt.URL() + "/v1/rooms/api-never/messages", "", "", 404, "no_room"},
		{"GET", nodes[2].URL() + "/v1/rooms/api-never/presence", "", "", 404, "no_room"},
	} {
		code, a, raw := apiDo(t, apiHTTP, c.method, c.url, c.ctype, "", []byte(c.body))
		if code != c.status || a.Code != c.code || a.Error == "" {
			t.Errorf("%s %s %.40q: %d %.200s, want %d %s", c.method, c.url, c.body, code, raw, c.status, c.code)
		}
	}
	// None of them was delivered.
	time.Sleep(200 * time.Millisecond)
	if got := w.waitFor(t, 0); len(got) != publishers*each+2 {
		t.Fatalf("the subscriber got %d messages after the bad requests, want %d", len(got), publishers*each+2)
	}
}

// TestServerAPIAcrossHandoff: a publish id the room remembers is answered with its first seq
// after the room moved (its owner drained on SIGTERM), so a backend retrying a publish whose
// answer it lost does not deliver it twice.
func TestServerAPIAcrossHandoff(t *testing.T) {
	nodes, rt := startProcClusterWithRouter(t, 3)
	const room = "api-moving"
	var first [5]uint64
	for k := range first {
		code, a := apiPublish(t, rt.URL(), room, fmt.Sprint("m", k), k)
		if code != 200 {
			t.Fatalf("publish %d: %d %+v", k, code, a)
		}
		first[k] = a.Seq
	}
	o, err := ownerFrom(t.Context(), rt, room)
	if err != nil {
		t.Fatal(err)
	}
	var owner *proc.Proc
	var rest []*proc.Proc
	for _, n := range nodes {
		if n.ID == o.Node {
			owner = n
		} else {
			rest = append(rest, n)
		}
	}
	if !owner.Stop(30 * time.Second) {
		t.Fatalf("the owner %s did not drain and stop: %s", owner.ID, owner.Log())
	}
	proc.WaitRingT(t, append(rest, rt), 2)
	for k, seq := range first {
		code, a := apiPublish(t, rt.URL(), room, fmt.Sprint("m", k), k)
		if code != 200 || a.Seq != seq {
			t.Fatalf("retry of m%d after the hand-off: %d %+v, want seq %d", k, code, a, seq)
		}
	}
	code, a := apiPublish(t, rt.URL(), room, "m5", 5)
	if code != 200 || a.Seq != first[4]+1 {
		t.Fatalf("a new publish after the hand-off: %d %+v, want seq %d", code, a, first[4]+1)
	}
	w := watchRoom(t, rt.URL(), room)
	_, _, raw := apiDo(t, apiHTTP, "GET", rt.URL()+"/v1/rooms/"+room+"/messages?since=0&epoch="+w.conn.Epoch(), "", "", nil)
	var page struct {
		Messages []struct{ Seq uint64 }
		Reset    bool
	}
	if err := json.Unmarshal(raw, &page); err != nil || page.Reset || len(page.Messages) != 6 {
		t.Fatalf("history after the hand-off: %s, want the 6 messages once each", raw)
	}
}

// TestServerAPIAuth: with client auth on, the server API takes a token whose rooms cover the room
// (pub to publish; its sub is the message's client) or an API key (--api-key-file) for every
// room; everything else is refused with the contract's status. A publisher over
// --api-publish-rate gets 429.
func TestServerAPIAuth(t *testing.T) {
	secret := []byte("api-auth-secret-api-auth-secret!!")
	keyFile := t.TempDir() + "/keys"
	const key = "backend-key-0123456789"
	if err := os.WriteFile(keyFile, []byte("# trusted backends\n"+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--auth-hmac-secret", string(secret), "--cluster-secret", "api-auth-cluster-secret!", "--api-key-file", keyFile}
	n1 := startProc(t, "node", "n1", "", append(flags, "--api-publish-rate", "5", "--api-publish-burst", "30")...)
	rt := startProc(t, "router", "r1", n1.Gossip, "--auth-hmac-secret", string(secret), "--cluster-secret", "api-auth-cluster-secret!")
	proc.WaitRingT(t, []*proc.Proc{n1, rt}, 1)
	mint := func(sub string, pub bool, rooms ...string) string {
		tok, err := auth.Mint(secret, sub, rooms, pub, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	msgs := func(room string) string { return rt.URL() + "/v1/rooms/" + room + "/messages" }
	body := []byte(`{"data":{"x":1}}`)
	for _, c := range []struct {
		what, method, room, token string
		status                    int
		code                      string
	}{
		{"no token", "POST", "team-a", "", 401, "unauthorized"},
		{"a forged token", "POST", "team-a", "not.a.token", 401, "unauthorized"},
		{"a wrong key", "POST", "team-a", key + "x", 401, "unauthorized"},
		{"a token for other rooms", "POST", "team-a", mint("ann", true, "team-b"), 403, "forbidden"},
		{"a read-only token", "POST", "team-a", mint("ann", false, "team-*"), 403, "forbidden"},
		{"a read-only token reads", "GET", "team-a", mint("ann", false, "team-*"), 200, ""},
		{"no token reads", "GET", "team-a", "", 401, "unauthorized"},
		{"a token with pub", "POST", "team-a", mint("ann", true, "team-*"), 200, ""},
		{"the API key", "POST", "any-room", key, 200, ""},
	} {
		if c.what == "a read-only token reads" { // the room must exist for a read
			if code, _, raw := apiDo(t, apiHTTP, "POST", msgs(c.room), "", key, body); code != 200 {
				t.Fatalf("publish with the API key: %d %s", code, raw)
			}
		}
		var b []byte
		if c.method == "POST" {
			b = body
		}
		code, a, raw := apiDo(t, apiHTTP, c.method, msgs(c.room), "application/json", c.token, b)
		if code != c.status || a.Code != c.code {
			t.Errorf("%s: %d %.200s, want %d %s", c.what, code, raw, c.status, c.code)
		}
	}
	// The token's sub is the message's client; the API key's is "".
	_, _, raw := apiDo(t, apiHTTP, "GET", msgs("team-a")+"?since=0", "", key, nil)
	var page struct{ Messages []struct{ Client string } }
	if err := json.Unmarshal(raw, &page); err != nil || len(page.Messages) != 2 || page.Messages[0].Client != "" || page.Messages[1].Client != "ann" {
		t.Fatalf("history of team-a: %s, want the key's message (client \"\") then ann's", raw)
	}
	// The rate: 30 at once pass, then most are refused with 429 and Retry-After.
	limited := 0
	for i := range 60 {
		code, a, _ := apiDo(t, apiHTTP, "POST", msgs("rated"), "application/json", key, fmt.Appendf(nil, `{"id":"r%d","data":1}`, i))
		if code == 429 && a.Code == "rate_limited" {
			limited++
		} else if code != 200 {
			t.Fatalf("publish %d: %d %+v", i, code, a)
		}
	}
	t.Logf("%d of 60 publishes at once refused with 429", limited)
	if limited < 20 {
		t.Fatalf("%d of 60 publishes at once were refused with 429, want most past the burst of 30", limited)
	}
}
