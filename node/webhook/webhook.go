// Package webhook delivers rooms' webhook events (API.md, "Webhooks") to the URL an operator
// gives: batches of a room's events in its order, signed with HMAC-SHA256, retried with
// exponential backoff and jitter until the receiver answers 2xx. The events themselves live in
// each room's outbox (package room), which moves and replicates with the room; the dispatcher
// only reads and trims them, so delivery is at least once, across moves and crashes.
//
//	d := webhook.New(webhook.Config{URL: u, Secret: s, Room: outboxOf, ...})
//	go d.Run(ctx)   // until ctx ends; Run waits for the batches in flight
//	d.Notify(room)  // the room's outbox has events (rooms call it through room.Webhook.Notify)
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/roost-dev/roost/node/room"
)

// SignatureHeader carries the hex HMAC-SHA256 of the raw body, as "sha256=<hex>".
const SignatureHeader = "X-Roost-Signature"

// Outbox is what the dispatcher needs of a room.
type Outbox interface {
	Outbox(max, maxBytes int) ([]room.OutboxEntry, uint64)
	AckOutbox(n uint64) bool
}

// Config configures a Dispatcher.
type Config struct {
	URL    string
	Secret []byte // signs every body; empty: the header signs with an empty key
	// Room finds the outbox of a room this node holds; nil when it holds none (it moved: its
	// new owner delivers its events).
	Room        func(name string) Outbox
	BatchEvents int           // events per POST, at most
	BatchBytes  int           // and about this many bytes (a first event always goes)
	Timeout     time.Duration // one POST, answer included
	BackoffMin  time.Duration // the first retry's delay; doubled on every failure, jittered
	BackoffMax  time.Duration // the longest delay
	Concurrency int           // rooms posted at once
	Client      *http.Client  // nil: one of its own
	Log         *slog.Logger
	Metrics     Metrics
}

// Metrics are the dispatcher's.
type Metrics struct {
	Events  *prometheus.CounterVec // by result: delivered, failed (attempts), dropped (over the bound)
	Latency prometheus.Histogram   // seconds from an event to its delivery
	Batches *prometheus.CounterVec // by result: ok, failed
}

// Dispatcher posts rooms' events.
type Dispatcher struct {
	cfg    Config
	client *http.Client

	mu    sync.Mutex
	rooms map[string]*due
	wake  chan struct{}
}

// due is a room with events to post.
type due struct {
	at       time.Time // not before
	attempt  int       // failures in a row
	inFlight bool
	again    bool // notified while in flight
}

// New makes a dispatcher; Run it.
func New(cfg Config) *Dispatcher {
	c := cfg.Client
	if c == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = max(cfg.Concurrency, 2)
		c = &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return &Dispatcher{cfg: cfg, client: c, rooms: map[string]*due{}, wake: make(chan struct{}, 1)}
}

