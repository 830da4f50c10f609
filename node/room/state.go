package room

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"unicode/utf8"

	"github.com/roost-dev/roost/protocol"
)

// State is everything about a room a client can observe, as it travels to a new owner.
type State struct {
	Room    string    `json:"room"`
	Epoch   string    `json:"epoch"`
	Term    uint64    `json:"term"` // the sender's term; the receiver installs the next (see ownership.go)
	Seq     uint64    `json:"seq"`
	History []Message `json:"history,omitempty"`
	IDs     []ID      `json:"ids,omitempty"` // oldest first
	// Sources counts the frames the room holds of each named stream source.
	Sources map[string]uint64 `json:"sources,omitempty"`
	// Base, when set, is a seq up to which the receiver holds the history already, in its
	// replica copy: History holds only what follows (see Tail).
	Base uint64 `json:"base,omitempty"`
	// Outbox is the room's webhook outbox (see outbox.go), when it keeps one.
	Outbox *Outbox `json:"outbox,omitempty"`
}

// Tail is st with its history cut to the messages after seq base, for a receiver whose replica
// copy holds the rest (a hand-off to a replica is a promotion: no state to send but the tail).
func (st State) Tail(base uint64) State {
	base = min(base, st.Seq)
	i := 0
	for i < len(st.History) && st.History[i].Seq <= base {
		i++
	}
	if base == 0 || i < len(st.History) && st.History[i].Seq != base+1 {
		return st // what follows base is no longer all here: the whole state goes
	}
	st.History, st.Base = st.History[i:], base
	return st
}

// Complete fills in a tail (see Tail) from held, the receiver's own copy of the room: it must be
// of the same epoch and term, and hold the history up to the tail's base. It reports false when
// held cannot: the sender sends the whole state.
func (st State) Complete(held State) (State, bool) {
	if st.Base == 0 {
		return st, true
	}
	if held.Room != st.Room || held.Epoch != st.Epoch || held.Term != st.Term || held.Seq < st.Base {
		return st, false
	}
	var hist []Message
	for _, h := range held.History {
		if h.Seq <= st.Base {
			hist = append(hist, h)
		}
	}
	if n := len(hist); n > 0 && hist[n-1].Seq != st.Base {
		return st, false
	}
	st.History, st.Base = append(hist, st.History...), 0
	return st, true
}

// Message is one retained message.
type Message struct {
	Seq    uint64 `json:"seq"`
	Binary bool   `json:"bin,omitempty"`
	Frame  []byte `json:"frame"` // the wire frame, seq included
}

// ID is one remembered publish id, the seq it was given and the client that sent it.
type ID struct {
	ID     string `json:"id"`
	Seq    uint64 `json:"seq"`
	Client string `json:"client,omitempty"`
}

// Snapshot copies the room's state. Taken of a frozen room, it is the whole room.
func (r *Room) Snapshot() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snapshot()
}

// snapshot is Snapshot with r.mu held.
func (r *Room) snapshot() State {
	st := State{Room: r.name, Epoch: r.epoch, Term: r.term, Seq: r.seq, History: make([]Message, len(r.hist.entries))}
	for i, e := range r.hist.entries {
		st.History[i] = Message{Seq: e.seq, Binary: e.binary, Frame: e.frame}
	}
	st.IDs = r.ids.all()
	if len(r.fed) > 0 {
		st.Sources = maps.Clone(r.fed)
	}
	st.Outbox = r.outboxState()
	return st
}

// StateBytes is about the size of what a hand-off carries of the room: its history and its
// undelivered webhook events.
func (r *Room) StateBytes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hist.bytes + r.box.bytes
}

// Position is the room's epoch and its newest seq.
func (r *Room) Position() (epoch string, seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.epoch, r.seq
}

// Restore makes a room from received state; its numbering goes on where it was, at st's term
// (a receiver passes the next term: see ownership.go). st must be valid (see Validate).
func Restore(cfg *Config, st State) *Room {
	r := New(cfg, st.Room)
	r.epoch, r.term, r.seq, r.committed = st.Epoch, max(st.Term, 1), st.Seq, st.Seq
	for _, h := range st.History {
		r.hist.add(newEntry(h.Seq, h.Binary, h.Frame))
	}
	for _, id := range st.IDs {
		r.ids.remember(id.Client, id.ID, id.Seq)
	}
	if len(st.Sources) > 0 {
		r.fed = maps.Clone(st.Sources)
	}
	r.restoreOutbox(st.Outbox)
	return r
}

// MaxOutboxEvents bounds the webhook events (and members) a received state's outbox may carry.
const MaxOutboxEvents = 1 << 20

// MaxIDs bounds the remembered publish ids a received state may carry (--dedupe-ids is at most
// this).
const MaxIDs = 1 << 20

// maxClient bounds the client id of a received text message: a query's client (128 bytes) or a
// token's sub.
const maxClient = 1024

