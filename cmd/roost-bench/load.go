package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

// The load generator of roost bench: plain gorilla connections, decoding only what it counts
// (a message's seq, and its send time in the latency phase), spread over loopback source
// addresses 127.0.0.2, 127.0.0.3, … so no one address runs out of ephemeral ports.

// sourceAddrs is how many loopback source addresses clients are spread over.
const sourceAddrs = 16

func dialer(i int) *websocket.Dialer {
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%sourceAddrs))}
	return &websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 4096, WriteBufferSize: 1024,
		NetDialContext: (&net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}).DialContext}
}

// subscriber counts what one connection receives and checks it: every seq once, in order.
type subscriber struct {
	ws        *websocket.Conn
	last      atomic.Uint64 // highest seq received
	received  atomic.Int64
	dup       atomic.Int64
	reordered atomic.Int64
	lat       []time.Duration // sampled send-to-receive times in the latency phase; reader only
	sampling  *atomic.Bool
	done      chan struct{}
}

// seqOf reads the seq of a message frame (roost and the baseline encode it the same way, first).
func seqOf(b []byte) (uint64, bool) {
	const key = `{"type":"message","seq":`
	if !bytes.HasPrefix(b, []byte(key)) {
		return 0, false
	}
	b = b[len(key):]
	i := bytes.IndexByte(b, ',')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[:i]), 10, 64)
	return n, err == nil
}

// sentAt reads the send time the publisher put in the data, {"t":unixnano}.
func sentAt(b []byte) (time.Time, bool) {
	i := bytes.LastIndex(b, []byte(`"t":`))
	if i < 0 {
		return time.Time{}, false
	}
	j := bytes.IndexByte(b[i:], '}')
	if j < 0 {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(string(b[i+4:i+j]), 10, 64)
	return time.Unix(0, n), err == nil
}

func (s *subscriber) read() {
	defer close(s.done)
	for {
		_, b, err := s.ws.ReadMessage()
		if err != nil {
			return
		}
		seq, ok := seqOf(b)
		if !ok {
			continue // welcome, presence
		}
		last := s.last.Load()
		switch {
		case seq == last:
			s.dup.Add(1)
			continue
		case seq < last:
			s.reordered.Add(1)
			continue
		}
		s.last.Store(seq)
		s.received.Add(1)
		if s.sampling.Load() && seq%4 == 0 && len(s.lat) < 1<<14 {
			if t, ok := sentAt(b); ok {
				s.lat = append(s.lat, time.Since(t))
			}
		}
	}
}

// publisher sends into one room, keeping at most window messages that some subscriber of the
// room has not received yet: the rate it reaches is what the whole path delivers. While sampling
// is set it notes when it sent every fourth publish, and its reader how long its ack took.
type publisher struct {
	ws        *websocket.Conn
	subs      []*subscriber
	window    uint64
	sent      uint64
	readerEnd chan struct{}
	sampling  *atomic.Bool

	mu     sync.Mutex
	sentAt map[uint64]time.Time // id → send time, for the sampled publishes not yet acked
	ackLat []time.Duration
}

// read drains what the room sends the publisher (acks and its own messages), decoding only the
// acks of sampled publishes.
func (p *publisher) read() {
	defer close(p.readerEnd)
	const key = `{"type":"ack","id":"`
	for {
		_, b, err := p.ws.ReadMessage()
		if err != nil {
			return
		}
		if !p.sampling.Load() || !bytes.HasPrefix(b, []byte(key)) {
			continue
		}
		b = b[len(key):]
		i := bytes.IndexByte(b, '"')
		if i < 0 {
			continue
		}
		id, err := strconv.ParseUint(string(b[:i]), 10, 64)
		if err != nil {
			continue
		}
		now := time.Now()
		p.mu.Lock()
		if t, ok := p.sentAt[id]; ok {
			delete(p.sentAt, id)
			p.ackLat = append(p.ackLat, now.Sub(t))
		}
		p.mu.Unlock()
	}
}

// inFlight bounds the deliveries in flight across a workload (each room's window is its share):
// enough to keep the server busy, little enough that queues stay short, so the latency phase
// measures the path and not a backlog.
const inFlight = 1 << 16

func (p *publisher) slowest() uint64 {
	low := uint64(1<<63 - 1)
	for _, s := range p.subs {
		low = min(low, s.last.Load())
	}
	return low
}

// run publishes until ctx ends, as fast as the window allows, or paced by lim.
func (p *publisher) run(ctx context.Context, lim *rate.Limiter) error {
	var buf []byte
	low := p.slowest()
	for ctx.Err() == nil {
		if lim != nil {
			if err := lim.Wait(ctx); err != nil {
				return nil
			}
		}
		for p.sent-low >= p.window {
			if ctx.Err() != nil {
				return nil
			}
			if low = p.slowest(); p.sent-low >= p.window {
				time.Sleep(50 * time.Microsecond)
			}
		}
		p.sent++
		if p.sent%4 == 0 && p.sampling != nil && p.sampling.Load() {
			p.mu.Lock()
			if p.sentAt == nil {
				p.sentAt = map[uint64]time.Time{}
			}
			if len(p.sentAt) < 1<<14 {
				p.sentAt[p.sent] = time.Now()
			}
			p.mu.Unlock()
		}
		buf = append(buf[:0], `{"type":"publish","id":"`...)
		buf = strconv.AppendUint(buf, p.sent, 10)
		buf = append(buf, `","data":{"t":`...)
		buf = strconv.AppendInt(buf, time.Now().UnixNano(), 10)
		buf = append(buf, "}}"...)
		if err := p.ws.WriteMessage(websocket.TextMessage, buf); err != nil {
			return err
		}
	}
	return nil
}

// fanoutResult is one server's figures for one fan-out workload.
type fanoutResult struct {
	Server        string  `json:"server"`
	Deliveries    int64   `json:"deliveries"`
	PerSecond     float64 `json:"deliveries_per_s"`
	CPUPerDeliver float64 `json:"server_cpu_us_per_delivery"`
	P50, P99      float64 `json:"-"`
	P50ms         float64 `json:"p50_ms"`
	P99ms         float64 `json:"p99_ms"`
	AckP50ms      float64 `json:"ack_p50_ms"`
	AckP99ms      float64 `json:"ack_p99_ms"`
	Lost          int64   `json:"lost"`
	Duplicated    int64   `json:"duplicated"`
	Reordered     int64   `json:"reordered"`
}

// fanoutRig is a fan-out load: rooms×subs subscribers and a publisher per room, connected.
type fanoutRig struct {
	pubs     []*publisher
	all      []*subscriber
	sampling *atomic.Bool // subscribers record latencies while set
}

// dialFanout connects rooms×subs subscribers and a publisher per room to base (ws://host:port).
func dialFanout(ctx context.Context, base string, rooms, subs int) (*fanoutRig, error) {
	return dialFanoutRooms(ctx, base, benchRooms(rooms), subs)
}

// benchRooms names n rooms bench-0, bench-1, ….
func benchRooms(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%d", i)
	}
	return names
}

