package batch

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestConn upgrades through a batchingHijacker and writes frames in batches, some larger
// than a batch, while the client pings: every frame and every pong arrives whole and in order,
// and a batch leaves only when it ends.
func TestConn(t *testing.T) {
	const frames = 2000
	payload := func(i int) []byte {
		size := 10 + i%300
		if i%500 == 7 {
			size = Max + 1000 // written on its own
		}
		return bytes.Repeat([]byte{byte('a' + i%26)}, size)
	}
	written, release, finished := make(chan struct{}), make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(&Hijacker{ResponseWriter: w}, r, nil)
		if err != nil {
			done <- err
			return
		}
		defer ws.Close()
		nc := Of(ws.NetConn())
		if nc == nil {
			done <- fmt.Errorf("the upgraded connection is %T, not a batch.Conn", ws.NetConn())
			return
		}
		// The reader answers the client's pings: pongs are written while batches are open.
		go func() {
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
		nc.Begin()
		if err := ws.WriteMessage(websocket.TextMessage, []byte("held")); err != nil {
			done <- err
			return
		}
		close(written)
		<-release
		if err := nc.End(); err != nil {
			done <- err
			return
		}
		for i := 0; i < frames; {
			nc.Begin()
			for end := min(i+1+i%37, frames); i < end; i++ {
				_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if err := ws.WriteMessage(websocket.BinaryMessage, payload(i)); err != nil {
					done <- err
					return
				}
			}
			if err := nc.End(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
		<-finished // closing now could reset the connection under the client's reads
	}))
	defer srv.Close()
	defer close(finished)

	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var pongs atomic.Int64
	c.SetPongHandler(func(string) error { pongs.Add(1); return nil })

	// Nothing of an open batch reaches the wire. (Read the socket itself: a timed-out read would
	// break gorilla's connection.)
	<-written
	raw := c.NetConn()
	_ = raw.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := raw.Read(make([]byte, 1)); n > 0 || err == nil {
		t.Fatal("a frame arrived before its batch ended")
	}
	_ = raw.SetReadDeadline(time.Time{})
	close(release)

	stop, pinged := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		defer func() { pinged <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := c.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
				return
			}
			n++
			time.Sleep(time.Millisecond)
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, b, err := c.ReadMessage(); err != nil || string(b) != "held" {
		t.Fatalf("first frame %q, %v; want held", b, err)
	}
	for i := range frames {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(b, payload(i)) {
			t.Fatalf("frame %d: %d bytes, want %d of %q", i, len(b), len(payload(i)), payload(i)[:1])
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(stop)
	if sent := <-pinged; sent == 0 {
		t.Fatal("the client sent no ping")
	}
	// The pongs of the last pings may still be on their way: read on until one came (the pong
	// handler ends the read), or for a second.
	if pongs.Load() == 0 {
		c.SetPongHandler(func(string) error { pongs.Add(1); return c.SetReadDeadline(time.Now()) })
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		_, _, _ = c.ReadMessage()
	}
	if pongs.Load() == 0 {
		t.Fatal("pings were sent during the batches, no pong came back")
	}
}
