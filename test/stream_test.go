package test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
)

// TestStreamThroughADrain: a stream source sends frames of random sizes into a room while the
// room's owner is drained; subscribers (through the router and direct) receive every frame once,
// byte-identical, in order. ROOST_STREAM_FRAMES sets the count (default 2000).
func TestStreamThroughADrain(t *testing.T) {
	frames := 2000
	if v, err := strconv.Atoi(os.Getenv("ROOST_STREAM_FRAMES")); err == nil && v > 0 {
		frames = v
	}
	c := newCluster(t, 3, 1)
	rt := c.routers()[0]
	const room = "stream-drain"
	owner, _ := rt.ring.Placement().Owner(room)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	var subs []*client.Conn
	for _, base := range []string{rt.url(), c.nodes()[0].url()} {
		s, err := client.Dial(ctx, base, room, &client.Options{EventBuffer: frames + 100, MaxReconnectDelay: 50 * time.Millisecond, Alternates: []string{rt.url()}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		subs = append(subs, s)
	}
	src, err := client.OpenStream(ctx, rt.url(), room, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	sent := make([][]byte, frames)
	drained := make(chan struct{})
	for i := range sent {
		sent[i] = make([]byte, 1+rng.IntN(64<<10))
		for j := range sent[i] {
			sent[i][j] = byte(rng.Uint32())
		}
		if i == frames/3 {
			go func() { c.drain(c.member(owner.ID)); close(drained) }()
		}
		if err := src.Send(ctx, sent[i]); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	<-drained
	for k, s := range subs {
		var last uint64
		for i := 0; i < frames; {
			ev, err := s.Next(ctx)
			if err != nil {
				t.Fatalf("subscriber %d after %d frames: %v", k, i, err)
			}
			switch ev.Type {
			case client.EventBinary:
				if last != 0 && ev.Seq != last+1 {
					t.Fatalf("subscriber %d: seq %d after %d", k, ev.Seq, last)
				}
				if !bytes.Equal(ev.Payload, sent[i]) {
					t.Fatalf("subscriber %d: frame %d differs (%d bytes, want %d)", k, i, len(ev.Payload), len(sent[i]))
				}
				last = ev.Seq
				i++
			case client.EventReset, client.EventGap:
				t.Fatalf("subscriber %d: %s", k, ev.Type)
			}
		}
	}
	if src.Frames() != uint64(frames) || src.Moves() < 1 {
		t.Fatalf("source counted %d frames and %d moves; the drain should have moved it mid-stream", src.Frames(), src.Moves())
	}
}
