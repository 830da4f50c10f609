package client

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// StreamOptions configures OpenStream. The zero value is ready to use.
type StreamOptions struct {
	// Token authenticates the source, when the cluster has auth on.
	Token string
	// MaxFrame is the largest frame Send takes, in bytes; keep it at the node's
	// --ingest-max-frame. Default 1 MiB.
	MaxFrame int
	// Window is how many bytes of recently sent frames are kept to resend after a MOVED. Frames
	// a node has not taken in yet sit in socket buffers: the node's receive buffer (4 × its
	// --ingest-max-frame as the kernel counts it) and this side's send buffer (1 MiB asked).
	// Default the larger of 32 MiB and 8 × MaxFrame.
	Window int
	// DialTimeout bounds resolving, connecting and the handshake. Default 10s.
	DialTimeout time.Duration
	// MaxReconnectWait bounds how long Send keeps trying to reach the room's new owner. Default 1m.
	MaxReconnectWait time.Duration
	// HTTPClient makes the resolve requests (TLS settings for https:// members). Nil:
	// http.DefaultClient.
	HTTPClient *http.Client
	// Source names this source in the room (unique among the room's sources, stable across
	// restarts of the process that feeds it). Named, the source learns at every connect how many
	// of its frames the room holds ("OK <seq> <held>") and resends exactly those past it: after
	// a crash of the room's owner as after a move, nothing the room acknowledged is lost and
	// nothing is doubled (with the cluster's --room-replicas on).
	Source string
}

// Stream is a TCP stream source for one room: every frame Send gives becomes one binary room
// message. When the room moves, the node answers MOVED with the count of this connection's
// frames it took in; the Stream connects to the new owner and resends the rest, so nothing is
// lost or doubled. If the owner crashes instead, an unnamed Stream carries on at the new owner
// and the frames in flight are lost; a named one (StreamOptions.Source) hears from the new owner
// how many of its frames the room holds and resends the rest.
type Stream struct {
	base, room string
	opts       StreamOptions

	conn   net.Conn
	ends   chan streamEnd // how the node ended the connection, from the reader goroutine
	reader sync.WaitGroup

	window      [][]byte // frames sent on this connection, oldest first
	windowBytes int
	dropped     uint64 // frames of this connection no longer in window

	frames, bytes uint64
	moves         int

	// Named sources number their frames: next is the number the next frame kept gets (the
	// room held next-1 frames of this source when the stream opened, plus those sent since),
	// held what the room said it holds at the last connect.
	next, held uint64
}

// streamEnd is how a connection ended: the node's last line (MOVED or ERR), or none.
type streamEnd struct {
	line string
	eof  bool // the node closed its side cleanly
}

// OpenStream resolves room through base (any node or router) and connects to its owner's
// stream ingest.
func OpenStream(ctx context.Context, base, room string, opts *StreamOptions) (*Stream, error) {
	s := &Stream{base: base, room: room}
	if opts != nil {
		s.opts = *opts
	}
	setDefault(&s.opts.MaxFrame, 1<<20)
	setDefault(&s.opts.Window, max(32<<20, 8*s.opts.MaxFrame))
	setDefault(&s.opts.DialTimeout, 10*time.Second)
	setDefault(&s.opts.MaxReconnectWait, time.Minute)
	if err := s.connect(ctx, ""); err != nil {
		return nil, err
	}
	return s, nil
}

// Frames and Bytes count what Send has handed over since OpenStream.
func (s *Stream) Frames() uint64 { return s.frames }
func (s *Stream) Bytes() uint64  { return s.bytes }

// Moves counts the times the stream followed its room to a new owner.
func (s *Stream) Moves() int { return s.moves }

