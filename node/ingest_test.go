package node

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/node/handoff"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/protocol"
)

// startIngest serves stream ingest of n on a free port.
func startIngest(t testing.TB, n *testNode) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go n.ServeTCP(ln)
	return ln.Addr().String()
}

func sourceHello(t *testing.T, addr, line string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, line)
	br := bufio.NewReader(c)
	got, _ := br.ReadString('\n')
	return c, br, strings.TrimSpace(got)
}

func writeFrame(c net.Conn, p []byte) error {
	var h [4]byte
	binary.BigEndian.PutUint32(h[:], uint32(len(p)))
	_, err := c.Write(append(h[:], p...))
	return err
}

func TestIngestFramesReachSubscribers(t *testing.T) {
	n := startNode(t, "n1", DefaultConfig())
	addr := startIngest(t, n)
	sub := dial(t, n.addr, "cam", nil)
	c, _, ok := sourceHello(t, addr, `{"room":"cam"}`+"\n")
	if ok != "OK 0" {
		t.Fatalf("handshake: %q", ok)
	}
	var want [][]byte
	for i := range 200 {
		p := bytes.Repeat([]byte{byte(i)}, 1+i*97)
		want = append(want, p)
		if err := writeFrame(c, p); err != nil {
			t.Fatal(err)
		}
	}
	wait.Eventually(t, 10*time.Second, "200 binary frames", func() bool { sub.mu.Lock(); defer sub.mu.Unlock(); return len(sub.bins) == 200 })
	for i, b := range sub.bins {
		seq, p, _ := protocol.ParseBinary(b)
		if seq != uint64(i+1) || !bytes.Equal(p, want[i]) {
			t.Fatalf("frame %d: seq %d, %d bytes, want %d", i, seq, len(p), len(want[i]))
		}
	}
}

func TestIngestBadInput(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IngestMaxFrame = 1024
	cfg.IngestHandshake = 200 * time.Millisecond
	cfg.IngestIdle = 300 * time.Millisecond
	n := startNode(t, "n1", cfg)
	addr := startIngest(t, n)
	for _, c := range []struct{ name, line, want string }{
		{"garbage", "garbage\n", "ERR bad_handshake "},
		{"unknown field", `{"room":"a","colour":"red"}` + "\n", "ERR bad_handshake "},
		{"bad room", `{"room":"a b"}` + "\n", "ERR bad_room "},
		{"overlong", strings.Repeat("x", 5000) + "\n", "ERR too_large "},
		{"never finishes", `{"room":`, "ERR bad_handshake "},
	} {
		if _, _, got := sourceHello(t, addr, c.line); !strings.HasPrefix(got, c.want) {
			t.Errorf("%s: %q, want %q...", c.name, got, c.want)
		}
	}
	for _, size := range []uint32{0, 1025} {
		c, br, ok := sourceHello(t, addr, `{"room":"a"}`+"\n")
		if !strings.HasPrefix(ok, "OK ") {
			t.Fatalf("handshake %q", ok)
		}
		var h [4]byte
		binary.BigEndian.PutUint32(h[:], size)
		c.Write(h[:])
		if got, _ := br.ReadString('\n'); !strings.HasPrefix(got, "ERR bad_frame ") {
			t.Errorf("frame length %d: %q", size, got)
		}
	}
	// A frame that stops short of its length (the source stalls mid-frame): ERR truncated once
	// the idle timeout passes, and the partial frame never enters the room.
	c, br, ok := sourceHello(t, addr, `{"room":"a"}`+"\n")
	if !strings.HasPrefix(ok, "OK ") {
		t.Fatalf("handshake %q", ok)
	}
	var h [4]byte
	binary.BigEndian.PutUint32(h[:], 100)
	c.Write(append(h[:], "only ten b"...))
	if got, _ := br.ReadString('\n'); !strings.HasPrefix(got, "ERR truncated ") {
		t.Errorf("truncated frame: %q", got)
	}
	if got := testutil.ToFloat64(n.metrics.ingestFrames); got != 0 {
		t.Fatalf("%v frames entered the room from bad sources", got)
	}
	// The node still serves everyone else.
	sub := dial(t, n.addr, "a", nil)
	c, _, _ = sourceHello(t, addr, `{"room":"a"}`+"\n")
	writeFrame(c, []byte("fine"))
	wait.Eventually(t, 5*time.Second, "a good frame after the bad ones", func() bool { sub.mu.Lock(); defer sub.mu.Unlock(); return len(sub.bins) == 1 })
}