// dialFanoutRooms connects subs subscribers and a publisher to each of the rooms named, at base.
func dialFanoutRooms(ctx context.Context, base string, names []string, subs int) (*fanoutRig, error) {
	rooms := len(names)
	rig := &fanoutRig{pubs: make([]*publisher, rooms), sampling: &atomic.Bool{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var dialErr error
	sem := make(chan struct{}, 64)
	for r := range rooms {
		room := names[r]
		for i := range subs {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				ws, resp, err := dialer(r*subs+i).DialContext(ctx, base+"/v1/rooms/"+room+"/ws", nil)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					dialErr = fmt.Errorf("subscriber of %s: %w%s", room, err, answer(resp))
					return
				}
				s := &subscriber{ws: ws, sampling: rig.sampling, done: make(chan struct{})}
				go s.read()
				rig.all = append(rig.all, s)
				if rig.pubs[r] == nil {
					rig.pubs[r] = &publisher{window: uint64(min(max(inFlight/(rooms*subs), 2), 256))}
				}
				rig.pubs[r].subs = append(rig.pubs[r].subs, s)
			})
		}
	}
	wg.Wait()
	if dialErr != nil {
		rig.close()
		return nil, dialErr
	}
	for r, p := range rig.pubs {
		ws, _, err := dialer(r).DialContext(ctx, base+"/v1/rooms/"+names[r]+"/ws", nil)
		if err != nil {
			rig.close()
			return nil, fmt.Errorf("publisher: %w", err)
		}
		p.ws, p.readerEnd, p.sampling = ws, make(chan struct{}), rig.sampling
		go p.read()
	}
	time.Sleep(200 * time.Millisecond) // welcomes in
	return rig, nil
}

// close disconnects everyone and waits for the readers.
func (rig *fanoutRig) close() {
	for _, s := range rig.all {
		s.ws.Close()
		<-s.done
	}
	rig.all = nil
	for _, p := range rig.pubs {
		if p != nil && p.ws != nil {
			p.ws.Close()
			<-p.readerEnd
		}
	}
	rig.pubs = nil
}

// received is the deliveries so far, over all subscribers.
func (rig *fanoutRig) received() (n int64) {
	for _, s := range rig.all {
		n += s.received.Load()
	}
	return n
}

