package test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
)

// The history checker: the clients of a fault test log, for each ack and each delivery, when it
// happened, at which node, in which epoch, with which seq and publish id; check then asserts over
// the logs what a room promises, whatever failed meanwhile.

// record is one thing a client was told.
type record struct {
	at    time.Time
	kind  string // "ack", "message", "reset", "gap", "welcome"
	who   string // the client that was told
	room  string
	node  string // the node that served the client, when known
	epoch string
	seq   uint64
	id    string
	from  uint64 // gap: the first seq that will never arrive
}

// history collects records from any number of goroutines.
type history struct {
	mu      sync.Mutex
	records []record
}

func (h *history) add(r record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
}

// subscribe reads c's events until ctx ends, logging them as who's.
func (h *history) subscribe(ctx context.Context, who, room string, c *client.Conn) {
	w := c.Welcome()
	epoch, node, last := w.Epoch, w.Node, w.Seq
	h.add(record{at: time.Now(), kind: "welcome", who: who, room: room, node: node, epoch: epoch, seq: w.Seq})
	for {
		ev, err := c.Next(ctx)
		if err != nil {
			return
		}
		r := record{at: time.Now(), who: who, room: room, node: node, epoch: epoch}
		switch ev.Type {
		case client.EventMessage:
			r.kind, r.seq, r.id = "message", ev.Seq, ev.ID
			last = ev.Seq
		case client.EventReset:
			epoch = ev.Epoch
			r.kind, r.epoch, r.seq = "reset", ev.Epoch, ev.Seq
			last = 0
		case client.EventGap:
			r.kind, r.from, r.seq = "gap", ev.From, ev.To
			last = ev.To
		case client.EventReconnected:
			node = ev.Welcome.Node
			if ev.Welcome.Epoch != epoch { // a reset event follows and says so
				continue
			}
			// The client resumed after the last seq it had: the replay from there follows,
			// however far the room (the welcome's seq) has gone meanwhile.
			r.kind, r.node, r.seq = "welcome", node, last
		default:
			continue
		}
		h.add(r)
	}
}

// publish publishes under id and logs the ack, if one comes within timeout.
func (h *history) publish(ctx context.Context, who, room string, c *client.Conn, id string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	seq, err := c.PublishID(ctx, id, id)
	if err != nil {
		return err
	}
	h.add(record{at: time.Now(), kind: "ack", who: who, room: room, node: c.Welcome().Node, seq: seq, id: id})
	return nil
}

// verdict is what check found: counts of what was checked and of each violation.
type verdict struct {
	acks, deliveries, resets, gaps int
	// forks: one (room, epoch, seq) delivered with two ids.
	forks int
	// jumps: a subscriber's seq jumped within an epoch with no gap to say so.
	jumps int
	// twice: an id delivered twice to one subscriber between resets, or acked with two seqs.
	twice int
	// lost: an acked id a subscriber connected throughout never got, no reset or gap covering it.
	lost int
	// overlap: how long two epochs of one room both acked writes, at most, beyond the allowance.
	overlap time.Duration
	details []string
}

func (v verdict) String() string {
	return fmt.Sprintf("%d acks, %d deliveries, %d resets, %d gaps: %d forks, %d jumps, %d doubled, %d lost, epochs overlapping %s",
		v.acks, v.deliveries, v.resets, v.gaps, v.forks, v.jumps, v.twice, v.lost, v.overlap)
}

func (v *verdict) flag(format string, args ...any) {
	if len(v.details) < 20 {
		v.details = append(v.details, fmt.Sprintf(format, args...))
	}
}

