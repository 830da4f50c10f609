package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/node"
	"github.com/roost-dev/roost/node/handoff"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/protocol"
)

// The hostile-peer suite: what someone who reaches a node's HTTP port, or who captured a
// node-to-node call, achieves against real processes, measured from outside (/metrics, exit
// codes, answers and their timing), each bounded.

// signFor signs a call to p's path made at unix second ts (plus this instant's fraction of a
// second, so time.Now().Unix() signs now), as a member holding key would.
func signFor(p *proc.Proc, key []byte, path string, ts int64, body []byte) string {
	at := time.Unix(ts, int64(time.Now().Nanosecond()))
	return peer.Sign(key, peer.Claim{Method: "POST", Host: p.HTTP, URI: path, Time: at, Body: body})
}

// TestHostilePeerUploads: 200 unsigned POSTs to a node's /internal/ endpoints, each announcing
// a 1 GiB body and sending 1 MiB of it, are each refused (401) from their headers, at once, and
// leave the heap where it was; signed calls that announce bodies and then send nothing hold at
// most MaxInFlight slots and the body budget (past them: 503), pin little memory, and are cut
// at peer.ReadTimeout.
func TestHostilePeerUploads(t *testing.T) {
	const secret = "hostile-peer-upload-secret"
	n1 := startProc(t, "node", "n1", "", "--cluster-secret", secret)
	proc.WaitRingT(t, []*proc.Proc{n1}, 1)
	key := peer.Key(secret)

	t.Run("unsigned, announcing 1 GiB", func(t *testing.T) {
		const uploads, sent = 200, 1 << 20
		base := heap(t, n1)
		refused := labelled(t, n1, "roost_refused_total", "reason", "peer_auth")
		var peak atomic.Int64
		stopPeak := sampleHeap(t, n1, &peak)
		answers := make(chan time.Duration, uploads)
		statuses := make(chan string, uploads)
		var wg sync.WaitGroup
		for i := range uploads {
			path := []string{handoff.Path, handoff.ReleasePath("lobby"), "/internal/v1/nodes/n2/takeover"}[i%3]
			wg.Go(func() {
				took, status := announceAndSend(n1.HTTP, path, "", 1<<30, sent)
				answers <- took
				statuses <- status
			})
		}
		wg.Wait()
		stopPeak()
		close(answers)
		close(statuses)
		var took []time.Duration
		for d := range answers {
			took = append(took, d)
		}
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		counts := map[string]int{}
		for s := range statuses {
			counts[s]++
		}
		grew := float64(peak.Load()) - base
		t.Logf("200 unsigned uploads announcing 1 GiB, sending 1 MiB: answers %v; time to refusal p50 %s, max %s; heap %.1f MiB before, peak growth %.1f MiB",
			counts, took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond), base/(1<<20), grew/(1<<20))
		if counts["401"] != uploads {
			t.Errorf("answers %v, want 401 for all %d", counts, uploads)
		}
		if max := took[len(took)-1]; max > 2*time.Second {
			t.Errorf("slowest refusal took %s, want under 2s (refused from the headers, before the body)", max)
		}
		if grew > 32<<20 {
			t.Errorf("the heap grew by %.1f MiB during the uploads, bound 32 MiB", grew/(1<<20))
		}
		if d := labelled(t, n1, "roost_refused_total", "reason", "peer_auth") - refused; d != uploads {
			t.Errorf("roost_refused_total{reason=peer_auth} rose by %v, want %d", d, uploads)
		}
	})

	t.Run("signed, announcing 1 MiB and sending nothing", func(t *testing.T) {
		// Only a member (holding the secret) gets this far. Each call reserves its signed
		// length of the body budget, 4 × the largest hand-off body, and a slot of MaxInFlight.
		const calls, each = 80, 1 << 20
		cfg := node.DefaultConfig()
		maxBody := cfg.MaxPeerBody()
		budget := min(int64(peer.MaxInFlight), 4*maxBody/each)
		base := heap(t, n1)
		var peak atomic.Int64
		stopPeak := sampleHeap(t, n1, &peak)
		type answer struct {
			took   time.Duration
			status string
		}
		answers := make(chan answer, calls)
		var wg sync.WaitGroup
		for i := range calls {
			wg.Go(func() {
				path := fmt.Sprintf("/internal/v1/rooms/slow-%d/release", i)
				sig := peer.Sign(key, peer.Claim{Method: "POST", Host: n1.HTTP, URI: path, Time: time.Now(), Body: make([]byte, each)})
				took, status := announceAndSend(n1.HTTP, path, sig, each, 0)
				answers <- answer{took, status}
			})
		}
		wg.Wait()
		stopPeak()
		close(answers)
		counts := map[string]int{}
		var slowest time.Duration
		for a := range answers {
			counts[a.status]++
			if a.status != "503" {
				slowest = max(slowest, a.took)
			}
		}
		grew := float64(peak.Load()) - base
		t.Logf("%d signed calls announcing 1 MiB, sending nothing: answers %v (slots and budget admit %d); held calls cut after %s; heap peak growth %.1f MiB",
			calls, counts, budget, slowest.Round(time.Millisecond), grew/(1<<20))
		if int64(counts["503"]) < calls-budget {
			t.Errorf("%d of %d calls refused with 503, want at least %d (at most %d admitted)", counts["503"], calls, calls-budget, budget)
		}
		if slowest > peer.ReadTimeout+3*time.Second {
			t.Errorf("a call that sent nothing was held %s, want about peer.ReadTimeout (%s)", slowest, peer.ReadTimeout)
		}
		// A body is grown as its bytes arrive (never past the budget), so calls that send
		// nothing pin little.
		if grew > 32<<20 {
			t.Errorf("the heap grew by %.1f MiB while signed calls sent nothing, bound 32 MiB", grew/(1<<20))
		}
	})
}