func TestIngestNonOwnerAnswersMoved(t *testing.T) {
	a := startNode(t, "n1", DefaultConfig())
	b := startNode(t, "n2", DefaultConfig(), a.ring.GossipAddr())
	wait.Eventually(t, 5*time.Second, "two nodes", func() bool {
		return len(a.ring.Placement().Nodes()) == 2 && len(b.ring.Placement().Nodes()) == 2
	})
	addrA := startIngest(t, a)
	for i := range 20 {
		room := fmt.Sprint("r", i)
		o, _ := a.ring.Placement().Owner(room)
		if o.ID == "n1" {
			continue
		}
		_, _, got := sourceHello(t, addrA, fmt.Sprintf(`{"room":%q}`+"\n", room))
		if want := fmt.Sprintf("MOVED %s n2 0", o.TCP); got != want {
			t.Fatalf("%s on the non-owner: %q, want %q", room, got, want)
		}
		if a.HasRoom(room) {
			t.Fatal("non-owner created the room")
		}
		return
	}
	t.Fatal("no room owned by n2 among 20")
}

func TestPeerCallsNeedTheClusterSecret(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PeerKey = []byte("0123456789abcdef0123456789abcdef")
	cfg.PeerAcceptKeys = [][]byte{[]byte("the other secret during a rotation")}
	n := startNode(t, "n1", cfg)
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(handoff.Batch{From: "mallory", Ring: "x", Rooms: []room.State{{Room: "r", Epoch: "e", Seq: 1}}}); err != nil {
		t.Fatal(err)
	}
	body := buf.String()
	for _, sig := range []string{"", "123.deadbeef", peer.Sign([]byte("another secret"), peer.Claim{Method: "POST", Host: n.addr, URI: "/internal/v1/handoff", Time: time.Now(), Body: []byte(body)})} {
		req, _ := http.NewRequest("POST", "http://"+n.addr+"/internal/v1/handoff", strings.NewReader(body))
		if sig != "" {
			req.Header.Set(peer.SignatureHeader, sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("hand-off signed %q: %d, want 401", sig, resp.StatusCode)
		}
	}
	if n.HasRoom("r") {
		t.Fatal("a forged hand-off installed a room")
	}
	// Signed with the right key, it is heard (and fenced: this node owns every room).
	req, _ := http.NewRequest("POST", "http://"+n.addr+"/internal/v1/handoff", strings.NewReader(body))
	req.Header.Set(peer.SignatureHeader, peer.Sign(cfg.PeerKey, peer.Claim{Method: "POST", Host: n.addr, URI: "/internal/v1/handoff", Time: time.Now(), Body: []byte(body)}))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !n.HasRoom("r") {
		t.Fatalf("signed hand-off: %d, room installed %v", resp.StatusCode, n.HasRoom("r"))
	}
	// Signed with the key accepted during a rotation, it is heard too.
	buf.Reset()
	if err := gob.NewEncoder(&buf).Encode(handoff.Batch{From: "n0", Ring: "x", Rooms: []room.State{{Room: "r2", Epoch: "e", Seq: 1}}}); err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequest("POST", "http://"+n.addr+"/internal/v1/handoff", bytes.NewReader(buf.Bytes()))
	req.Header.Set(peer.SignatureHeader, peer.Sign(cfg.PeerAcceptKeys[0], peer.Claim{Method: "POST", Host: n.addr, URI: "/internal/v1/handoff", Time: time.Now(), Body: buf.Bytes()}))
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !n.HasRoom("r2") {
		t.Fatalf("hand-off signed with the accepted key: %d, room installed %v", resp.StatusCode, n.HasRoom("r2"))
	}
}

// A source faster than --ingest-rate is slowed down, not cut off: every frame arrives, no
// sooner than the rate allows, and the throttle metric counts the wait.
func TestIngestRateSlowsASourceWithoutCuttingIt(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IngestMaxFrame = 64 << 10
	cfg.IngestRate = 1 << 20 // burst: 128 KiB
	n := startNode(t, "n1", cfg)
	addr := startIngest(t, n)
	sub := dial(t, n.addr, "rated", nil)
	c, br, ok := sourceHello(t, addr, `{"room":"rated"}`+"\n")
	if ok != "OK 0" {
		t.Fatalf("handshake: %q", ok)
	}
	const frames = 32 // 2 MiB: at 1 MiB/s after a 128 KiB burst, at least 1.875 s
	start := time.Now()
	go func() {
		for range frames {
			if writeFrame(c, make([]byte, 64<<10)) != nil {
				return
			}
		}
	}()
	wait.Eventually(t, 20*time.Second, "every frame delivered", func() bool { sub.mu.Lock(); defer sub.mu.Unlock(); return len(sub.bins) == frames })
	if took := time.Since(start); took < 1800*time.Millisecond {
		t.Fatalf("2 MiB went through in %v; --ingest-rate 1 MiB/s allows no less than 1.875s", took)
	}
	// About 2 s of waiting; less when the machine is so busy that reading the frames itself
	// took part of the time the rate asks for (seen: 1.5 s on 2 busy cores).
	if w := testutil.ToFloat64(n.metrics.ingestThrottle); w < 1 {
		t.Fatalf("roost_ingest_throttled_seconds_total = %v, want about 2", w)
	}
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if line, err := br.ReadString('\n'); err == nil {
		t.Fatalf("the node told the throttled source %q", line)
	}
}

// A subscriber that stops reading is dropped with 4008; the source feeding the room is never
// cut off or held back for it, and the subscribers that read get everything.
func TestIngestSlowSubscriberIsDroppedNeverTheSource(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SendQueue = 128
	cfg.WriteTimeout = time.Second
	// A live feed has a pace; a subscriber that reads slower than the feed is dropped too, so
	// this one is paced (bursts of 64 frames) for a test reader under -race to keep up with it.
	cfg.IngestRate = 8 << 20
	n := startNode(t, "n1", cfg)
	addr := startIngest(t, n)
	fast := dial(t, n.addr, "feed", nil)
	dialNonReader(t, n.addr, "feed")
	c, br, ok := sourceHello(t, addr, `{"room":"feed"}`+"\n")
	if ok != "OK 0" {
		t.Fatalf("handshake: %q", ok)
	}
	const frames = 1000 // 16 MB: more than the slow one's socket buffers and queue hold
	go func() {
		for i := range frames {
			if writeFrame(c, bytes.Repeat([]byte{byte(i)}, 16<<10)) != nil {
				return
			}
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		fast.mu.Lock()
		got, ferr := len(fast.bins), fast.err
		fast.mu.Unlock()
		if got == frames {
			break
		}
		if time.Now().After(deadline) || ferr != nil {
			t.Fatalf("the subscriber that reads got %d of %d frames (%v); source frames in: %v; drops: %v", got, frames, ferr,
				testutil.ToFloat64(n.metrics.ingestFrames), testutil.ToFloat64(n.metrics.drops.WithLabelValues("slow_consumer")))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, b := range fast.bins {
		if seq, p, _ := protocol.ParseBinary(b); seq != uint64(i+1) || len(p) != 16<<10 || p[0] != byte(i) {
			t.Fatalf("frame %d: seq %d, %d bytes", i, seq, len(p))
		}
	}
	if got := testutil.ToFloat64(n.metrics.drops.WithLabelValues("slow_consumer")); got != 1 {
		t.Fatalf("slow_consumer drops = %v, want 1", got)
	}
	if got := testutil.ToFloat64(n.metrics.ingestFrames); got != frames {
		t.Fatalf("roost_ingest_frames_total = %v, want %d", got, frames)
	}
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if line, err := br.ReadString('\n'); err == nil {
		t.Fatalf("the node told the source %q", line)
	}
}
