package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/protocol"
)

// benchHandoff fills one node of two with rooms that each hold about 10 KB of history (ten 1 KiB
// messages) and a member, drains it (SIGTERM), and measures how long the drain took (the node's
// own "drained" line) and whether every room resumed on the other node exactly where it was:
// the same epoch, the same seq, no gap, no reset.
func benchHandoff(ctx context.Context, quick bool) ([]benchRow, error) {
	rooms := 10_000
	if quick {
		rooms = 200
	}
	flags := append(append([]string{}, roostServerFlags...), "--log-level", "info", "--drain-timeout", "60s")
	aFlags := flags
	profile := os.Getenv("ROOST_BENCH_PROFILE") // a file: the drained node's CPU profile of the drain (and file.receiver, the other's)
	if profile != "" {
		aFlags = append(slices.Clone(flags), "--pprof", "127.0.0.1:6061")
	}
	a, err := startRoost(ctx, "node", "ho-a", "", aFlags...)
	if err != nil {
		return nil, err
	}
	defer a.Stop(stopTimeout)
	bFlags := flags
	if profile != "" {
		bFlags = append(slices.Clone(flags), "--pprof", "127.0.0.1:6062")
	}
	b, err := startRoost(ctx, "node", "ho-b", a.Gossip, bFlags...)
	if err != nil {
		return nil, err
	}
	defer b.Stop(stopTimeout)
	if err := proc.WaitRing(ctx, []*proc.Proc{a, b}, 2, 30*time.Second); err != nil {
		return nil, err
	}
	names := ownedBy(a.ID, "handoff-", rooms, a.ID, b.ID)

	// Fill: a member per room publishes ten 1 KiB messages and stays.
	members, err := fillRooms(ctx, names, func(string) string { return "ws://" + a.HTTP })
	defer closeMembers(members)
	if err != nil {
		return nil, err
	}

	// Writers: more rooms of a, each with an SDK client publishing one message at a time
	// through the drain. A room's write pause is the longest wait between two of its acks.
	writers := newPauseWriters(ctx, ownedBy(a.ID, "handoff-w-", max(rooms/50, 20), a.ID, b.ID), a.URL(), b.URL())
	if err := writers.start(); err != nil {
		writers.stop()
		return nil, err
	}

	// Drain a; its members are told 4001 and resume on b.
	var profiled sync.WaitGroup
	if profile != "" {
		started, receiving := make(chan struct{}), make(chan struct{})
		profiled.Go(func() { cpuProfile(ctx, "http://127.0.0.1:6061", time.Second, profile, started) })
		profiled.Go(func() { cpuProfile(ctx, "http://127.0.0.1:6062", time.Second, profile+".receiver", receiving) })
		<-started
		<-receiving
	}
	t0 := time.Now()
	a.Signal(syscall.SIGTERM)
	select {
	case <-a.Exited():
	case <-time.After(90 * time.Second):
		writers.stop()
		return nil, fmt.Errorf("the drained node did not exit within 90s")
	}
	exited := time.Since(t0)
	profiled.Wait()
	time.Sleep(500 * time.Millisecond) // the last rooms' writers resume on b
	pauses, werr := writers.stop()
	if os.Getenv("ROOST_BENCH_LOGS") != "" {
		fmt.Fprintf(os.Stderr, "--- drained node's log:\n%s\n--- receiver's log:\n%s\n", a.Log(), b.Log())
	}
	if werr != nil {
		return nil, werr
	}
	took := exited
	if m := regexp.MustCompile(`msg=drained .*rooms=(\d+) took=(\S+)`).FindStringSubmatch(a.Log()); m != nil {
		if d, err := time.ParseDuration(m[2]); err == nil {
			took = d
		}
	}
	lost, resets := 0, 0
	for i, name := range names {
		m := members[i]
		ws, _, err := dialer(i).DialContext(ctx, fmt.Sprintf("ws://%s/v1/rooms/%s/ws?since=10&epoch=%s", b.HTTP, name, m.epoch), nil)
		if err != nil {
			lost++
			continue
		}
		var w protocol.Welcome
		err = ws.ReadJSON(&w)
		ws.Close()
		switch {
		case err != nil:
			lost++
		case w.Epoch != m.epoch:
			resets++
		case w.Seq != 10:
			lost++
		}
	}
	name := fmt.Sprintf("hand-off: drain of %d rooms × 10 KB", rooms)
	return []benchRow{
		{Workload: name, Metric: "s to move them all", Roost: took.Seconds(), Goal: "≤ 1 s, 0 lost", Met: took <= time.Second && lost == 0 && resets == 0,
			Detail: map[string]any{"lost": lost, "reset": resets, "process_exit_s": exited.Seconds()}},
		{Workload: name, Metric: fmt.Sprintf("p99 ms write pause (%d rooms)", len(pauses)), Roost: msAt(pauses, 0.99), Goal: "≤ 50 ms",
			Met: msAt(pauses, 0.99) <= 50, Detail: map[string]float64{"p50_ms": msAt(pauses, 0.5), "max_ms": msAt(pauses, 1)}},
	}, nil
}

