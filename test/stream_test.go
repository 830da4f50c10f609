package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/testcluster"
	"github.com/roost-dev/roost/node"
)

// streamCase is one run of a stream source into a room watched by subscribers.
type streamCase struct {
	frames      int
	maxSize     int // frames are 1..maxSize bytes
	subscribers int // half through the router, half direct to a node
	drain       bool
	rate        int // the node's --ingest-rate: a live feed's pace, which subscribers keep up with
	// (a subscriber slower than the feed is dropped with 4008, by design)
}

// TestStreamFanOut: a source streams frames of random sizes into a room; every subscriber,
// some through the router and some direct, receives every frame byte-identical and in order,
// once. The drain case drains the room's owner mid-stream: the source follows MOVED and resends
// exactly what the old owner had not taken in; subscribers follow the room.
//
// Under -race the sizes are cut down; ROOST_STREAM_FULL=1 runs the full size, 10,000 frames of
// 1 B to 256 KiB to 50 subscribers, paced at 20 MiB/s (1 GB/s delivered) — make test runs it
// without -race after the rest; `make stream` prints its figures.
func TestStreamFanOut(t *testing.T) {
	cases := map[string]streamCase{
		"steady": {frames: 1000, maxSize: 64 << 10, subscribers: 10, rate: 16 << 20},
		"drain":  {frames: 2000, maxSize: 16 << 10, subscribers: 4, drain: true, rate: 16 << 20},
	}
	if os.Getenv("ROOST_STREAM_FULL") != "" {
		cases = map[string]streamCase{
			"steady": {frames: 10000, maxSize: 256 << 10, subscribers: 50, rate: 20 << 20},
			"drain":  {frames: 10000, maxSize: 256 << 10, subscribers: 50, drain: true, rate: 20 << 20},
		}
	}
	for _, name := range []string{"steady", "drain"} {
		t.Run(name, func(t *testing.T) { runStream(t, cases[name]) })
	}
}

// streamFrame is frame i of a run: its size and bytes follow from i, so neither side keeps
// gigabytes of frames to compare.
func streamFrame(i, maxSize int) []byte {
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	b := make([]byte, 1+rng.IntN(maxSize))
	for j := 0; j < len(b); j += 8 {
		v := rng.Uint64()
		for k := 0; k < 8 && j+k < len(b); k++ {
			b[j+k] = byte(v >> (8 * k))
		}
	}
	return b
}

func runStream(t *testing.T, sc streamCase) {
	// A stream room keeps enough history for a subscriber that falls behind for a moment (during
	// a move, or dropped as slow and resuming) to catch up without a gap, and lets that much wait
	// for one subscriber, as an operator would set --history-bytes and --send-queue-bytes for one
	// (the default 16 MiB is under a second of a 20 MiB/s feed).
	c := testcluster.New(t, testcluster.Config{Nodes: 3, Routers: 1, Node: func(cfg *node.Config) {
		cfg.HistoryBytes, cfg.HistoryCount, cfg.SendQueueBytes = 64<<20, sc.frames, 64<<20
		cfg.IngestMaxFrame, cfg.IngestRate = 256<<10, sc.rate
	}})
	// What each frame hashes to: subscribers check every byte without keeping the frames.
	sums := make([]uint64, sc.frames)
	for i := range sums {
		sums[i] = xxhash.Sum64(streamFrame(i, sc.maxSize))
	}
	rt := c.Routers()[0]
	const room = "stream"
	owner, _ := rt.Ring.Placement().Owner(room)
	direct := c.Nodes()[0].URL()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	var subs []*client.Conn
	for k := range sc.subscribers {
		base := rt.URL()
		if k%2 == 1 {
			base = direct
		}
		s, err := client.Dial(ctx, base, room, &client.Options{MaxReconnectDelay: 50 * time.Millisecond, Alternates: []string{rt.URL()}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		subs = append(subs, s)
	}
	// Subscribers read while the stream runs, as real ones do.
	errs := make(chan error, len(subs))
	for k, s := range subs {
		go func() {
			var last uint64
			for i := 0; i < sc.frames; {
				ev, err := s.Next(ctx)
				if err != nil {
					errs <- fmt.Errorf("subscriber %d after %d frames: %w", k, i, err)
					return
				}
				switch ev.Type {
				case client.EventBinary:
					if last != 0 && ev.Seq != last+1 {
						errs <- fmt.Errorf("subscriber %d: seq %d after %d", k, ev.Seq, last)
						return
					}
					if xxhash.Sum64(ev.Payload) != sums[i] {
						errs <- fmt.Errorf("subscriber %d: frame %d (%d bytes) differs from the one sent", k, i, len(ev.Payload))
						return
					}
					last = ev.Seq
					i++
				case client.EventReset, client.EventGap:
					errs <- fmt.Errorf("subscriber %d after %d frames: %s %+v", k, i, ev.Type, ev)
					return
				}
			}
			errs <- nil
		}()
	}

	src, err := client.OpenStream(ctx, rt.URL(), room, &client.StreamOptions{MaxFrame: sc.maxSize})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	drained := make(chan struct{})
	start := time.Now()
	for i := range sc.frames {
		if sc.drain && i == sc.frames/3 {
			go func() { c.Drain(c.Member(owner.ID)); close(drained) }()
		}
		if sc.drain && i == 2*sc.frames/3 {
			<-drained // the move happens while the source still has frames to send
		}
		if err := src.Send(ctx, streamFrame(i, sc.maxSize)); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if err := src.Finish(ctx); err != nil {
		t.Fatalf("finishing the stream: %v", err)
	}
	for range subs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	t.Logf("%d frames, %.1f MB, to %d subscribers in %v; the source moved %d times",
		src.Frames(), float64(src.Bytes())/1e6, len(subs), took.Round(time.Millisecond), src.Moves())
	if src.Frames() != uint64(sc.frames) || (sc.drain && src.Moves() < 1) {
		t.Fatalf("source counted %d frames and %d moves", src.Frames(), src.Moves())
	}
}