// Notify says room's outbox has events. It never blocks.
func (d *Dispatcher) Notify(name string) {
	d.mu.Lock()
	r := d.rooms[name]
	switch {
	case r == nil:
		d.rooms[name] = &due{at: time.Now()}
	case r.inFlight:
		r.again = true
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run posts until ctx ends, then waits for the posts in flight (cut short by ctx).
func (d *Dispatcher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, max(d.cfg.Concurrency, 1))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		next := now.Add(time.Hour)
		var start []string
		free := cap(sem) - len(sem)
		d.mu.Lock()
		for name, r := range d.rooms {
			switch {
			case r.inFlight:
			case !r.at.After(now):
				// Due: started now if a slot is free, else once one frees (its post ends with a
				// wake), so no timer spins meanwhile.
				if len(start) < free {
					r.inFlight = true
					start = append(start, name)
				}
			case r.at.Before(next):
				next = r.at
			}
		}
		d.mu.Unlock()
		for _, name := range start {
			sem <- struct{}{}
			wg.Go(func() {
				d.deliver(ctx, name)
				<-sem // before the wake, so the loop sees the slot free
				select {
				case d.wake <- struct{}{}:
				default:
				}
			})
		}
		timer.Reset(max(time.Until(next), time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-timer.C:
		}
	}
}

// deliver posts one batch of room's events and schedules what follows.
func (d *Dispatcher) deliver(ctx context.Context, name string) {
	box := d.cfg.Room(name)
	var batch []room.OutboxEntry
	var dropped uint64
	if box != nil {
		batch, dropped = box.Outbox(d.cfg.BatchEvents, d.cfg.BatchBytes)
	}
	if dropped > 0 {
		d.cfg.Metrics.Events.WithLabelValues("dropped").Add(float64(dropped))
		d.cfg.Log.Warn("webhook outbox over its bound (--webhook-max-bytes): the oldest events were dropped undelivered",
			"room", name, "dropped", dropped)
	}
	if len(batch) == 0 {
		d.finish(name, true, false)
		return
	}
	status, err := d.post(ctx, batch)
	if err == nil {
		now := time.Now()
		for _, e := range batch {
			d.cfg.Metrics.Latency.Observe(now.Sub(e.Event.Time).Seconds())
		}
		d.cfg.Metrics.Events.WithLabelValues("delivered").Add(float64(len(batch)))
		d.cfg.Metrics.Batches.WithLabelValues("ok").Inc()
		more := box.AckOutbox(batch[len(batch)-1].N)
		d.finish(name, !more, false)
		return
	}
	if ctx.Err() != nil {
		return // shutting down: the events stay in the outbox
	}
	d.cfg.Metrics.Events.WithLabelValues("failed").Add(float64(len(batch)))
	d.cfg.Metrics.Batches.WithLabelValues("failed").Inc()
	wait := d.finish(name, false, true)
	d.cfg.Log.Warn("webhook batch not delivered; retrying", "room", name, "events", len(batch),
		"first_seq", batch[0].Event.Seq, "status", status, "err", err, "retry_in", wait.Round(time.Millisecond))
}

// finish schedules room after an attempt: forgotten when its outbox is empty (unless notified
// meanwhile), at once after a success, after a backoff after a failure (returned).
func (d *Dispatcher) finish(name string, empty, failed bool) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.rooms[name]
	if r == nil {
		return 0
	}
	r.inFlight = false
	switch {
	case failed:
		r.attempt++
		wait := d.backoff(r.attempt)
		r.at, r.again = time.Now().Add(wait), false
		return wait
	case empty && !r.again:
		delete(d.rooms, name)
	default:
		r.attempt, r.at, r.again = 0, time.Now(), false
	}
	return 0
}

// backoff is the delay before the attempt-th retry: BackoffMin doubled per failure up to
// BackoffMax, with full jitter over its upper half (so rooms that failed together spread out).
func (d *Dispatcher) backoff(attempt int) time.Duration {
	b := d.cfg.BackoffMin
	for i := 1; i < attempt && b < d.cfg.BackoffMax; i++ {
		b *= 2
	}
	b = min(b, d.cfg.BackoffMax)
	return b/2 + rand.N(b/2+1)
}

// body is a POST's JSON.
type body struct {
	Events []room.Event `json:"events"`
}

// Sign is the X-Roost-Signature of body with secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// post sends one batch; a non-2xx answer or a timeout is an error.
func (d *Dispatcher) post(ctx context.Context, batch []room.OutboxEntry) (int, error) {
	b := body{Events: make([]room.Event, len(batch))}
	for i, e := range batch {
		b.Events[i] = e.Event
	}
	raw, err := json.Marshal(b)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.cfg.URL, bytes.NewReader(raw))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "roost-webhook/1")
	req.Header.Set(SignatureHeader, Sign(d.cfg.Secret, raw))
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection is kept
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("the receiver answered %s", resp.Status)
	}
	return resp.StatusCode, nil
}

// ParseTypes reads --webhook-events: a comma-separated list of event types.
func ParseTypes(s string) (map[string]bool, error) {
	known := []string{room.EventOccupied, room.EventVacated, room.EventJoin, room.EventLeave, room.EventMessage}
	out := map[string]bool{}
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		ok := false
		for _, k := range known {
			ok = ok || t == k
		}
		if !ok {
			return nil, fmt.Errorf("unknown webhook event type %q: use %s", t, strings.Join(known, ", "))
		}
		out[t] = true
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no webhook event type given: use some of %s", strings.Join(known, ", "))
	}
	return out, nil
}