// check asserts over the logs. allowance is how long two epochs of one room may both ack writes
// while the cluster converges; margin is how long around an ack a subscriber must have been
// connected, with nothing reset, for the ack to count as owed to it.
func (h *history) check(allowance, margin time.Duration) verdict {
	h.mu.Lock()
	recs := append([]record(nil), h.records...)
	h.mu.Unlock()
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].at.Before(recs[j].at) })
	var v verdict
	type key struct {
		room, epoch string
		seq         uint64
	}
	ids := map[key]string{}
	ackSeq := map[string]uint64{} // room/id → seq
	type span struct{ first, last time.Time }
	epochAcks := map[string]map[string]*span{} // room → epoch → when it acked
	idEpoch := map[string]string{}             // room/id → the epoch it was delivered in
	type sub struct {
		room                string
		first, last, closed time.Time // first and last event; when its numbering last broke
		epoch               string
		seq                 uint64
		got                 map[string]bool
	}
	subs := map[string]*sub{}
	for _, r := range recs {
		switch r.kind {
		case "message":
			v.deliveries++
			k := key{r.room, r.epoch, r.seq}
			if id, ok := ids[k]; ok && id != r.id {
				v.forks++
				v.flag("%s epoch %s seq %d is %q to one client and %q to %s", r.room, r.epoch, r.seq, id, r.id, r.who)
			}
			ids[k] = r.id
			idEpoch[r.room+"/"+r.id] = r.epoch
		case "ack":
			v.acks++
			if s, ok := ackSeq[r.room+"/"+r.id]; ok && s != r.seq {
				v.twice++
				v.flag("%s id %s acked as seq %d and as %d", r.room, r.id, s, r.seq)
			}
			ackSeq[r.room+"/"+r.id] = r.seq
		case "reset":
			v.resets++
		case "gap":
			v.gaps++
		}
		if r.kind == "ack" {
			continue
		}
		s := subs[r.who]
		if s == nil {
			s = &sub{room: r.room, first: r.at, closed: r.at, got: map[string]bool{}}
			subs[r.who] = s
		}
		s.last = r.at
		switch r.kind {
		case "welcome":
			if r.epoch != s.epoch && s.epoch != "" {
				s.closed = r.at
			}
			s.epoch, s.seq = r.epoch, r.seq
		case "reset":
			// The numbering starts over: what follows is the room from the start of what it
			// retains of the new epoch, which may repeat what the client had.
			s.epoch, s.seq, s.closed, s.got = r.epoch, 0, r.at, map[string]bool{}
		case "gap":
			s.seq, s.closed = r.seq, r.at
		case "message":
			if r.epoch == s.epoch && s.seq != 0 && r.seq != s.seq+1 {
				v.jumps++
				v.flag("%s: %s went from seq %d to %d in epoch %s with no gap", r.room, r.who, s.seq, r.seq, r.epoch)
			}
			if s.got[r.id] {
				v.twice++
				v.flag("%s: %s got %s twice", r.room, r.who, r.id)
			}
			s.got[r.id], s.seq = true, r.seq
		}
	}
	// When each epoch of each room acked writes: the epoch an id was delivered in.
	for _, r := range recs {
		if r.kind != "ack" {
			continue
		}
		e, ok := idEpoch[r.room+"/"+r.id]
		if !ok {
			continue
		}
		if epochAcks[r.room] == nil {
			epochAcks[r.room] = map[string]*span{}
		}
		sp := epochAcks[r.room][e]
		if sp == nil {
			sp = &span{first: r.at, last: r.at}
			epochAcks[r.room][e] = sp
		}
		sp.last = r.at
	}
	for room, eps := range epochAcks {
		var spans []*span
		for _, sp := range eps {
			spans = append(spans, sp)
		}
		for i := range spans {
			for j := i + 1; j < len(spans); j++ {
				lo, hi := later(spans[i].first, spans[j].first), earlier(spans[i].last, spans[j].last)
				if d := hi.Sub(lo) - allowance; d > v.overlap {
					v.overlap = d
					v.flag("%s: two epochs acked writes side by side for %s", room, hi.Sub(lo))
				}
			}
		}
	}
	// Acks owed to subscribers connected throughout, their numbering unbroken since before.
	for _, r := range recs {
		if r.kind != "ack" {
			continue
		}
		for who, s := range subs {
			if s.room != r.room || s.got[r.id] {
				continue
			}
			if s.closed.Before(r.at.Add(-margin)) && s.last.After(r.at.Add(margin)) {
				v.lost++
				v.flag("%s: %s never got %s, acked at %s", r.room, who, r.id, r.at.Format("15:04:05.000"))
			}
		}
	}
	return v
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// TestHistoryCheckerFindsWhatItMust feeds the checker logs with one violation of each kind, and a
// clean one, so it cannot pass a history it should not.
func TestHistoryCheckerFindsWhatItMust(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	clean := []record{
		{at: at(0), kind: "welcome", who: "s", room: "r", epoch: "e1"},
		{at: at(10), kind: "ack", who: "p", room: "r", seq: 1, id: "a"},
		{at: at(11), kind: "message", who: "s", room: "r", epoch: "e1", seq: 1, id: "a"},
		{at: at(20), kind: "ack", who: "p", room: "r", seq: 2, id: "b"},
		{at: at(21), kind: "message", who: "s", room: "r", epoch: "e1", seq: 2, id: "b"},
		{at: at(900), kind: "message", who: "s", room: "r", epoch: "e1", seq: 3, id: "c"},
	}
	run := func(recs []record) verdict {
		h := &history{records: recs}
		return h.check(50*time.Millisecond, 100*time.Millisecond)
	}
	if v := run(clean); v.forks+v.jumps+v.twice+v.lost != 0 || v.overlap != 0 {
		t.Fatalf("a clean history: %s %v", v, v.details)
	}
	with := func(extra ...record) []record { return append(append([]record(nil), clean...), extra...) }
	for name, c := range map[string]struct {
		recs []record
		bad  func(verdict) bool
	}{
		"fork": {with(record{at: at(30), kind: "welcome", who: "s2", room: "r", epoch: "e1"},
			record{at: at(31), kind: "message", who: "s2", room: "r", epoch: "e1", seq: 2, id: "x"}), func(v verdict) bool { return v.forks > 0 }},
		"jump":  {with(record{at: at(950), kind: "message", who: "s", room: "r", epoch: "e1", seq: 9, id: "d"}), func(v verdict) bool { return v.jumps > 0 }},
		"twice": {with(record{at: at(950), kind: "message", who: "s", room: "r", epoch: "e1", seq: 4, id: "a"}), func(v verdict) bool { return v.twice > 0 }},
		"lost":  {with(record{at: at(300), kind: "ack", who: "p", room: "r", seq: 7, id: "z"}), func(v verdict) bool { return v.lost > 0 }},
		"overlap": {with(
			record{at: at(30), kind: "ack", who: "q", room: "r", seq: 1, id: "o1"}, record{at: at(31), kind: "message", who: "s3", room: "r", epoch: "e2", seq: 1, id: "o1"},
			record{at: at(800), kind: "ack", who: "q", room: "r", seq: 2, id: "o2"}, record{at: at(801), kind: "message", who: "s3", room: "r", epoch: "e2", seq: 2, id: "o2"},
			record{at: at(790), kind: "ack", who: "p", room: "r", seq: 3, id: "c"}), func(v verdict) bool { return v.overlap > 0 }},
	} {
		if v := run(c.recs); !c.bad(v) {
			t.Errorf("%s: not found in %s", name, v)
		}
	}

}