// msAt is the q quantile of ds in milliseconds.
func msAt(ds []time.Duration, q float64) float64 {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return float64(ds[int(q*float64(len(ds)-1))]) / float64(time.Millisecond)
}

// pauseWriters publish to their rooms one message at a time, each with an SDK client that
// follows the room when it moves, and measure each room's longest wait between two acks.
type pauseWriters struct {
	ctx    context.Context
	cancel context.CancelFunc
	rooms  []string
	base   string
	alt    string
	wg     sync.WaitGroup
	mu     sync.Mutex
	pauses []time.Duration
	err    error
}

func newPauseWriters(ctx context.Context, rooms []string, base, alt string) *pauseWriters {
	ctx, cancel := context.WithCancel(ctx)
	return &pauseWriters{ctx: ctx, cancel: cancel, rooms: rooms, base: base, alt: alt}
}

func (w *pauseWriters) start() error {
	conns := make([]*client.Conn, len(w.rooms))
	for i, room := range w.rooms {
		c, err := client.Dial(w.ctx, w.base, room, &client.Options{Discard: true, Alternates: []string{w.alt},
			MaxReconnectDelay: 50 * time.Millisecond})
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return fmt.Errorf("writer for %s: %w", room, err)
		}
		conns[i] = c
	}
	for i, c := range conns {
		w.wg.Go(func() {
			defer c.Close()
			var longest time.Duration
			last := time.Now()
			for k := 0; w.ctx.Err() == nil; k++ {
				if _, err := c.PublishID(w.ctx, fmt.Sprint("w", k), k); err != nil {
					if w.ctx.Err() == nil {
						w.mu.Lock()
						w.err = fmt.Errorf("writer for %s: %w", w.rooms[i], err)
						w.mu.Unlock()
					}
					break
				}
				now := time.Now()
				longest = max(longest, now.Sub(last))
				last = now
				time.Sleep(5 * time.Millisecond)
			}
			w.mu.Lock()
			w.pauses = append(w.pauses, longest)
			w.mu.Unlock()
		})
	}
	return nil
}

// stop ends the writers and returns each room's longest pause.
func (w *pauseWriters) stop() ([]time.Duration, error) {
	w.cancel()
	w.wg.Wait()
	return w.pauses, w.err
}

// member is the connection that filled a room, and the room's epoch it was welcomed in.
type member struct {
	ws    *websocket.Conn
	epoch string
}

// fillRooms has a member per room (dialled at base(room), ws://host:port) publish ten 1 KiB
// messages, wait for their acks, and stay: each room then holds about 10 KB of history. The
// members it connected are returned even when it fails, for closeMembers.
func fillRooms(ctx context.Context, names []string, base func(room string) string) ([]member, error) {
	members := make([]member, len(names))
	blob, _ := json.Marshal(strings.Repeat("x", 1000))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, 32)
	for i, name := range names {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			fail := func(err error) {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("room %s: %w", name, err)
				}
				mu.Unlock()
			}
			ws, resp, err := dialer(i).DialContext(ctx, base(name)+"/v1/rooms/"+name+"/ws", nil)
			if err != nil {
				fail(fmt.Errorf("%w%s", err, answer(resp)))
				return
			}
			members[i].ws = ws
			var w protocol.Welcome
			if err := ws.ReadJSON(&w); err != nil {
				fail(err)
				return
			}
			for k := range 10 {
				if err := ws.WriteJSON(protocol.Publish{Type: protocol.TypePublish, ID: fmt.Sprint(k), Data: blob}); err != nil {
					fail(err)
					return
				}
			}
			for acks := 0; acks < 10; {
				var f protocol.Incoming
				if err := ws.ReadJSON(&f); err != nil {
					fail(err)
					return
				}
				if f.Type == protocol.TypeAck {
					acks++
				}
			}
			members[i].epoch = w.Epoch
		})
	}
	wg.Wait()
	return members, first
}

// closeMembers closes what fillRooms connected.
func closeMembers(members []member) {
	for _, m := range members {
		if m.ws != nil {
			m.ws.Close()
		}
	}
}

// cpuProfile saves the CPU profile of the server whose --pprof listener is at base, over d, to
// file; started is closed once the request is on its way.
func cpuProfile(ctx context.Context, base string, d time.Duration, file string, started chan<- struct{}) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, int(d.Seconds())), nil)
	if err != nil {
		close(started)
		return
	}
	go func() { time.Sleep(100 * time.Millisecond); close(started) }()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(os.Stderr, "profile: %v\n", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(file, b, 0o644)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "profile: %v\n", err)
	}
}
