package test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/protocol"
)

// TestHostileMemory is issue 15's items 2 and 3 tried from outside, against real node processes:
// what an attacker achieves in heap or resident memory by announcing TCP frames it never sends,
// by flooding a node's rooms with big messages, and by subscribing and not reading. Each case
// logs its figures and asserts a bound far below what the same attack took before.
func TestHostileMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes and moves hundreds of MiB over loopback")
	}
	const mib = 1 << 20

	// 400 stream sources each announce a 1 MiB frame and send nothing of it. The node used to
	// allocate each frame's buffer on reading its length: +405 MiB of heap for ~2 KB sent.
	t.Run("announced frames cost nothing", func(t *testing.T) {
		n := startProc(t, "node", "n1", "", "--max-room-sources", "1000")
		proc.WaitRingT(t, []*proc.Proc{n}, 1)
		before := gauge(t, n, "go_memstats_heap_alloc_bytes")
		const sources = 400
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for i := range sources {
			c, err := net.DialTimeout("tcp", n.TCP, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte(`{"room":"announced"}` + "\n")); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "OK ") {
				t.Fatalf("source %d: %q %v", i, line, err)
			}
			var hdr [4]byte
			binary.BigEndian.PutUint32(hdr[:], 1<<20)
			if _, err := c.Write(hdr[:]); err != nil {
				t.Fatal(err)
			}
		}
		wait.Eventually(t, 10*time.Second, "every source connected", func() bool {
			return gauge(t, n, "roost_ingest_sources") == sources
		})
		// Give the node's readers time to reach the frame and (as they used to) allocate it.
		peak := 0.0
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			peak = max(peak, gauge(t, n, "go_memstats_heap_alloc_bytes"))
			time.Sleep(100 * time.Millisecond)
		}
		grew := peak - before
		t.Logf("%d sources announcing 1 MiB each, sending 4 bytes: heap %.1f → %.1f MiB (+%.1f MiB, %.0f KiB per source)",
			sources, before/mib, peak/mib, grew/mib, grew/sources/1024)
		if grew >= 40*mib {
			t.Fatalf("announced frames raised the heap by %.1f MiB, want < 40 MiB", grew/mib)
		}
	})

	// 100 rooms of a node with --max-memory-mib 256, flooded with 512 KiB messages: each room
	// would keep 4 MiB of history, 400 MiB in all. The node used to take every message (974 MiB
	// resident, no refusal); now its budget (half of 256 MiB) refuses growth past it, acked
	// messages all reach their subscriber, and the process stays near its limit.
	t.Run("flooded rooms stay within the memory limit", func(t *testing.T) {
		const limitMiB = 256
		n := startProc(t, "node", "n1", "", "--max-memory-mib", strconv.Itoa(limitMiB), "--room-create-rate", "0", "--stale-after", "5s")
		proc.WaitRingT(t, []*proc.Proc{n}, 1)
		const rooms, perRoom, size = 100, 10, 512 << 10
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()

		var peakRSS atomic.Int64
		stopSampling := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				if v, err := unlabelled(n, "process_resident_memory_bytes"); err == nil {
					peakRSS.Store(max(peakRSS.Load(), int64(v)))
				}
				select {
				case <-stopSampling:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()

		var wg sync.WaitGroup
		results := make([]floodResult, rooms)
		for i := range rooms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = floodRoom(ctx, n, fmt.Sprintf("flood-%d", i), perRoom, size, 0)
			}()
		}
		wg.Wait()
		close(stopSampling)
		<-sampled
		hwm := peakResident(n)
		var acked, refused int
		for i, r := range results {
			if r.err != nil {
				t.Fatalf("room %d: %v", i, r.err)
			}
			acked += r.acked
			refused += r.refused
			// Nothing accepted is lost: the publisher, the room's subscriber, got every message it
			// was acked for, numbered 1..acked; nothing refused was sequenced.
			if r.received != r.acked || r.lastSeq != uint64(r.acked) {
				t.Fatalf("room %d: %d acked, %d received, last seq %d", i, r.acked, r.received, r.lastSeq)
			}
		}
		counted := labelled(t, n, "roost_refused_total", "reason", "overloaded")
		rss := float64(max(peakRSS.Load(), hwm))
		t.Logf("%d rooms × %d messages of %d KiB: %d acked, %d refused (overloaded; %v counted), peak RSS %.0f MiB (VmHWM %.0f MiB) for --max-memory-mib %d, budget %.0f of %.0f MiB",
			rooms, perRoom, size>>10, acked, refused, counted, rss/mib, float64(hwm)/mib, limitMiB,
			gauge(t, n, "roost_memory_budget_used_bytes")/mib, gauge(t, n, "roost_memory_budget_bytes")/mib)
		if refused == 0 || counted == 0 {
			t.Fatal("the flood was never refused")
		}
		if rss > 1.3*limitMiB*mib {
			t.Fatalf("peak RSS %.0f MiB, want under 1.3 × %d MiB", rss/mib, limitMiB)
		}
	})

	// A subscriber that stops reading in a room of 256 KiB messages used to pin up to 1024 of
	// them (191 MiB measured) and stay connected. Now it is closed with 4008 once what waits for
	// it passes --send-queue-bytes (16 MiB by default), and what it pinned never passes that.
	t.Run("a subscriber that stops reading is dropped at its byte bound", func(t *testing.T) {
		n := startProc(t, "node", "n1", "")
		proc.WaitRingT(t, []*proc.Proc{n}, 1)
		const bound, size, messages = 16 << 20, 256 << 10, 150
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		wsURL := "ws://" + n.HTTP + "/v1/rooms/slow/ws"
		slowDialer := websocket.Dialer{NetDialContext: smallReceiveBuffer, ReadBufferSize: 1024}
		slow, _, err := slowDialer.DialContext(ctx, wsURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Close()
		if _, _, err := slow.ReadMessage(); err != nil { // the welcome; then it reads nothing
			t.Fatal(err)
		}
		before := gauge(t, n, "go_memstats_heap_alloc_bytes")

		var peakBudget, peakHeap atomic.Int64
		stopSampling := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				if v, err := unlabelled(n, "roost_memory_budget_used_bytes"); err == nil {
					peakBudget.Store(max(peakBudget.Load(), int64(v)))
				}
				if v, err := unlabelled(n, "go_memstats_heap_alloc_bytes"); err == nil {
					peakHeap.Store(max(peakHeap.Load(), int64(v)))
				}
				select {
				case <-stopSampling:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		// The flooder reads the room too, and is held to the same bound: 16 unanswered
		// publishes (4 MiB) keep it well inside it however slowly this machine lets it read.
		r := floodRoom(ctx, n, "slow", messages, size, 16)
		close(stopSampling)
		<-sampled
		if r.err != nil {
			t.Fatal(r.err)
		}
		drops := labelled(t, n, "roost_drops_total", "reason", "slow_consumer")
		// Now read: what the kernel buffered, then the close frame.
		_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
		var code int
		for {
			_, _, err := slow.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					code = ce.Code
				}
				break
			}
		}
		history := 4 << 20 // --history-bytes' default: the room keeps that much whoever reads
		pinned := float64(peakBudget.Load()) - float64(history)
		t.Logf("%d messages of %d KiB with a subscriber not reading: closed %d, drops %v, budget peak %.1f MiB (history %d MiB + %.1f MiB pinned by the queue), heap %.0f → peak %.0f MiB",
			messages, size>>10, code, drops, float64(peakBudget.Load())/mib, history>>20, pinned/mib, before/mib, float64(peakHeap.Load())/mib)
		if code != protocol.CloseSlowConsumer || drops != 1 {
			t.Fatalf("the slow subscriber ended with close %d (%v slow-consumer drops), want 4008 once", code, drops)
		}
		if pinned >= bound {
			t.Fatalf("the slow subscriber pinned %.1f MiB, want < %d MiB", pinned/mib, bound>>20)
		}
		// The heap holds garbage too (each publish is read into a buffer, then copied), and the
		// collector lets it grow to about twice what is live: bound it at 3× what may be kept.
		if grew := float64(peakHeap.Load()) - before; grew >= 3*float64(bound+history) {
			t.Fatalf("the heap grew by %.0f MiB, want < %d MiB", grew/mib, 3*(bound+history)>>20)
		}
		if r.received != r.acked {
			t.Fatalf("the publisher, reading, got %d of its %d acked messages", r.received, r.acked)
		}
	})
}

