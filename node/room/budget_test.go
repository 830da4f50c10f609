package room

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/limit"
)

// binaryCost is what a binary message of payload bytes costs the budget, as publish makes it.
func binaryCost(payload int) int {
	return (&entry{frame: make([]byte, 8+payload)}).cost()
}

// The budget counts what a room retains, gives back what its history lets go, and gets
// everything back when the room is gone.
func TestBudgetCountsWhatARoomKeeps(t *testing.T) {
	cfg, _ := testConfig()
	cfg.Budget = limit.NewBudget(0, nil) // unbounded: counts only
	cfg.HistoryCount = 4
	r := New(cfg, "a")
	big := string(make([]byte, 100<<10))
	for i := range 6 {
		if _, err := publish(r, big); err != nil {
			t.Fatal(err)
		}
		want := min(i+1, 4) * binaryCost(len(big))
		if got := cfg.Budget.Used(); got != int64(want) {
			t.Fatalf("after %d messages the budget counts %d, want %d", i+1, got, want)
		}
	}
	if _, err := publish(r, "small"); err != nil { // prepared: counted with its framed copy
		t.Fatal(err)
	}
	if got, want := cfg.Budget.Used(), int64(3*binaryCost(len(big))+binaryCost(5)); got != want {
		t.Fatalf("with a small message the budget counts %d, want %d", got, want)
	}
	r.Close(Farewell{})
	if got := cfg.Budget.Used(); got != 0 {
		t.Fatalf("a closed room still counts %d bytes", got)
	}

	// A room received in a hand-off is counted as it is restored, even past the budget: the
	// cluster holds it already.
	cfg.Budget = limit.NewBudget(uint64(binaryCost(len(big))), nil)
	st := State{Room: "b", Epoch: "e", Seq: 2, History: []Message{{Seq: 1, Binary: true, Frame: make([]byte, 8+len(big))},
		{Seq: 2, Binary: true, Frame: make([]byte, 8+len(big))}}, IDs: []ID{{ID: "p1", Seq: 2}}}
	rr := Restore(cfg, st)
	if got, want := cfg.Budget.Used(), int64(2*binaryCost(len(big))+len("p1")+idCost); got != want {
		t.Fatalf("a restored room counts %d, want %d", got, want)
	}
	if _, err := publish(rr, big); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("growth of a restored room past the budget: %v, want ErrOverloaded", err)
	}
	rr.Close(Farewell{})
	if got := cfg.Budget.Used(); got != 0 {
		t.Fatalf("a closed restored room still counts %d bytes", got)
	}
}

// A publish that would grow what is kept past the budget is refused and not sequenced; one that
// only replaces what a full history lets go is taken.
func TestBudgetRefusesGrowthNotReplacement(t *testing.T) {
	cfg, _ := testConfig()
	cfg.Metrics.Overloaded = prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	payload := string(make([]byte, 64<<10))
	cfg.Budget = limit.NewBudget(uint64(2*binaryCost(len(payload))+100), nil)
	cfg.HistoryCount = 10
	r := New(cfg, "a")
	for range 2 {
		if _, err := publish(r, payload); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := publish(r, payload); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("a publish past the budget: %v, want ErrOverloaded", err)
	}
	if _, seq := r.Position(); seq != 2 || testutil.ToFloat64(cfg.Metrics.Overloaded) != 1 {
		t.Fatalf("after a refusal the room is at seq %d (want 2), refusals counted %v", seq, testutil.ToFloat64(cfg.Metrics.Overloaded))
	}

	// The same budget with a history of two: every message replaces the oldest, so all fit.
	cfg.HistoryCount = 2
	r2 := New(cfg, "b")
	r.Close(Farewell{})
	for i := range 10 {
		if _, err := publish(r2, payload); err != nil {
			t.Fatalf("publish %d into a full history: %v", i+1, err)
		}
	}
	r2.Close(Farewell{})
	if got := cfg.Budget.Used(); got != 0 {
		t.Fatalf("closed rooms still count %d bytes", got)
	}
}

