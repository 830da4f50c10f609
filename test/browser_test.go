package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/internal/wait"
)

// chromiumPath finds Debian's chromium (CI installs it: .ci/run).
func chromiumPath() string {
	for _, p := range []string{os.Getenv("ROOST_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	return ""
}

// startDev runs `roost dev` (3 nodes, a router serving the demo page, the demo source) and
// returns it as a proc whose HTTP address is the router's.
func startDev(t *testing.T) *proc.Proc {
	t.Helper()
	p := proc.StartT(t, proc.Spec{Binary: proc.Roost(t), Role: "dev", Args: []string{"--demo-fps", "10"}, HTTP: quickHTTP})
	wait.Eventually(t, 20*time.Second, "roost dev serves", func() bool {
		c, err := p.Cluster()
		return err == nil && len(c.Rooms) == 3
	})
	return p
}

// TestBrowserDemoPage drives the demo page of `roost dev` in headless Chromium: the demo stream
// draws, two tabs chat in one room, the room's owner is drained mid-conversation, and both tabs
// keep the whole conversation, in order, with nothing lost or doubled. The drained node is a
// node process joined to roost dev's cluster (roost dev's own nodes share one process), and the
// room is one it owns. A screenshot goes to test/artifacts/browser.png.
func TestBrowserDemoPage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and a browser")
	}
	chromium := chromiumPath()
	if chromium == "" {
		t.Skip("no chromium (apt-get install chromium; .ci/run does)")
	}
	dev := startDev(t)
	c, _ := dev.Cluster()
	var seed string
	for _, m := range c.Members {
		if m.Role == "node" {
			seed = m.Gossip
		}
	}
	extra := startProc(t, "node", "n9", seed)
	wait.Eventually(t, 20*time.Second, "roost dev's router places rooms on the joined node", func() bool {
		c, err := dev.Cluster()
		return err == nil && len(c.Rooms) == 4
	})
	var room string
	for r := range roomsByOwner(t, dev, "browser-", 1, extra.ID) {
		room = r
	}
	rt, nodes := dev, []*proc.Proc{extra}

	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1300, 900))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	if err := chromedp.Do(browser); err != nil { // starts the browser, with no timeout of its own
		t.Fatalf("start chromium: %v", err)
	}

	tab := func(name string) context.Context {
		ctx, cancel := chromedp.NewContext(browser)
		t.Cleanup(cancel)
		if err := chromedp.Do(ctx); err != nil { // opens the tab, with no timeout of its own
			t.Fatal(err)
		}
		do(t, ctx, 20*time.Second, chromedp.Navigate(rt.URL()+"/?room="+room+"&name="+name),
			chromedp.WaitVisible(chromedp.CSS(`#text:not([disabled])`)))
		return ctx
	}
	ann, bob := tab("ann"), tab("bob")
	// The page runs on the JavaScript client (sdk/js), loaded as the module bundle beside it.
	sdk := `performance.getEntriesByType("resource").some(e => e.name.endsWith("/demo/roost-client.js")) && !!document.querySelector('script[type=module][src="/demo/app.js"]')`
	if !value(t, ann, chromedp.Evaluate[bool](sdk)) {
		t.Fatal("the demo page did not load /demo/roost-client.js from a module script")
	}
	wait.Eventually(t, 10*time.Second, "the demo stream draws on the page", func() bool {
		return value(t, ann, chromedp.Evaluate[float64](`Number(document.getElementById("stream-status").dataset.frames || 0)`)) >= 3
	})
	say := func(ctx context.Context, text string) {
		// Typed through the DOM: keyboard focus belongs to one tab at a time, and two type here.
		js := fmt.Sprintf(`document.getElementById("text").value = %q; document.getElementById("say").requestSubmit(); true`, text)
		value(t, ctx, chromedp.Evaluate[bool](js))
	}
	// lines is the conversation a tab shows: "seq who text" of every delivered message.
	lines := func(ctx context.Context) []string {
		return value(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#messages li.msg")].map(li => li.textContent)`))
	}
	waitLines := func(ctx context.Context, n int) []string {
		t.Helper()
		var got []string
		wait.Eventually(t, 20*time.Second, fmt.Sprintf("%d messages on the page", n), func() bool {
			got = lines(ctx)
			return len(got) >= n
		})
		return got
	}

	for i := range 3 {
		say(ann, fmt.Sprint("ann before ", i))
		say(bob, fmt.Sprint("bob before ", i))
	}
	waitLines(ann, 6)
	waitLines(bob, 6)

	// Drain the room's owner (SIGTERM): the router moves both tabs' connections to the new owner.
	nodeShown := chromedp.Evaluate[string](`document.getElementById("status").dataset.node || ""`)
	owner := value(t, ann, nodeShown)
	var victim *proc.Proc
	for _, n := range nodes {
		if n.ID == owner {
			victim = n
		}
	}
	if victim == nil {
		t.Fatalf("the page names owner %q, not one of the nodes", owner)
	}
	victim.Signal(syscall.SIGTERM)
	for i := range 3 {
		say(ann, fmt.Sprint("ann after ", i))
		say(bob, fmt.Sprint("bob after ", i))
	}
	<-victim.Exited()
	waitLines(ann, 12)
	waitLines(bob, 12)
	// A last message, sent once both tabs show the twelve: the room delivers in seq order, so
	// anything doubled before it shows before it. No sleep and hope.
	say(ann, "the end")
	a, b := waitLines(ann, 13), waitLines(bob, 13)
	if strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Fatalf("the tabs disagree:\nann sees %q\nbob sees %q", a, b)
	}
	if len(a) != 13 || !strings.HasSuffix(a[12], "the end") {
		t.Fatalf("%d messages on the page, want 12 and the last one: %q", len(a), a)
	}
	a = a[:12]
	for i, line := range a {
		if !strings.HasPrefix(line, fmt.Sprint(i+1)) {
			t.Fatalf("message %d is %q: seqs must run 1..12", i, line)
		}
	}
	for _, want := range []string{"ann before 2", "bob before 2", "ann after 2", "bob after 2"} {
		if !slices.ContainsFunc(a, func(l string) bool { return strings.HasSuffix(l, want) }) {
			t.Fatalf("%q missing from %q", want, a)
		}
	}
	// The router keeps the tabs' connections across the move, so they get no new welcome; the
	// cluster view resolves the room again and names its new owner.
	var newOwner string
	ownerShown := chromedp.Evaluate[string](fmt.Sprintf(`[...document.querySelectorAll("#owners tr")].map(tr => [...tr.cells].map(c => c.textContent)).find(r => r[0] === %q)?.[1] || ""`, room))
	wait.Eventually(t, 10*time.Second, "the cluster view shows the new owner", func() bool {
		newOwner = value(t, ann, ownerShown)
		return newOwner != "" && newOwner != owner && !strings.HasPrefix(newOwner, "(")
	})

	// The README's browser example, run as written in the console of a page the router serves
	// (with this router's address for 127.0.0.1:8080): it joins lobby, finds itself in the
	// presence and gets its own message back with the seq its publish resolved with.
	console, cancelConsole := chromedp.NewContext(browser)
	defer cancelConsole()
	if err := chromedp.Do(console); err != nil {
		t.Fatal(err)
	}
	do(t, console, 20*time.Second, chromedp.Navigate(rt.URL()+"/"), chromedp.WaitVisible(chromedp.CSS(`#members tr`)))
	// Top-level await as in the console, inside an async function; what it made is kept on window.
	example := strings.ReplaceAll(readmeExample(t), "127.0.0.1:8080", strings.TrimPrefix(rt.URL(), "http://"))
	value(t, console, chromedp.Evaluate[chromedp.Void](`(async () => {`+example+`
		Object.assign(window, { room, members, seq }); })().catch((e) => { window.exampleError = String(e); }); undefined`))
	wait.Eventually(t, 10*time.Second, "the README example is in lobby and has its own message back", func() bool {
		if e := value(t, console, chromedp.Evaluate[string](`window.exampleError || ""`)); e != "" {
			t.Fatalf("the README example failed: %s", e)
		}
		return value(t, console, chromedp.Evaluate[bool](`!!window.room && room.state === "open" && members.members.has("console") && seq > 0 && room.seq >= seq`))
	})

	png := value(t, ann, chromedp.FullScreenshot(100))
	if err := os.MkdirAll("artifacts", 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join("artifacts", "browser.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("owner %s drained, the room moved to %s; both tabs hold all 12 messages; screenshot %s", owner, newOwner, shot)
}

// readmeExample is the first js block of the README's "JavaScript client" section.
func readmeExample(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "\n## JavaScript client\n")
	_, block, ok := strings.Cut(section, "\n```js\n")
	block, _, closed := strings.Cut(block, "\n```\n")
	if !ok || !closed || strings.Contains(block, "\n## ") {
		t.Fatal(`README.md: no js block in the "JavaScript client" section`)
	}
	return block
}

// do runs actions in a tab within d.
func do(t *testing.T, ctx context.Context, d time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

// value runs one action in a tab, within 10 s, and returns its value.
func value[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
