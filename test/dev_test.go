package test

import (
	"context"
	"encoding/binary"
	"syscall"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/proc"
)

// TestDevStreamsTheDemoPicture: `roost dev` runs a demo source, so a stream is visible from the
// first minute; a client of the demo room through the router gets its frames, in order.
func TestDevStreamsTheDemoPicture(t *testing.T) {
	dev := proc.StartT(t, proc.Spec{Binary: proc.Roost(t), Role: "dev", Args: []string{"--demo-fps", "20"}})
	addr := dev.HTTP
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var c *client.Conn
	for {
		var err error
		if c, err = client.Dial(ctx, "http://"+addr, "demo-stream", nil); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the dev cluster never served the demo room: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer c.Close()
	var last uint32
	for got := 0; got < 5; {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != client.EventBinary {
			continue
		}
		p := ev.Payload
		if len(p) < 12 || string(p[:4]) != "RPX1" {
			t.Fatalf("demo frame %q... is not a picture frame", p[:min(len(p), 12)])
		}
		w, h, num := binary.BigEndian.Uint16(p[4:]), binary.BigEndian.Uint16(p[6:]), binary.BigEndian.Uint32(p[8:])
		if len(p) != 12+int(w)*int(h) {
			t.Fatalf("demo frame of %dx%d has %d bytes", w, h, len(p))
		}
		if got > 0 && num != last+1 {
			t.Fatalf("demo frame %d after %d", num, last)
		}
		last = num
		got++
	}
	// Ctrl-C stops it cleanly.
	dev.Signal(syscall.SIGINT)
	select {
	case <-dev.Exited():
		if code := dev.ExitCode(); code != 0 {
			t.Fatalf("roost dev exited with code %d after SIGINT", code)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("roost dev did not stop within 15s of SIGINT")
	}
}
