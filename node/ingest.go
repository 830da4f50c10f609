package node

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
	"golang.org/x/time/rate"
)

// maxHandshake is the longest handshake line a source may send.
const maxHandshake = 4096

// handshake is the first line a stream source sends.
type handshake struct {
	Room  string `json:"room"`
	Token string `json:"token,omitempty"`
}

// source is one TCP stream source of a room. Its goroutine reads frames and publishes each as a
// binary message; accepted counts the frames that entered the room.
type source struct {
	conn     net.Conn
	accepted uint64 // reader goroutine only

	mu      sync.Mutex
	bye     func(accepted uint64) string // set when the room closes: the last line to send
	stopped chan struct{}                // closed with bye set
}

// stop ends the source from outside: its reader wakes, sends bye's line and closes.
func (s *source) stop(bye func(accepted uint64) string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bye == nil {
		s.bye = bye
		close(s.stopped)
	}
	_ = s.conn.SetReadDeadline(time.Now())
}

// extend sets the next read deadline unless the source was stopped.
func (s *source) extend(d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bye != nil {
		return false
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(d))
	return true
}

// throttle waits until limit lets size more bytes in, and reports false if the source was
// stopped meanwhile. The wait is the backpressure: the node does not read the source meanwhile.
func (s *source) throttle(limit *rate.Limiter, size int, waited prometheus.Counter) bool {
	r := limit.ReserveN(time.Now(), size)
	d := r.Delay()
	if d == 0 {
		return true
	}
	waited.Add(d.Seconds())
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stopped:
		return false
	}
}

func (s *source) farewell() func(uint64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bye
}

// ServeTCP accepts stream sources on ln until the node is closed.
func (n *Node) ServeTCP(ln net.Listener) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	n.listeners = append(n.listeners, ln)
	n.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			if n.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		if !n.track() {
			c.Close()
			return nil
		}
		go func() {
			defer n.handlers.Done()
			n.serveSource(c)
		}()
	}
}

func (n *Node) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}

