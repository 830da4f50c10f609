package node

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// BenchmarkIngestFanOut: one TCP stream source into a room with 100 WebSocket subscribers, at
// 1 KiB and 64 KiB frames. Each op is one frame delivered to every subscriber. The same run
// measures a baseline: a minimal gorilla server writing the same frames (8-byte seq + payload)
// to the same number of sockets in a plain loop, read by the same subscribers. Reported:
// frames/s and delivered MB/s for both, and roost's throughput as a ratio of the baseline.
//
//	go test -run '^$' -bench IngestFanOut -benchtime 2000x ./node
func BenchmarkIngestFanOut(b *testing.B) {
	const subscribers = 100
	for _, size := range []int{1 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			base := fanOutBaseline(b, subscribers, size, b.N)
			b.SetBytes(int64(size * subscribers))
			b.ResetTimer()
			roost := fanOutRoost(b, subscribers, size, b.N)
			b.StopTimer()
			mb := func(d time.Duration) float64 { return float64(b.N*size*subscribers) / 1e6 / d.Seconds() }
			b.ReportMetric(float64(b.N)/roost.Seconds(), "frames/s")
			b.ReportMetric(float64(b.N)/base.Seconds(), "baseline-frames/s")
			b.ReportMetric(mb(base), "baseline-MB/s")
			b.ReportMetric(base.Seconds()/roost.Seconds(), "x-baseline")
		})
	}
}

// fanOutReaders are subscribers that read binary messages with minimal decoding and count them.
type fanOutReaders struct {
	frames atomic.Int64 // frames received, summed over subscribers
	wg     sync.WaitGroup
}

// With welcome, each waits for its welcome before the next dials.
func (r *fanOutReaders) start(b *testing.B, url string, n int, welcome bool) {
	for range n {
		ws, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ws.Close() })
		// The welcome comes once the subscriber has joined the room: a frame sent before then
		// is not owed to it.
		if welcome {
			if _, _, err := ws.ReadMessage(); err != nil {
				b.Fatal(err)
			}
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for {
				mt, rd, err := ws.NextReader()
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, rd)
				if mt == websocket.BinaryMessage {
					r.frames.Add(1)
				}
			}
		}()
	}
}

// waitFor waits until every subscriber has received frames frames.
func (r *fanOutReaders) waitFor(b *testing.B, total int64) {
	deadline := time.Now().Add(5 * time.Minute)
	for r.frames.Load() < total {
		if time.Now().After(deadline) {
			b.Fatalf("subscribers received %d of %d frames", r.frames.Load(), total)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// window keeps the sender at most this many frames ahead of the slowest subscriber, so the
// run measures what is delivered, not how deep queues grow.
const fanOutWindow = 64

func fanOutRoost(b *testing.B, subscribers, size, frames int) time.Duration {
	b.StopTimer()
	cfg := DefaultConfig()
	cfg.IngestRate = 1 << 40
	n := startNode(b, "bench", cfg)
	addr := startIngest(b, n)
	var readers fanOutReaders
	readers.start(b, "ws://"+n.addr+"/v1/rooms/bench/ws", subscribers, true)
	src, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	fmt.Fprintf(src, "{\"room\":\"bench\"}\n")
	line := make([]byte, 64)
	if k, err := src.Read(line); err != nil || string(line[:2]) != "OK" {
		b.Fatalf("handshake: %q %v", line[:k], err)
	}
	frame := make([]byte, 4+size)
	binary.BigEndian.PutUint32(frame, uint32(size))
	b.StartTimer()
	start := time.Now()
	for i := range frames {
		for int64(i-fanOutWindow)*int64(subscribers) > readers.frames.Load() {
			time.Sleep(20 * time.Microsecond)
		}
		if _, err := src.Write(frame); err != nil {
			b.Fatal(err)
		}
	}
	readers.waitFor(b, int64(frames*subscribers))
	return time.Since(start)
}

// fanOutBaseline serves subscribers with the plainest broadcast: one loop writing each frame to
// every socket in turn.
func fanOutBaseline(b *testing.B, subscribers, size, frames int) time.Duration {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	conns := make(chan *websocket.Conn, subscribers)
	up := websocket.Upgrader{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ws, err := up.Upgrade(w, r, nil); err == nil {
			conns <- ws
		}
	})}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	var readers fanOutReaders
	readers.start(b, "ws://"+ln.Addr().String()+"/", subscribers, false)
	all := make([]*websocket.Conn, 0, subscribers)
	for range subscribers {
		all = append(all, <-conns)
	}
	defer func() {
		for _, ws := range all {
			ws.Close()
		}
	}()
	msg := make([]byte, 8+size)
	start := time.Now()
	for i := range frames {
		binary.BigEndian.PutUint64(msg, uint64(i+1))
		for _, ws := range all {
			if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				b.Fatal(err)
			}
		}
	}
	readers.waitFor(b, int64(frames*subscribers))
	return time.Since(start)
}