// TestHostileMemoryRouter: a client publishing big messages through a router to an owner that
// does not ack (SIGSTOPped) used to make the router keep every one for re-sending, up to 4096 of
// them however big (4 GiB at the frame limit). It now keeps --pending-bytes (4 MiB) per client
// and refuses the rest with `overloaded`, and what it did keep is acked once the owner runs.
func TestHostileMemoryRouter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node and router processes")
	}
	const mib = 1 << 20
	nodes, rt := startProcClusterWithRouter(t, 1)
	owner := nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+rt.HTTP+"/v1/rooms/pending/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if _, _, err := ws.ReadMessage(); err != nil { // welcome
		t.Fatal(err)
	}
	before := gauge(t, rt, "go_memstats_heap_alloc_bytes")
	var acked, refused atomic.Int64
	go func() {
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var f protocol.Incoming
			if json.Unmarshal(b, &f) == nil {
				switch {
				case f.Type == protocol.TypeAck:
					acked.Add(1)
				case f.Type == protocol.TypeError && f.Code == "overloaded":
					refused.Add(1)
				}
			}
		}
	}()
	owner.Signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			owner.Signal(syscall.SIGCONT)
		}
	}()
	const messages, size = 100, 512 << 10
	data := strings.Repeat("x", size)
	var peak float64
	for i := range messages {
		_ = ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if err := ws.WriteJSON(protocol.Publish{Type: protocol.TypePublish, ID: fmt.Sprintf("p%d", i), Data: json.RawMessage(strconv.Quote(data))}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if i%10 == 9 {
			peak = max(peak, gauge(t, rt, "go_memstats_heap_alloc_bytes"))
		}
	}
	wait.Eventually(t, 30*time.Second, "the router refusing what it cannot keep", func() bool {
		peak = max(peak, gauge(t, rt, "go_memstats_heap_alloc_bytes"))
		return refused.Load() >= messages/2
	})
	kept := gauge(t, rt, "roost_memory_budget_used_bytes")
	owner.Signal(syscall.SIGCONT)
	stopped = false
	wait.Eventually(t, 30*time.Second, "every publish answered once the owner runs", func() bool {
		return acked.Load()+refused.Load() == messages
	})
	grew := peak - before
	t.Logf("%d publishes of %d KiB to a stopped owner through a router: %d refused (overloaded), %d acked after SIGCONT; the router kept %.1f MiB, its heap grew by %.1f MiB",
		messages, size>>10, refused.Load(), acked.Load(), kept/mib, grew/mib)
	if kept > 4*mib+64<<10 {
		t.Fatalf("the router kept %.1f MiB for one client, want at most --pending-bytes (4 MiB)", kept/mib)
	}
	if grew >= 32*mib {
		t.Fatalf("the router's heap grew by %.1f MiB, want < 32 MiB", grew/mib)
	}
	if got := labelled(t, rt, "roost_refused_total", "reason", "overloaded"); got != float64(refused.Load()) {
		t.Fatalf("roost_refused_total{reason=overloaded} = %v, the client saw %d", got, refused.Load())
	}
}