// sampleHeap records the highest heap n1 reports, every 50 ms, until the returned func is called.
func sampleHeap(t *testing.T, p *proc.Proc, peak *atomic.Int64) func() {
	peak.Store(int64(heap(t, p)))
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if v, err := unlabelled(p, "go_memstats_heap_alloc_bytes"); err == nil && int64(v) > peak.Load() {
				peak.Store(int64(v))
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		if v := int64(heap(t, p)); v > peak.Load() {
			peak.Store(v)
		}
	}
}

// announceAndSend POSTs to addr's path a request announcing a body of length bytes and sends
// send of them, then waits (up to 20 s) for the answer; it returns how long the answer took
// from the headers and its status ("none" if the connection ended unanswered).
func announceAndSend(addr, path, sig string, length int64, send int) (time.Duration, string) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, "dial: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	h := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n", path, addr, handoff.ContentType, length)
	if sig != "" {
		h += peer.SignatureHeader + ": " + sig + "\r\n"
	}
	start := time.Now()
	if _, err := io.WriteString(c, h+"\r\n"); err != nil {
		return 0, "write: " + err.Error()
	}
	go func() { // the body, as far as the node lets it in
		chunk := make([]byte, 64<<10)
		for sent := 0; sent < send; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	line, err := bufio.NewReader(c).ReadString('\n')
	took := time.Since(start)
	if err != nil {
		return took, "none"
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return took, "garbled"
	}
	return took, f[1]
}

// runRoost runs the roost binary with args and env (nothing else of the test's environment
// that starts with ROOST_), for at most limit; it returns the exit code (-1: still running after
// limit, then killed), its stderr, and how long it took.
func runRoost(t *testing.T, limit time.Duration, env []string, args ...string) (int, string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, proc.Roost(t), args...)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "ROOST_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if ctx.Err() != nil {
		return -1, stderr.String(), took
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String(), took
}

// loopbackArgs are a member's listeners on loopback, free ports.
func loopbackArgs(role string) []string {
	args := []string{role, "--id", "x", "--gossip", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "warn"}
	if role == "node" {
		args = append(args, "--tcp", "127.0.0.1:0")
	}
	return args
}