// serveSource runs one stream source: handshake, then frames until it ends or the room moves.
func (n *Node) serveSource(c net.Conn) {
	defer protocol.CloseGently(c, lingerTimeout)
	reply := func(line string) {
		_ = c.SetWriteDeadline(time.Now().Add(n.cfg.WriteTimeout))
		_, _ = io.WriteString(c, line+"\n")
	}
	refuse := func(code, msg string) {
		n.metrics.refused.WithLabelValues("ingest_" + code).Inc()
		reply("ERR " + code + " " + msg)
	}
	addr, _ := limit.HostAddr(c.RemoteAddr().String())
	if !n.perAddr.Acquire(addr) {
		refuse(protocol.CodeLimit, "too many connections from your address (--max-addr-conns)")
		return
	}
	defer n.perAddr.Release(addr)
	_ = c.SetReadDeadline(time.Now().Add(n.cfg.IngestHandshake))
	br := bufio.NewReaderSize(c, maxHandshake)
	line, err := br.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		refuse(protocol.CodeTooLarge, fmt.Sprintf("the handshake line is longer than %d bytes", maxHandshake))
		return
	case err != nil:
		refuse("bad_handshake", `send one line {"room":"ROOM"} and a newline first`)
		return
	}
	h, code, msg := parseHandshake(line)
	if code != "" {
		refuse(code, msg)
		return
	}
	if _, err := n.cfg.Auth.Check(h.Token, h.Room, true); err != nil {
		_, _, code := auth.Refusal(err)
		refuse(code, oneLine(err.Error()))
		return
	}
	if err := n.awaitFresh(n.ctx); err != nil {
		refuse(protocol.CodeNotReady, "this node is catching up with the cluster after a pause; resolve the room again shortly")
		return
	}
	o, _, ok := n.owner(h.Room)
	if !ok {
		refuse(protocol.CodeNoNodes, "no node owns rooms yet; try again shortly")
		return
	}
	if o.ID != n.id {
		n.metrics.redirects.Inc()
		reply(movedLine(o, 0))
		return
	}
	room, err := n.acquire(n.ctx, h.Room)
	var held *redirectError
	if errors.As(err, &held) {
		reply(movedLine(held.to, 0))
		return
	}
	if err != nil {
		if errors.Is(err, ErrTooManyRooms) {
			refuse(protocol.CodeLimit, "this node holds its maximum number of rooms (--max-rooms)")
		} else if errors.Is(err, ErrMemory) {
			refuse(protocol.CodeLimit, "this node is near its memory limit (--max-memory) and opens no new room")
		} else if o, _, ok := n.owner(h.Room); ok {
			reply(movedLine(o, 0))
		}
		return
	}
	// A fixed receive buffer (autotuning would take up to tcp_rmem's max, 32 MiB on some
	// kernels) bounds what a source has in flight when its room moves, and so what it must keep
	// to resend: the Go client keeps 32 MiB.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(2 * n.cfg.IngestMaxFrame)
	}
	s := &source{conn: c, stopped: make(chan struct{})}
	seq, err := room.addSource(s)
	if errors.Is(err, ErrStale) {
		refuse(protocol.CodeNotReady, "this node is catching up with the cluster after a pause; resolve the room again shortly")
		return
	}
	if errors.Is(err, ErrRoomFull) {
		refuse(protocol.CodeLimit, fmt.Sprintf("the room has its maximum of %d sources (--max-room-sources)", n.cfg.MaxRoomSources))
		return
	}
	if err != nil { // closed between lookup and join: it moved or was reclaimed
		if o, _, ok := n.owner(h.Room); ok {
			reply(movedLine(o, 0))
		}
		return
	}
	defer room.removeSource(s)
	reply("OK " + strconv.FormatUint(seq, 10))
	n.log.Debug("stream source connected", "room", h.Room, "peer", c.RemoteAddr().String())
	n.metrics.ingestSources.Inc()
	defer n.metrics.ingestSources.Dec()
	limit := rate.NewLimiter(rate.Limit(n.cfg.IngestRate), max(n.cfg.IngestRate/8, n.cfg.IngestMaxFrame))

	var hdr [4]byte
	for {
		if !s.extend(n.cfg.IngestIdle) {
			break
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			break
		}
		size, err := frameLength(hdr, n.cfg.IngestMaxFrame)
		if err != nil {
			refuse("bad_frame", err.Error())
			return
		}
		if !s.throttle(limit, int(size), n.metrics.ingestThrottle) {
			break
		}
		frame := make([]byte, 8+size)
		if _, err := io.ReadFull(br, frame[8:]); err != nil {
			if s.farewell() == nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				refuse("truncated", "the frame ended early")
			}
			break
		}
		if _, err := room.publishBinary(nil, frame); err != nil {
			if s.farewell() == nil {
				// The room stopped taking frames without closing (a hand-off held it too long):
				// send the source to the owner by this node's ring, with its exact count, so it
				// resends the rest rather than taking this for a crash.
				o, _, _ := n.owner(h.Room)
				reply(movedLine(o, s.accepted))
				return
			}
			break // the room closed: the farewell says where to go
		}
		s.accepted++
		n.metrics.ingestFrames.Inc()
		n.metrics.ingestBytes.Add(float64(size))
	}
	if bye := s.farewell(); bye != nil {
		reply(bye(s.accepted))
	}
}

// lingerTimeout bounds how long a connection is kept open after the node's last words (a MOVED
// or ERR line, a 1009 close): a reset could otherwise destroy them before the peer reads them, and
// a MOVED lost that way would make a source take a move for a crash.
const lingerTimeout = time.Second

// parseHandshake reads a source's handshake line. On a bad line it returns the ERR code and
// sentence to answer with.
func parseHandshake(line []byte) (h handshake, code, msg string) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return h, "bad_handshake", `the handshake must be one JSON object {"room":"ROOM"} on one line: ` + oneLine(err.Error())
	}
	if dec.More() {
		return h, "bad_handshake", `the handshake must be one JSON object {"room":"ROOM"} on one line`
	}
	if err := protocol.ValidRoom(h.Room); err != nil {
		return h, protocol.CodeBadRoom, oneLine(err.Error())
	}
	return h, "", ""
}

// frameLength reads a frame's 4-byte big-endian length and checks it is within 1..max.
func frameLength(hdr [4]byte, max int) (uint32, error) {
	size := binary.BigEndian.Uint32(hdr[:])
	if size == 0 || uint64(size) > uint64(max) {
		return 0, fmt.Errorf("frame length %d is outside 1..%d (--ingest-max-frame)", size, max)
	}
	return size, nil
}

// oneLine keeps an answer on one line whatever an error quotes back.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}

// movedLine is the MOVED answer naming the room's owner.
func movedLine(o ring.Member, accepted uint64) string {
	if o.ID == "" {
		return "ERR no_nodes no node owns this room right now; resolve it again shortly"
	}
	return fmt.Sprintf("MOVED %s %s %d", o.TCP, o.ID, accepted)
}
