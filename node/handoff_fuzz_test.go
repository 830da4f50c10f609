package node

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"testing"

	"github.com/roost-dev/roost/protocol"
)

func encodeBatch(tb testing.TB, b handoffBatch) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(b); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzHandoffBatch: a hand-off body, even one signed by a member with the secret but otherwise
// hostile or corrupt, is refused or installs rooms that hold together; never a panic.
func FuzzHandoffBatch(f *testing.F) {
	bin := make([]byte, 8+3)
	binary.BigEndian.PutUint64(bin, 3)
	good := roomState{Room: "lobby", Epoch: "e1", Seq: 3, History: []historyFrame{
		{Seq: 2, Frame: protocol.AppendMessage(nil, 2, "ann", "m2", []byte(`{"a":1}`))},
		{Seq: 3, Binary: true, Frame: bin},
	}, IDs: []rememberedID{{ID: "m2", Seq: 2}}}
	for _, b := range []handoffBatch{
		{From: "n1", Ring: "abc", Rooms: []roomState{good}},
		{From: "n1", Ring: "abc", Check: true, Rooms: []roomState{{Room: "a"}, {Room: "b"}}},
		{From: "n1", Rooms: []roomState{good, good}},
		{From: "n1", Rooms: []roomState{{Room: "bad room", Epoch: "e", Seq: 1}}},
		{From: "n1", Rooms: []roomState{{Room: "r", Epoch: "e", Seq: 1, History: []historyFrame{{Seq: 5, Frame: []byte("x")}}}}},
	} {
		body := encodeBatch(f, b)
		f.Add(body)
		f.Add(body[:len(body)/2])
	}
	f.Add([]byte{})
	f.Add([]byte("not gob at all"))
	n := &Node{cfg: DefaultConfig()}
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := decodeHandoff(body)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, st := range b.Rooms {
			if seen[st.Room] {
				t.Fatalf("room %q accepted twice in one batch", st.Room)
			}
			seen[st.Room] = true
			if st.validate() != nil {
				continue
			}
			r := restoreRoom(n, st)
			if r.seq != st.Seq || r.epoch != st.Epoch {
				t.Fatalf("restored %s at %s/%d, sent %s/%d", st.Room, r.epoch, r.seq, st.Epoch, st.Seq)
			}
			for _, e := range r.hist.after(0) {
				if e.seq == 0 || e.seq > r.seq || e.pm == nil {
					t.Fatalf("restored history entry %d of a room at %d", e.seq, r.seq)
				}
			}
		}
	})
}