func TestDedupeIsCounted(t *testing.T) {
	b := limit.NewBudget(0, nil)
	d := dedupe{max: 2, budget: b}
	d.remember("c", "aa", 1)
	d.remember("c", "bbb", 2)
	if got := b.Used(); got != int64(5+2*idCost) {
		t.Fatalf("two ids count %d", got)
	}
	if g := d.growth("c", "cccc"); g != 4-2 {
		t.Fatalf("growth of a third id over a maximum of two: %d", g)
	}
	d.remember("c", "cccc", 3)
	if got := b.Used(); got != int64(7+2*idCost) {
		t.Fatalf("after forgetting the oldest, ids count %d", got)
	}
	d.clear()
	if got := b.Used(); got != 0 {
		t.Fatalf("cleared ids count %d", got)
	}

	// With a window per client, an id the room forgot but its client's window keeps is still
	// counted, and counted once.
	d = dedupe{max: 1, perClient: 2, budget: b}
	d.remember("quiet", "q1", 1)
	d.remember("busy", "b1", 2)
	d.remember("busy", "b2", 3)
	if got := b.Used(); got != int64(3*(2+idCost)) {
		t.Fatalf("three ids, all kept by their clients' windows, count %d", got)
	}
	d.remember("busy", "b3", 4) // b1 leaves both windows
	if got := b.Used(); got != int64(3*(2+idCost)) {
		t.Fatalf("after b1 left both windows, ids count %d", got)
	}
	d.clear()
	if got := b.Used(); got != 0 {
		t.Fatalf("cleared ids count %d", got)
	}
}

// pipeListener serves one side of net.Pipe connections to an http.Server: a pipe has no buffer,
// so a client that does not read blocks the server's first write at once.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{} }

// A connection that does not read is closed with 4008 once what waits for it holds more than
// SendQueueBytes, long before SendQueue frames; what it held goes back to the budget.
func TestSlowConnectionIsDroppedAtItsByteBound(t *testing.T) {
	cfg, _ := testConfig()
	cfg.Budget = limit.NewBudget(0, nil)
	cfg.SendQueue = 1000
	cfg.SendQueueBytes = 300 << 10
	cfg.HistoryCount = 1
	r := New(cfg, "a")

	ln := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	joined := make(chan *Conn, 1)
	up := websocket.Upgrader{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ws, err := up.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		c := NewConn(cfg, ws, "slow", false)
		if err := r.Join(c, Resume{}); err != nil {
			t.Error(err)
		}
		joined <- c
	})}
	go srv.Serve(ln)
	defer srv.Close()
	client, server := net.Pipe()
	ln.conns <- server
	// The handshake by hand: then the client reads nothing more.
	if _, err := client.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	c := <-joined
	payload := string(make([]byte, 100<<10))
	for range 5 {
		if _, err := publish(r, payload); err != nil {
			t.Fatal(err)
		}
	}
	if n := testutil.ToFloat64(cfg.Metrics.SlowConsumers); n != 1 {
		t.Fatalf("slow consumers %v after 500 KiB queued to a connection bounded at 300 KiB, want 1", n)
	}
	// The writer, stuck on its first write, gives up after WriteTimeout; then only the history's
	// message is counted.
	client.Close()
	c.End()
	r.Leave(c)
	wait.Eventually(t, 5*time.Second, "the queue's memory back", func() bool { return cfg.Budget.Used() == int64(binaryCost(len(payload))) })
	r.Close(Farewell{})
}

// A resume's replay is the history, which the byte bound does not count: a client resuming in a
// room whose history is larger than SendQueueBytes is not dropped for it; live messages are.
func TestReplayIsNotCountedAgainstTheQueueBound(t *testing.T) {
	cfg, _ := testConfig()
	cfg.Budget = limit.NewBudget(0, nil)
	cfg.SendQueue = 1000
	cfg.SendQueueBytes = 200 << 10
	r := New(cfg, "a")
	payload := string(make([]byte, 50<<10))
	for range 10 {
		if _, err := publish(r, payload); err != nil {
			t.Fatal(err)
		}
	}
	c := &Conn{cfg: cfg, writer: true} // a writer "runs": frames stay queued
	r.mu.Lock()
	ok := c.send(outFrame{replay: slices.Clone(r.hist.after(0))})
	r.mu.Unlock()
	if !ok {
		t.Fatal("a replay of 500 KiB of history was refused by a 200 KiB queue bound")
	}
	live := 0
	for c.send(outFrame{msg: r.hist.entries[9]}) {
		live++
	}
	if live != 200<<10/binaryCost(len(payload)) {
		t.Fatalf("%d live messages of 50 KiB fitted in a 200 KiB bound", live)
	}
	if n := testutil.ToFloat64(cfg.Metrics.SlowConsumers); n != 1 {
		t.Fatalf("slow consumers %v, want 1", n)
	}
	r.Close(Farewell{})
	if got := cfg.Budget.Used(); got != 0 {
		t.Fatalf("with the room closed and the queue dropped, the budget counts %d", got)
	}
}