// connect dials addr (or the owner's tcp_addr from resolving, when addr is empty) and shakes
// hands, following MOVED answers.
func (s *Stream) connect(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
	defer cancel()
	for hops := 0; hops < 5; hops++ {
		if addr == "" {
			o, err := Resolve(ctx, s.base, s.room, &ResolveOptions{Token: s.opts.Token, HTTPClient: s.opts.HTTPClient})
			if err != nil {
				return err
			}
			addr = o.TCPAddr
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("roost: stream to %s: %w", addr, err)
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetWriteBuffer(1 << 20) // bounds what is in flight, with the node's buffer
		}
		h := map[string]string{"room": s.room}
		if s.opts.Token != "" {
			h["token"] = s.opts.Token
		}
		if s.opts.Source != "" {
			h["source"] = s.opts.Source
		}
		hello, _ := json.Marshal(h)
		deadline, _ := ctx.Deadline()
		_ = conn.SetDeadline(deadline)
		br := bufio.NewReader(conn)
		line := ""
		if _, err = conn.Write(append(hello, '\n')); err == nil {
			line, err = br.ReadString('\n')
		}
		if err != nil {
			conn.Close()
			return fmt.Errorf("roost: stream handshake with %s: %w", addr, err)
		}
		f := strings.Fields(line)
		switch {
		case len(f) >= 1 && f[0] == "OK":
			_ = conn.SetDeadline(time.Time{})
			if s.opts.Source != "" && len(f) == 2 {
				s.opts.Source = "" // the cluster does not replicate: named sources are not counted
			}
			if s.opts.Source != "" {
				held, err := strconv.ParseUint(f[len(f)-1], 10, 64)
				if len(f) != 3 || err != nil {
					conn.Close()
					return fmt.Errorf("roost: stream %s: bad handshake answer %q", addr, strings.TrimSpace(line))
				}
				s.held = held
				if s.next == 0 {
					s.next = held + 1
				}
				s.conn = conn
			} else {
				s.conn, s.window, s.windowBytes, s.dropped = conn, nil, 0, 0
			}
			s.ends = make(chan streamEnd, 1)
			s.reader.Add(1)
			go s.readEnd(br, s.ends)
			return nil
		case len(f) == 4 && f[0] == "MOVED":
			conn.Close()
			addr = f[1]
		default:
			conn.Close()
			return fmt.Errorf("roost: stream refused by %s: %s", addr, strings.TrimSpace(line))
		}
	}
	return errors.New("roost: stream: too many MOVED answers; the cluster may still be converging")
}

// readEnd passes on how the node ends the connection: the line it sends before it closes
// (MOVED or ERR), or a close without one.
func (s *Stream) readEnd(br *bufio.Reader, out chan<- streamEnd) {
	defer s.reader.Done()
	line, err := br.ReadString('\n')
	if err != nil {
		out <- streamEnd{eof: errors.Is(err, io.EOF) && line == ""}
		return
	}
	out <- streamEnd{line: strings.TrimSpace(line)}
}

// Send sends one frame (1..MaxFrame bytes). It returns once the frame is written to the owner;
// a move in between is handled inside Send.
func (s *Stream) Send(ctx context.Context, frame []byte) error {
	if len(frame) == 0 || len(frame) > s.opts.MaxFrame {
		return fmt.Errorf("roost: stream frame of %d bytes: frames are 1 to %d bytes", len(frame), s.opts.MaxFrame)
	}
	kept := append([]byte(nil), frame...)
	deadline := time.Now().Add(s.opts.MaxReconnectWait)
	for {
		if err := s.write(kept); err == nil {
			s.keep(kept)
			s.frames++
			s.bytes += uint64(len(frame))
			return nil
		}
		if err := s.recover(ctx); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errors.New("roost: stream: gave up reaching the room's owner")
		}
	}
}

func (s *Stream) write(frame []byte) error {
	select {
	case end := <-s.ends: // the node said something: the connection is ending
		s.ends <- end
		return errors.New("connection ending")
	default:
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(frame)))
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.opts.DialTimeout))
	bufs := net.Buffers{hdr[:], frame}
	_, err := bufs.WriteTo(s.conn)
	return err
}

func (s *Stream) keep(frame []byte) {
	s.next++
	s.window = append(s.window, frame)
	s.windowBytes += len(frame)
	for s.windowBytes > s.opts.Window && len(s.window) > 1 {
		s.windowBytes -= len(s.window[0])
		s.window[0] = nil
		s.window = s.window[1:]
		s.dropped++
	}
}