// Validate checks a received state before it is restored, as strictly as the publishes that made
// it: a valid name, an epoch, contiguous history ending at most at the room's seq, binary frames
// that start with their seq, text frames that are exactly the message frames a publish makes
// (valid UTF-8 JSON {"type":"message","seq","client","id","data"}, seq matching, id and client
// within bounds, data present), and at most MaxIDs remembered ids, each once, their seqs rising
// and within the room's.
func (st *State) Validate() error {
	if err := protocol.ValidRoom(st.Room); err != nil {
		return err
	}
	if st.Epoch == "" || len(st.Epoch) > 64 || !utf8.ValidString(st.Epoch) {
		return errors.New("bad epoch")
	}
	if st.Base > st.Seq || (st.Base > 0 && len(st.History) > 0 && st.History[0].Seq != st.Base+1) {
		return fmt.Errorf("a tail after %d does not follow on from it", st.Base)
	}
	for i, h := range st.History {
		if h.Seq == 0 || h.Seq > st.Seq || (i > 0 && h.Seq != st.History[i-1].Seq+1) {
			return fmt.Errorf("history seqs are not contiguous up to %d", st.Seq)
		}
		if h.Binary {
			if len(h.Frame) < 8 || binary.BigEndian.Uint64(h.Frame) != h.Seq {
				return fmt.Errorf("history frame %d is malformed", h.Seq)
			}
			continue
		}
		if err := validText(h); err != nil {
			return fmt.Errorf("history frame %d is not a message frame: %w", h.Seq, err)
		}
	}
	if len(st.IDs) > MaxIDs {
		return fmt.Errorf("%d remembered ids, more than the %d a room may remember", len(st.IDs), MaxIDs)
	}
	if len(st.Sources) > MaxSourceNames {
		return fmt.Errorf("%d named sources, more than the %d a room counts", len(st.Sources), MaxSourceNames)
	}
	for name, n := range st.Sources {
		if name == "" || len(name) > protocol.MaxIDLen || n > st.Seq {
			return fmt.Errorf("named source %q is malformed", protocol.CloseReason(name))
		}
	}
	if o := st.Outbox; o != nil && (len(o.Events) > MaxOutboxEvents || len(o.Members) > MaxOutboxEvents) {
		return fmt.Errorf("an outbox of %d events and %d members, more than the %d a room keeps", len(o.Events), len(o.Members), MaxOutboxEvents)
	}
	seen := make(map[string]struct{}, len(st.IDs))
	for i, id := range st.IDs {
		if id.Seq == 0 || id.Seq > st.Seq || id.ID == "" || len(id.ID) > protocol.MaxIDLen || len(id.Client) > maxClient || (i > 0 && id.Seq <= st.IDs[i-1].Seq) {
			return fmt.Errorf("remembered id %q is malformed", protocol.CloseReason(id.ID))
		}
		if _, dup := seen[id.ID]; dup {
			return fmt.Errorf("remembered id %q appears twice", protocol.CloseReason(id.ID))
		}
		seen[id.ID] = struct{}{}
	}
	return nil
}

// validText checks a retained text frame is the message frame a publish makes of its seq.
func validText(h Message) error {
	if !utf8.Valid(h.Frame) {
		return errors.New("not UTF-8")
	}
	if canonicalText(h.Frame, h.Seq) {
		return nil
	}
	var m struct {
		Type   string          `json:"type"`
		Seq    *uint64         `json:"seq"`
		Client *string         `json:"client"`
		ID     string          `json:"id"`
		Data   json.RawMessage `json:"data"`
	}
	d := json.NewDecoder(bytes.NewReader(h.Frame))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		return err
	}
	if d.More() {
		return errors.New("more after the frame's JSON object")
	}
	switch {
	case m.Type != protocol.TypeMessage:
		return fmt.Errorf("type %q", protocol.CloseReason(m.Type))
	case m.Seq == nil || *m.Seq != h.Seq:
		return errors.New("its seq is not the message's")
	case m.Client == nil || len(*m.Client) > maxClient:
		return errors.New("no client, or a client id too long")
	case len(m.ID) > protocol.MaxIDLen:
		return errors.New("publish id too long")
	case len(m.Data) == 0:
		return errors.New(`no "data"`)
	}
	return nil
}

// canonicalText reports whether frame is exactly what protocol.AppendMessage makes of a message
// of seq: its fields in its order, its strings without escapes, and its data one JSON value.
// Every frame a roost node makes of a publish with a plain client id and id is; checking that
// costs a fifth of decoding the frame (a receiver of a big hand-off spent half its time in that
// decoding). What it does not recognise, validText decodes in full.
func canonicalText(frame []byte, seq uint64) bool {
	rest, ok := bytes.CutPrefix(frame, []byte(`{"type":"message","seq":`))
	if !ok {
		return false
	}
	var digits [20]byte
	if rest, ok = bytes.CutPrefix(rest, strconv.AppendUint(digits[:0], seq, 10)); !ok {
		return false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"client":`)); !ok {
		return false
	}
	var client, id []byte
	if client, rest, ok = plainString(rest); !ok || len(client) > maxClient {
		return false
	}
	if after, isID := bytes.CutPrefix(rest, []byte(`,"id":`)); isID {
		if id, rest, ok = plainString(after); !ok || len(id) > protocol.MaxIDLen {
			return false
		}
	}
	data, ok := bytes.CutPrefix(rest, []byte(`,"data":`))
	if !ok {
		return false
	}
	data, ok = bytes.CutSuffix(data, []byte("}"))
	if !ok || len(data) == 0 {
		return false
	}
	if _, after, plain := plainString(data); plain && len(after) == 0 {
		return true // a plain string, the commonest data, scanned in a tight loop
	}
	return json.Valid(data)
}

// plainString splits a JSON string with no escape and no control character off the start of b:
// its content, and what follows it.
func plainString(b []byte) (s, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return nil, nil, false
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return b[1:i], b[i+1:], true
		case c == '\\' || c < 0x20:
			return nil, nil, false
		}
	}
	return nil, nil, false
}