// TestHostilePeerAuthWithoutSecret: a node or router with client auth and no cluster secret
// refuses to start, naming both flags (nothing listens, so no forged hand-off can land); and a
// hand-off signed by a member but carrying frames no publish makes installs nothing.
func TestHostilePeerAuthWithoutSecret(t *testing.T) {
	hs := strings.Repeat("h", 32)
	started := 0
	for _, role := range []string{"node", "router"} {
		for _, auth := range [][]string{{"--auth-hmac-secret", hs}, {}} {
			env := []string{}
			if len(auth) == 0 {
				env = append(env, "ROOST_AUTH_HMAC_SECRET="+hs) // from the environment, as in deploy/
			}
			code, stderr, took := runRoost(t, 10*time.Second, env, slices.Concat(loopbackArgs(role), auth)...)
			t.Logf("roost %s, auth %v%v, no cluster secret: exit %d after %s: %s", role, auth, env, code, took.Round(time.Millisecond), strings.TrimSpace(stderr))
			if code != 1 || !strings.Contains(stderr, "--cluster-secret") || !strings.Contains(stderr, "--auth-hmac-secret") {
				t.Errorf("roost %s with auth and no cluster secret: exit %d, stderr %q; want exit 1 naming --cluster-secret and --auth-hmac-secret", role, code, stderr)
			}
			if code == -1 {
				started++
			}
		}
	}
	if started != 0 {
		t.Errorf("%d members started with client auth and no cluster secret", started)
	}

	// With the secret, a member's hand-off is heard, and its frames checked as publishes.
	const secret = "hostile-peer-auth-secret"
	n1 := startProc(t, "node", "n1", "", "--cluster-secret", secret, "--auth-hmac-secret", hs)
	proc.WaitRingT(t, []*proc.Proc{n1}, 1)
	key := peer.Key(secret)
	forged := func(name string, frame []byte) room.State {
		return room.State{Room: name, Epoch: "forged", Seq: 1, History: []room.Message{{Seq: 1, Frame: frame}}}
	}
	bad := map[string][]byte{
		"not JSON":     []byte("<script>alert(1)</script>"),
		"another type": []byte(`{"type":"welcome","seq":1,"client":"admin","data":1}`),
		"wrong seq":    protocol.AppendMessage(nil, 99, "admin", "", []byte(`"hi"`)),
		"extra field":  []byte(`{"type":"message","seq":1,"client":"admin","data":1,"verified":true}`),
		"no data":      []byte(`{"type":"message","seq":1,"client":"admin"}`),
	}
	installed := 0
	gained := labelled(t, n1, "roost_rooms_gained_total", "how", "handoff")
	i := 0
	for what, frame := range bad {
		i++
		name := fmt.Sprintf("forged-frame-%d", i)
		body, err := handoff.Encode(handoff.Batch{From: "n0", Ring: "x", Rooms: []room.State{forged(name, frame)}})
		if err != nil {
			t.Fatal(err)
		}
		status, answer, err := postPeer(t.Context(), n1.URL()+handoff.Path, body, signFor(n1, key, handoff.Path, time.Now().Unix(), body))
		if err != nil || status != http.StatusOK || !strings.Contains(answer, `"refused"`) {
			t.Errorf("%s: %d %s %v, want 200 refusing the room", what, status, answer, err)
		}
		if strings.Contains(answer, `"accepted"`) {
			installed++
		}
	}
	// A well-formed one is installed: the check is of the frames, not of every hand-off.
	good, _ := handoff.Encode(handoff.Batch{From: "n0", Ring: "x", Rooms: []room.State{forged("forged-frame-good", protocol.AppendMessage(nil, 1, "ann", "", []byte(`"hi"`)))}})
	if status, answer, err := postPeer(t.Context(), n1.URL()+handoff.Path, good, signFor(n1, key, handoff.Path, time.Now().Unix(), good)); err != nil || !strings.Contains(answer, `"accepted"`) {
		t.Errorf("a well-formed hand-off: %d %s %v, want it accepted", status, answer, err)
	}
	d := labelled(t, n1, "roost_rooms_gained_total", "how", "handoff") - gained
	t.Logf("%d hand-offs with frames no publish makes: %d installed; the well-formed one: %v rooms gained", len(bad), installed, d)
	if installed != 0 || d != 1 {
		t.Errorf("%d malformed hand-offs installed, %v rooms gained in all; want 0 and 1", installed, d)
	}
}

