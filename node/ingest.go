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
	"time"
	"unicode"

	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/node/handoff"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/protocol"
	"golang.org/x/time/rate"
)

// maxHandshake is the longest handshake line a source may send.
const maxHandshake = 4096

// handshake is the first line a stream source sends.
type handshake struct {
	Room  string `json:"room"`
	Token string `json:"token,omitempty"`
	// Source names the source, so that after its room's owner crashes it can ask the new
	// owner how many of its frames the room holds and resend exactly the rest.
	Source string `json:"source,omitempty"`
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
	claims, err := n.cfg.Auth.Check(h.Token, h.Room, true)
	if err != nil {
		_, _, code := auth.Refusal(err)
		refuse(code, oneLine(err.Error()))
		return
	}
	if err := n.watchdog.AwaitFresh(n.ctx); err != nil {
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
		reply(room.MovedLine(o, 0))
		return
	}
	// A room this source would create counts against its address's rate, as a WebSocket's does.
	if n.rooms.Get(h.Room) == nil && !n.door.Limits.Rooms.Allow(addr) {
		refuse(protocol.CodeRateLimited, "your address is creating rooms faster than this node allows (--room-create-rate); try again shortly")
		return
	}
	rm, err := n.mover.Acquire(n.ctx, h.Room)
	var held *handoff.HeldError
	if errors.As(err, &held) {
		reply(room.MovedLine(held.To, 0))
		return
	}
	if err != nil {
		if errors.Is(err, ErrTooManyRooms) {
			refuse(protocol.CodeLimit, "this node holds its maximum number of rooms (--max-rooms)")
		} else if errors.Is(err, ErrMemory) {
			refuse(protocol.CodeLimit, "this node is near its memory limit (--max-memory) and opens no new room")
		} else if o, _, ok := n.owner(h.Room); ok {
			reply(room.MovedLine(o, 0))
		}
		return
	}
	// A fixed receive buffer (autotuning would take up to tcp_rmem's max, 32 MiB on some
	// kernels) bounds what a source has in flight when its room moves, and so what it must keep
	// to resend: the Go client keeps 32 MiB.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(2 * n.cfg.IngestMaxFrame)
	}
	s := room.NewSource(c)
	seq, err := rm.AddSource(s)
	if errors.Is(err, room.ErrStale) {
		refuse(protocol.CodeNotReady, "this node is catching up with the cluster after a pause; resolve the room again shortly")
		return
	}
	if errors.Is(err, room.ErrFull) {
		refuse(protocol.CodeLimit, fmt.Sprintf("the room has its maximum of %d sources (--max-room-sources)", n.cfg.MaxRoomSources))
		return
	}
	if err != nil { // closed between lookup and join: it moved or was reclaimed
		if o, _, ok := n.owner(h.Room); ok {
			reply(room.MovedLine(o, 0))
		}
		return
	}
	defer rm.RemoveSource(s)
	if n.cfg.Auth != nil && claims.ExpiresAt != nil {
		// Its token is checked again when it expires, as a reconnect would check it.
		expiry := time.AfterFunc(time.Until(claims.ExpiresAt.Add(auth.Leeway)), func() {
			n.metrics.drops.WithLabelValues("token_expired").Inc()
			s.Stop(room.Farewell{Line: "ERR " + protocol.CodeUnauthorized + " the token has expired; connect again with a fresh one"})
		})
		defer expiry.Stop()
	}
	if h.Source != "" && n.replicas != nil {
		// A named source learns how many of its frames the room holds; without replication a
		// crash loses them anyway, and the answer is the plain one.
		reply("OK " + strconv.FormatUint(seq, 10) + " " + strconv.FormatUint(rm.Fed(h.Source), 10))
	} else {
		reply("OK " + strconv.FormatUint(seq, 10))
	}
	n.log.Debug("stream source connected", "room", h.Room, "peer", c.RemoteAddr().String())
	n.metrics.ingestSources.Inc()
	defer n.metrics.ingestSources.Dec()
	pace := rate.NewLimiter(rate.Limit(n.cfg.IngestRate), max(n.cfg.IngestRate/8, n.cfg.IngestMaxFrame))

	var hdr [4]byte
	var accepted uint64 // frames that entered the room
	for {
		if !s.Extend(n.cfg.IngestIdle) {
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
		if !s.Throttle(pace, int(size), n.metrics.ingestThrottle) {
			break
		}
		frame, err := readFrame(br, int(size))
		if err != nil {
			if s.Farewell() == nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				refuse("truncated", "the frame ended early")
			}
			break
		}
		if err := n.publishFrame(rm, s, h.Source, frame); err != nil {
			if errors.Is(err, room.ErrOverloaded) {
				refuse(limit.CodeOverloaded, fmt.Sprintf("this node is near its memory limit (--memory-budget-mib, --max-memory-mib) and took %d frames of this connection; the next one was not; send it and the rest again later", accepted))
				return
			}
			if s.Farewell() == nil {
				// The room stopped taking frames without closing (a hand-off held it too long):
				// send the source to the owner by this node's ring, with its exact count, so it
				// resends the rest rather than taking this for a crash.
				o, _, _ := n.owner(h.Room)
				reply(room.MovedLine(o, accepted))
				return
			}
			break // the room closed: the farewell says where to go
		}
		accepted++
		n.metrics.ingestFrames.Inc()
		n.metrics.ingestBytes.Add(float64(size))
	}
	if bye := s.Farewell(); bye != nil {
		reply(bye.SourceLine(accepted))
	}
}