// publish runs every publisher for d: as fast as the windows allow, or paced by lim.
func (rig *fanoutRig) publish(ctx context.Context, d time.Duration, lim func() *rate.Limiter) error {
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	errs := make(chan error, len(rig.pubs))
	for _, p := range rig.pubs {
		go func() { errs <- p.run(pctx, lim()) }()
	}
	var first error
	for range rig.pubs {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// catchUp waits, up to d, for every subscriber to have what its publisher sent.
func (rig *fanoutRig) catchUp(d time.Duration) {
	deadline := time.Now().Add(d)
	for _, p := range rig.pubs {
		for p.slowest() < p.sent && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// runFanout connects rooms×subs subscribers and a publisher per room to base (ws://host:port),
// measures deliveries per second at saturation and the server's CPU time (pid) meanwhile, then
// latency at half that rate, then checks every subscriber got every message once, in order.
func runFanout(ctx context.Context, server, base string, pid, rooms, subs int, d time.Duration) (fanoutResult, error) {
	return runFanoutOn(ctx, server, base, []int{pid}, benchRooms(rooms), subs, d, 0)
}

// runFanoutOn is runFanout for the rooms named, with the CPU time of every server process in
// pids counted (an owner and its replicas, say), and the publishers' ack latency measured too:
// at half the saturated rate, or, when light is set, at light messages per second in all.
func runFanoutOn(ctx context.Context, server, base string, pids []int, names []string, subs int, d time.Duration, light float64) (fanoutResult, error) {
	res := fanoutResult{Server: server}
	rooms := len(names)
	rig, err := dialFanoutRooms(ctx, base, names, subs)
	if err != nil {
		return res, err
	}
	defer rig.close()
	cpuTime := func() (time.Duration, error) {
		var sum time.Duration
		for _, pid := range pids {
			t, err := cpuTime(pid)
			if err != nil {
				return 0, err
			}
			sum += t
		}
		return sum, nil
	}

	// Saturation.
	cpu0, err := cpuTime()
	if err != nil {
		return res, err
	}
	n0, t0 := rig.received(), time.Now()
	if err := rig.publish(ctx, d, func() *rate.Limiter { return nil }); err != nil {
		return res, err
	}
	n1, t1 := rig.received(), time.Now()
	cpu1, _ := cpuTime()
	res.Deliveries = n1 - n0
	res.PerSecond = float64(res.Deliveries) / t1.Sub(t0).Seconds()
	if res.Deliveries > 0 {
		res.CPUPerDeliver = float64((cpu1 - cpu0).Microseconds()) / float64(res.Deliveries)
	}

	// Latency at half the saturated rate, per room, once the saturation's backlog has drained.
	rig.catchUp(30 * time.Second)
	perRoom := res.PerSecond / float64(rooms*subs) / 2
	if light > 0 {
		perRoom = light / float64(rooms)
	}
	rig.sampling.Store(true)
	if err := rig.publish(ctx, d, func() *rate.Limiter { return paced(max(perRoom, 1)) }); err != nil {
		return res, err
	}
	rig.sampling.Store(false)

	rig.catchUp(30 * time.Second)
	rig.tally(&res)
	return res, nil
}

// tally checks that every subscriber got every message once, in order (counting what was lost,
// doubled or reordered into res), closes the subscribers, and puts the sampled delivery and ack
// latencies in res.
func (rig *fanoutRig) tally(res *fanoutResult) {
	for _, p := range rig.pubs {
		for _, s := range p.subs {
			res.Lost += int64(p.sent) - s.received.Load()
			res.Duplicated += s.dup.Load()
			res.Reordered += s.reordered.Load()
		}
	}
	for _, s := range rig.all {
		s.ws.Close()
	}
	var lat []time.Duration
	for _, s := range rig.all {
		<-s.done
		lat = append(lat, s.lat...)
	}
	rig.all = nil
	res.P50ms, res.P99ms = latencyMs(lat)
	var acks []time.Duration
	for _, p := range rig.pubs {
		p.mu.Lock()
		acks = append(acks, p.ackLat...)
		p.mu.Unlock()
	}
	res.AckP50ms, res.AckP99ms = latencyMs(acks)
}

// latencyMs is the median and 99th percentile of lat, in milliseconds (0 for none).
func latencyMs(lat []time.Duration) (p50, p99 float64) {
	if len(lat) == 0 {
		return 0, 0
	}
	slices.Sort(lat)
	return float64(lat[len(lat)/2].Microseconds()) / 1000, float64(lat[len(lat)*99/100].Microseconds()) / 1000
}

// answer describes a refused handshake's response, if there was one.
func answer(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	b := make([]byte, 300)
	n, _ := io.ReadFull(resp.Body, b)
	return fmt.Sprintf(" (%s: %s)", resp.Status, strings.TrimSpace(string(b[:n])))
}

// cpuTime is the user+system CPU time process pid has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100), nil // USER_HZ is 100 on Linux
}

// jsonLine encodes v on one line.
func jsonLine(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