// placeholderSecrets reads the cluster secrets deploy/ ships with.
func placeholderSecrets(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for file, re := range map[string]*regexp.Regexp{
		"../deploy/compose.yaml":           regexp.MustCompile(`ROOST_CLUSTER_SECRET:\s*"?\$\{ROOST_CLUSTER_SECRET:-([^}]+)\}"?`),
		"../deploy/kubernetes/secret.yaml": regexp.MustCompile(`(?m)^\s*cluster-secret:\s*(\S+)`),
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		m := re.FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s: no cluster secret placeholder found", file)
		}
		out[file] = string(m[1])
	}
	return out
}

// TestHostilePeerWeakSecrets: a member refuses to start with the placeholder secrets of
// deploy/, a secret under 16 bytes, or ROOST_CLUSTER_SECRET set but empty, each with a message
// saying what to do; a real secret starts.
func TestHostilePeerWeakSecrets(t *testing.T) {
	cases := map[string][]string{
		"the secret x":          {"--cluster-secret", "x"},
		"15 bytes":              {"--cluster-secret", "0123456789abcde"},
		"an explicit empty":     {"--cluster-secret="},
		"ROOST_CLUSTER_SECRET=": {"env:ROOST_CLUSTER_SECRET="},
		"a short accept key":    {"--cluster-secret", "a-real-cluster-secret-1", "--cluster-secret-accept", "old"},
	}
	for file, s := range placeholderSecrets(t) {
		cases["the placeholder of "+file] = []string{"env:ROOST_CLUSTER_SECRET=" + s}
	}
	accepted := 0
	for name, args := range cases {
		var env, flags []string
		for _, a := range args {
			if e, ok := strings.CutPrefix(a, "env:"); ok {
				env = append(env, e)
			} else {
				flags = append(flags, a)
			}
		}
		code, stderr, took := runRoost(t, 10*time.Second, env, slices.Concat(loopbackArgs("node"), flags)...)
		t.Logf("%s: exit %d after %s: %s", name, code, took.Round(time.Millisecond), strings.TrimSpace(stderr))
		if code != 1 || !strings.Contains(stderr, "head -c 32 /dev/urandom") {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 saying how to make a real secret", name, code, stderr)
		}
		if code != 1 {
			accepted++
		}
	}
	if accepted != 0 {
		t.Errorf("%d of %d weak secrets accepted", accepted, len(cases))
	}
	// A real one starts (and runs until killed).
	if code, stderr, _ := runRoost(t, 3*time.Second, []string{"ROOST_CLUSTER_SECRET=" + "a-real-cluster-secret-of-32-bytes"}, loopbackArgs("node")...); code != -1 {
		t.Errorf("a real secret: exit %d %q, want it to run", code, stderr)
	}
}