// overloadHold is how long a frame the memory budget refuses is held and offered again (the source
// is not read meanwhile: TCP backpressure) before the source is refused with ERR overloaded.
const overloadHold = time.Second

// publishFrame puts a source's frame into its room, holding it a moment while the memory budget
// refuses it: a burst that fills the budget often finds room again as queues drain.
func (n *Node) publishFrame(rm *room.Room, s *room.Source, source string, frame []byte) error {
	deadline := time.Now().Add(overloadHold)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		var err error
		if source != "" {
			_, err = rm.PublishSourced(n.ctx, source, frame)
		} else {
			_, err = rm.PublishBinary(n.ctx, nil, frame)
		}
		if !errors.Is(err, room.ErrOverloaded) || time.Now().Add(wait).After(deadline) || s.Farewell() != nil {
			return err
		}
		select {
		case <-time.After(wait):
		case <-n.ctx.Done():
			return err
		}
	}
}

// firstChunk is what a frame's buffer starts at: it grows as the frame's bytes arrive, so a
// length announced is not memory reserved (a source announcing 1 MiB and sending nothing costs
// nothing but its connection).
const firstChunk = 16 << 10

// readFrame reads a frame of size payload bytes from br into a buffer with 8 bytes free in front
// for the seq. The buffer is allocated only once the frame's first byte is there and grows (at
// most doubling) as the rest arrives, so what a source makes the node hold is within a factor
// of two of what it has sent.
func readFrame(br *bufio.Reader, size int) ([]byte, error) {
	if _, err := br.Peek(1); err != nil {
		return nil, err
	}
	frame := make([]byte, 8, 8+min(size, max(firstChunk, br.Buffered())))
	for len(frame) < 8+size {
		if len(frame) == cap(frame) {
			grown := make([]byte, len(frame), min(2*cap(frame), 8+size))
			copy(grown, frame)
			frame = grown
		}
		n, err := br.Read(frame[len(frame):cap(frame)])
		frame = frame[:len(frame)+n]
		if err != nil {
			if err == io.EOF && len(frame) > 8 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return frame, nil
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
	if len(h.Source) > protocol.MaxIDLen || strings.ContainsFunc(h.Source, unicode.IsControl) {
		return h, "bad_handshake", fmt.Sprintf(`"source" must be at most %d bytes, with no control characters`, protocol.MaxIDLen)
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