// recover handles the end of a connection: on MOVED it connects to the new owner and resends
// the frames the old one did not take in; on a plain drop it reconnects through the base
// address; on ERR it gives up.
func (s *Stream) recover(ctx context.Context) error {
	var end streamEnd
	select {
	case end = <-s.ends:
	case <-time.After(2 * time.Second):
	}
	return s.follow(ctx, end)
}

// follow acts on how the connection ended (see recover).
func (s *Stream) follow(ctx context.Context, end streamEnd) error {
	line := end.line
	s.conn.Close()
	s.reader.Wait()
	f := strings.Fields(line)
	if len(f) > 0 && f[0] == "ERR" {
		return fmt.Errorf("roost: stream refused: %s", line)
	}
	s.moves++
	unsent := s.window
	addr := ""
	if len(f) == 4 && f[0] == "MOVED" && s.opts.Source != "" {
		addr = f[1] // what to resend, the new owner says (held)
	} else if len(f) == 4 && f[0] == "MOVED" {
		accepted, err := strconv.ParseUint(f[3], 10, 64)
		if err != nil {
			return fmt.Errorf("roost: stream: bad MOVED answer %q", line)
		}
		if accepted < s.dropped {
			return fmt.Errorf("roost: stream: the node took in only %d frames but %d left the resend window; raise StreamOptions.Window", accepted, s.dropped)
		}
		unsent = s.window[min(accepted-s.dropped, uint64(len(s.window))):]
		addr = f[1]
	} else {
		unsent = nil // the owner crashed: what it had not sequenced is lost with its room state
	}
	for {
		if err := s.connect(ctx, addr); err == nil {
			break
		} else if ctx.Err() != nil {
			return err
		}
		addr = ""
		time.Sleep(100 * time.Millisecond)
	}
	if s.opts.Source != "" {
		// The room says how many of this source's frames it holds, moved or crashed alike.
		first := s.next - uint64(len(s.window))
		if s.held+1 < first {
			return fmt.Errorf("roost: stream: the room holds %d frames of source %q but frames from %d on are no longer kept to resend; raise StreamOptions.Window", s.held, s.opts.Source, s.held+1)
		}
		for _, fr := range s.window[min(s.held+1-first, uint64(len(s.window))):] {
			if err := s.write(fr); err != nil {
				return nil // the new connection ended too: Send goes round again
			}
		}
		return nil
	}
	// All of them count as this connection's frames before any is written, so if it ends too,
	// its MOVED count says again exactly which to resend.
	for _, fr := range unsent {
		s.keep(fr)
	}
	for _, fr := range unsent {
		if err := s.write(fr); err != nil {
			return nil // the new connection ended too: Send goes round again
		}
	}
	return nil
}

// Finish ends the stream cleanly: it tells the owner no more frames come and waits until the
// owner has taken in every frame sent, following the room to a new owner (and resending there)
// if it moves meanwhile; then it closes. Without Finish, frames still in socket buffers when
// the room moves are not resent, as no later Send hears the MOVED.
func (s *Stream) Finish(ctx context.Context) error {
	defer s.Close()
	deadline := time.Now().Add(s.opts.MaxReconnectWait)
	for {
		var end streamEnd
		if hc, ok := s.conn.(interface{ CloseWrite() error }); ok && hc.CloseWrite() == nil {
			select {
			case end = <-s.ends:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		f := strings.Fields(end.line)
		switch {
		case end.eof:
			return nil // the owner read to the end and took in every frame before closing
		case len(f) > 0 && f[0] == "ERR":
			return fmt.Errorf("roost: stream refused: %s", end.line)
		case len(f) == 0 || f[0] != "MOVED":
			return errors.New("roost: stream: the connection broke while finishing; frames in flight may be lost")
		}
		if err := s.follow(ctx, end); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errors.New("roost: stream: gave up reaching the room's owner")
		}
	}
}

// Close ends the stream at once; see Finish.
func (s *Stream) Close() error {
	err := s.conn.Close()
	s.reader.Wait()
	return err
}