// TestHostilePeerReplays: a correctly signed call, captured and sent again, is accepted once:
// replayed to the same node, to another node, or signed before the receiver started, it is
// refused (401, counted as peer_replay or peer_auth). During a rotation, calls signed with the
// accepted key are heard, once each, too.
func TestHostilePeerReplays(t *testing.T) {
	const secret, next = "hostile-peer-replay-secret", "hostile-peer-replay-next"
	beforeStart := time.Now().Add(-time.Second) // within the clock-skew window, before n1 started
	time.Sleep(10 * time.Millisecond)
	n1 := startProc(t, "node", "n1", "", "--cluster-secret", next, "--cluster-secret-accept", secret)
	n2 := startProc(t, "node", "n2", n1.Gossip, "--cluster-secret", secret, "--cluster-secret-accept", next)
	proc.WaitRingT(t, []*proc.Proc{n1, n2}, 2)

	// Rooms on both nodes, made by clients.
	rooms := roomsByOwner(t, n1, "replay-", 3, "n1", "n2")
	var lobby string
	onN2 := 0
	for r, owner := range rooms {
		c, err := client.Dial(t.Context(), n1.URL(), r, &client.Options{DisableReconnect: true, Discard: true})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if owner == "n1" {
			lobby = r
		} else {
			onN2++
		}
	}

	key := peer.Key(secret) // n2's: n1 accepts it during the rotation
	check, _ := handoff.Encode(handoff.Batch{From: "n2", Ring: "x", Check: true, Rooms: []room.State{{Room: lobby}}})
	captured := signFor(n1, key, handoff.Path, time.Now().Unix(), check)
	replays := labelled(t, n1, "roost_refused_total", "reason", "peer_replay")
	accepted := 0
	const sends = 50
	for range sends {
		status, _, err := postPeer(t.Context(), n1.URL()+handoff.Path, check, captured)
		if err != nil {
			t.Fatal(err)
		}
		if status == http.StatusOK {
			accepted++
		}
	}
	// The same call sent to n2 (another receiver) is never valid there.
	statusN2, _, _ := postPeer(t.Context(), n2.URL()+handoff.Path, check, captured)
	// Signed before n1 started: n1 cannot know whether it saw it before its restart.
	old := peer.Sign(key, peer.Claim{Method: "POST", Host: n1.HTTP, URI: handoff.Path, Time: beforeStart, Body: check})
	statusOld, _, _ := postPeer(t.Context(), n1.URL()+handoff.Path, check, old)
	// Fresh, signed with either key, each call is heard once.
	fresh := 0
	for _, k := range []string{secret, next} {
		if s, _, _ := postPeer(t.Context(), n1.URL()+handoff.Path, check, signFor(n1, peer.Key(k), handoff.Path, time.Now().Unix(), check)); s == http.StatusOK {
			fresh++
		}
	}
	d := labelled(t, n1, "roost_refused_total", "reason", "peer_replay") - replays
	t.Logf("one captured call sent %d times: %d accepted, %v refused as replays; sent to n2: %d; signed before n1 started: %d; fresh with either key: %d of 2 heard",
		sends, accepted, d, statusN2, statusOld, fresh)
	if accepted != 1 || d < sends-1 {
		t.Errorf("a captured call sent %d times was accepted %d times (%v counted as replays), want once", sends, accepted, d)
	}
	if statusN2 != http.StatusUnauthorized || statusOld != http.StatusUnauthorized {
		t.Errorf("sent to another node: %d; signed before the receiver started: %d; want 401 for both", statusN2, statusOld)
	}
	if fresh != 2 {
		t.Errorf("%d of 2 fresh calls heard during the rotation", fresh)
	}

	// Real node-to-node calls still work with the keys one step apart: n2 drains, handing its
	// rooms to n1, signed with the key n1 accepts.
	gained := labelled(t, n1, "roost_rooms_gained_total", "how", "handoff")
	if !n2.Stop(15 * time.Second) {
		t.Error("n2 did not drain and stop within 15s")
	}
	moved := labelled(t, n1, "roost_rooms_gained_total", "how", "handoff") - gained
	refused := labelled(t, n1, "roost_refused_total", "reason", "peer_auth")
	t.Logf("n2 drained: %v of its %d rooms arrived on n1 by hand-off; n1 refused %v calls as unsigned", moved, onN2, refused)
	if moved != float64(onN2) || refused != 0 {
		t.Errorf("during the rotation, %v of %d rooms handed off, %v calls refused", moved, onN2, refused)
	}
}
