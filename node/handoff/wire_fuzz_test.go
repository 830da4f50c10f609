package handoff

import (
	"encoding/binary"
	"testing"

	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/protocol"
)

// FuzzBatch: a hand-off body, even one signed by a member with the secret but otherwise hostile
// or corrupt, is refused or installs rooms that hold together; never a panic.
func FuzzBatch(f *testing.F) {
	bin := make([]byte, 8+3)
	binary.BigEndian.PutUint64(bin, 3)
	good := room.State{Room: "lobby", Epoch: "e1", Seq: 3, History: []room.Message{
		{Seq: 2, Frame: protocol.AppendMessage(nil, 2, "ann", "m2", []byte(`{"a":1}`))},
		{Seq: 3, Binary: true, Frame: bin},
	}, IDs: []room.ID{{ID: "m2", Seq: 2}}}
	for _, b := range []Batch{
		{From: "n1", Ring: "abc", Rooms: []room.State{good}},
		{From: "n1", Ring: "abc", Check: true, Rooms: []room.State{{Room: "a"}, {Room: "b"}}},
		{From: "n1", Rooms: []room.State{good, good}},
		{From: "n1", Rooms: []room.State{{Room: "bad room", Epoch: "e", Seq: 1}}},
		{From: "n1", Rooms: []room.State{{Room: "r", Epoch: "e", Seq: 1, History: []room.Message{{Seq: 5, Frame: []byte("x")}}}}},
	} {
		body, err := Encode(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
		f.Add(body[:len(body)/2])
	}
	f.Add([]byte{})
	f.Add([]byte("not gob at all"))
	cfg := &room.Config{HistoryCount: 1000, HistoryBytes: 4 << 20, DedupeIDs: 1000}
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := Decode(body)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, st := range b.Rooms {
			if seen[st.Room] {
				t.Fatalf("room %q accepted twice in one batch", st.Room)
			}
			seen[st.Room] = true
			if st.Validate() != nil {
				continue
			}
			r := room.Restore(cfg, st)
			epoch, seq := r.Position()
			if seq != st.Seq || epoch != st.Epoch {
				t.Fatalf("restored %s at %s/%d, sent %s/%d", st.Room, epoch, seq, st.Epoch, st.Seq)
			}
			for _, m := range r.Snapshot().History {
				if m.Seq == 0 || m.Seq > seq || len(m.Frame) == 0 {
					t.Fatalf("restored history entry %d of a room at %d", m.Seq, seq)
				}
			}
		}
	})
}
