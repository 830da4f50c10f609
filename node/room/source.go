package room

import (
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Source is one TCP stream source of a room, as the room sees it: something to stop with a
// farewell when the room closes. Its reader (the node's) reads frames and publishes each.
type Source struct {
	conn net.Conn

	mu      sync.Mutex
	bye     *Farewell     // set when the room closes
	stopped chan struct{} // closed with bye set
}

// NewSource wraps a source's connection.
func NewSource(c net.Conn) *Source { return &Source{conn: c, stopped: make(chan struct{})} }

// Stop ends the source from outside: its reader wakes, sends the farewell's line and closes.
func (s *Source) Stop(f Farewell) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bye == nil {
		s.bye = &f
		close(s.stopped)
	}
	_ = s.conn.SetReadDeadline(time.Now())
}

// Extend sets the next read deadline unless the source was stopped.
func (s *Source) Extend(d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bye != nil {
		return false
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(d))
	return true
}

// Throttle waits until limit lets size more bytes in, and reports false if the source was
// stopped meanwhile. The wait is the backpressure: the node does not read the source meanwhile.
func (s *Source) Throttle(limit *rate.Limiter, size int, waited prometheus.Counter) bool {
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

// Farewell is how the room parted with the source, once it closed; nil until then.
func (s *Source) Farewell() *Farewell {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bye
}
