package room

import (
	"context"
	"encoding/binary"
	"encoding/json"

	"github.com/roost-dev/roost/protocol"
)

// The server API (HTTP, for application backends): a publish that holds no connection and
// returns once its message is committed, as a WebSocket publish is acked; and reads of a room's
// history and presence.

// PublishCommitted sequences one message from client (the token's sub, or "") and returns once it
// is committed — delivered to the room and, with a replicator, held by its replicas — with its
// seq and the room's epoch. data is the message's JSON value, or with binary set the payload of a
// binary message. A repeated id the room remembers returns its original seq, once that is
// committed, and delivers nothing. It fails with ErrClosed when the room closes first (it moved:
// the caller asks again, with the same id, wherever it is now), ErrOverloaded when the memory
// budget refuses the message, or ctx's error.
func (r *Room) PublishCommitted(ctx context.Context, client, id string, data []byte, binary bool) (uint64, string, error) {
	encode := func(seq uint64) []byte {
		b := make([]byte, 0, 64+len(data)+len(client)+len(id))
		return protocol.AppendMessage(b, seq, client, id, data)
	}
	if binary {
		frame := make([]byte, 8+len(data))
		copy(frame[8:], data)
		encode = func(seq uint64) []byte {
			putSeq(frame, seq)
			return frame
		}
	}
	seq, err := r.sequence(ctx, nil, client, id, encode, binary, "")
	if err != nil {
		return 0, "", err
	}
	return r.awaitCommitted(ctx, seq)
}

func putSeq(frame []byte, seq uint64) { binary.BigEndian.PutUint64(frame, seq) }

// awaitCommitted waits until seq is committed in the room.
func (r *Room) awaitCommitted(ctx context.Context, seq uint64) (uint64, string, error) {
	for {
		r.mu.Lock()
		if r.committed >= seq {
			epoch := r.epoch
			r.mu.Unlock()
			return seq, epoch, nil
		}
		if r.state == closed {
			r.mu.Unlock()
			return 0, "", ErrClosed
		}
		if r.commits == nil {
			r.commits = make(chan struct{})
		}
		wait := r.commits
		r.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return 0, "", ctx.Err()
		}
	}
}

// committedMore wakes the waiters of awaitCommitted: the committed seq grew, or the room closed.
// r.mu is held.
func (r *Room) committedMore() {
	if r.commits != nil {
		close(r.commits)
		r.commits = nil
	}
}

// Page is a stretch of a room's committed history, as GET /v1/rooms/{room}/messages answers it.
type Page struct {
	Room     string            `json:"room"`
	Epoch    string            `json:"epoch"`
	Seq      uint64            `json:"seq"` // the room's latest committed seq
	Messages []json.RawMessage `json:"messages"`
	Gap      *PageGap          `json:"gap,omitempty"`
	Reset    bool              `json:"reset,omitempty"`
}

// PageGap is a Page's gap: messages from..to are no longer retained.
type PageGap struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// apiBinary is a binary message in a Page.
type apiBinary struct {
	Seq    uint64 `json:"seq"`
	Binary []byte `json:"binary"` // base64 in JSON
}

// History reads up to limit committed messages after res (as a WebSocket resume would replay
// them, with its gap or reset), oldest first.
func (r *Room) History(res Resume, limit int) Page {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := Page{Room: r.name, Epoch: r.epoch, Seq: r.committed, Messages: []json.RawMessage{}}
	since := res.Since
	if res.HasSince || res.Epoch != "" {
		if (res.Epoch != "" && res.Epoch != r.epoch) || since > r.committed {
			p.Reset, since = true, 0
		}
		if first := r.hist.first(); since < r.committed && (first == 0 || since+1 < first) {
			to := r.committed
			if first != 0 {
				to = first - 1
			}
			p.Gap = &PageGap{From: since + 1, To: to}
		}
	}
	for _, e := range r.hist.between(since, r.committed) {
		if len(p.Messages) == limit {
			break
		}
		if e.binary {
			b, _ := json.Marshal(apiBinary{Seq: e.seq, Binary: e.frame[8:]})
			p.Messages = append(p.Messages, b)
			continue
		}
		p.Messages = append(p.Messages, json.RawMessage(e.frame))
	}
	return p
}

// Members is the room's presence: its member count, and up to max of its client ids, sorted.
func (r *Room) Members(max int) (int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.members), sorted(r.members, max)
}
