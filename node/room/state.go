package room

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/roost-dev/roost/protocol"
)

// State is everything about a room a client can observe, as it travels to a new owner.
type State struct {
	Room    string    `json:"room"`
	Epoch   string    `json:"epoch"`
	Seq     uint64    `json:"seq"`
	History []Message `json:"history,omitempty"`
	IDs     []ID      `json:"ids,omitempty"` // oldest first
}

// Message is one retained message.
type Message struct {
	Seq    uint64 `json:"seq"`
	Binary bool   `json:"bin,omitempty"`
	Frame  []byte `json:"frame"` // the wire frame, seq included
}

// ID is one remembered publish id and the seq it was given.
type ID struct {
	ID  string `json:"id"`
	Seq uint64 `json:"seq"`
}

// Snapshot copies the room's state. Taken of a frozen room, it is the whole room.
func (r *Room) Snapshot() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := State{Room: r.name, Epoch: r.epoch, Seq: r.seq, History: make([]Message, len(r.hist.entries))}
	for i, e := range r.hist.entries {
		st.History[i] = Message{Seq: e.seq, Binary: e.binary, Frame: e.frame}
	}
	for _, id := range r.ids.order {
		st.IDs = append(st.IDs, ID{ID: id, Seq: r.ids.seqs[id]})
	}
	return st
}

// HistoryBytes is the size of the room's history.
func (r *Room) HistoryBytes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hist.bytes
}

// Position is the room's epoch and its newest seq.
func (r *Room) Position() (epoch string, seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.epoch, r.seq
}

// Restore makes a room from received state; its numbering goes on where it was. st must be
// valid (see Validate).
func Restore(cfg *Config, st State) *Room {
	r := New(cfg, st.Room)
	r.epoch, r.seq = st.Epoch, st.Seq
	for _, h := range st.History {
		r.hist.add(newEntry(h.Seq, h.Binary, h.Frame))
	}
	for _, id := range st.IDs {
		r.ids.remember(id.ID, id.Seq)
	}
	return r
}

// Validate checks a received state before it is restored: what Restore and the room rely on (a
// valid name, an epoch, contiguous history ending at most at the room's seq, binary frames that
// start with their seq, remembered ids within bounds).
func (st *State) Validate() error {
	if err := protocol.ValidRoom(st.Room); err != nil {
		return err
	}
	if st.Epoch == "" || len(st.Epoch) > 64 {
		return errors.New("bad epoch")
	}
	for i, h := range st.History {
		if len(h.Frame) == 0 || (h.Binary && (len(h.Frame) < 8 || binary.BigEndian.Uint64(h.Frame) != h.Seq)) {
			return fmt.Errorf("history frame %d is malformed", h.Seq)
		}
		if h.Seq == 0 || h.Seq > st.Seq || (i > 0 && h.Seq != st.History[i-1].Seq+1) {
			return fmt.Errorf("history seqs are not contiguous up to %d", st.Seq)
		}
	}
	for _, id := range st.IDs {
		if id.Seq == 0 || id.Seq > st.Seq || id.ID == "" || len(id.ID) > protocol.MaxIDLen {
			return fmt.Errorf("remembered id %q is malformed", protocol.CloseReason(id.ID))
		}
	}
	return nil
}