// floodResult is what one publisher saw.
type floodResult struct {
	acked, refused, received int
	lastSeq                  uint64
	err                      error
}

// floodRoom connects to room on n, publishes count binary messages of size bytes as fast as the
// node's publish rate allows — with at most window of them unanswered, when window > 0 — while
// reading everything the room sends it, and returns once every publish is answered (ack or
// refusal) and every acked message has arrived.
func floodRoom(ctx context.Context, n *proc.Proc, room string, count, size, window int) floodResult {
	var res floodResult
	var ws *websocket.Conn
	var err error
	for attempt := 0; ; attempt++ {
		// A loaded machine can stall the node past --stale-after: it answers 503 while it
		// checks that no peer took its rooms.
		if ws, _, err = websocket.DefaultDialer.DialContext(ctx, "ws://"+n.HTTP+"/v1/rooms/"+room+"/ws", nil); err == nil || attempt == 20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		res.err = err
		return res
	}
	defer ws.Close()
	if _, _, err := ws.ReadMessage(); err != nil { // welcome
		res.err = err
		return res
	}
	payload := make([]byte, size)
	done := make(chan error, 1)
	answered := make(chan struct{}, count) // one per ack or refusal, for the window
	go func() {
		for {
			_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			mt, b, err := ws.ReadMessage()
			if err != nil {
				done <- err
				return
			}
			if mt == websocket.BinaryMessage {
				res.received++
				if seq := binary.BigEndian.Uint64(b); seq != res.lastSeq+1 {
					done <- fmt.Errorf("message seq %d after %d", seq, res.lastSeq)
					return
				}
				res.lastSeq++
			} else {
				var f protocol.Incoming
				if json.Unmarshal(b, &f) == nil {
					switch {
					case f.Type == protocol.TypeAck:
						res.acked++
						answered <- struct{}{}
					case f.Type == protocol.TypeError && f.Code == "overloaded":
						res.refused++
						answered <- struct{}{}
					case f.Type == protocol.TypeError && f.Code == protocol.CodeRateLimited:
						done <- errors.New("publish rate-limited: the test publishes too fast")
						return
					}
				}
			}
			if res.acked+res.refused == count && res.received == res.acked {
				done <- nil
				return
			}
		}
	}()
	for i := range count {
		if window > 0 && i >= window {
			select {
			case <-answered:
			case <-ctx.Done():
				ws.Close()
				<-done // the reader has stopped writing res
				res.err = fmt.Errorf("%s: no answer to a publish while %d were unanswered", room, window)
				return res
			}
		}
		_ = ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if err := ws.WriteMessage(websocket.BinaryMessage, payload); err != nil {
			res.err = err
			return res
		}
	}
	select {
	case err := <-done:
		res.err = err
	case <-ctx.Done():
		ws.Close()
		<-done
		res.err = fmt.Errorf("%s: %d acked, %d refused, %d received when time ran out", room, res.acked, res.refused, res.received)
	}
	return res
}

// peakResident is the process's peak resident set (VmHWM), in bytes; 0 if /proc cannot say.
func peakResident(p *proc.Proc) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
