package room

import (
	"strings"
	"testing"

	"github.com/roost-dev/roost/protocol"
)

// A received state's text frames must be the frames a publish makes; ids must be bounded.
func TestValidateChecksEveryFrameAsAPublishWould(t *testing.T) {
	msg := func(seq uint64, client, id, data string) Message {
		return Message{Seq: seq, Frame: protocol.AppendMessage(nil, seq, client, id, []byte(data))}
	}
	ok := State{Room: "a", Epoch: "e", Seq: 2, History: []Message{msg(1, "ann", "p1", `{"t":1}`), msg(2, "bo", "", `null`)},
		IDs: []ID{{ID: "p1", Seq: 1}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("a state of real publishes: %v", err)
	}
	text := func(frame string) State {
		return State{Room: "a", Epoch: "e", Seq: 1, History: []Message{{Seq: 1, Frame: []byte(frame)}}}
	}
	for name, st := range map[string]State{
		"not JSON":         text("hello"),
		"not UTF-8":        text("{\"type\":\"message\",\"seq\":1,\"client\":\"\xff\",\"data\":1}"),
		"another type":     text(`{"type":"welcome","seq":1,"client":"a","data":1}`),
		"seq not its own":  text(`{"type":"message","seq":7,"client":"a","data":1}`),
		"no seq":           text(`{"type":"message","client":"a","data":1}`),
		"no client":        text(`{"type":"message","seq":1,"data":1}`),
		"no data":          text(`{"type":"message","seq":1,"client":"a"}`),
		"unknown field":    text(`{"type":"message","seq":1,"client":"a","data":1,"admin":true}`),
		"trailing bytes":   text(`{"type":"message","seq":1,"client":"a","data":1} {}`),
		"id too long":      text(`{"type":"message","seq":1,"client":"a","id":"` + strings.Repeat("i", protocol.MaxIDLen+1) + `","data":1}`),
		"client too long":  text(`{"type":"message","seq":1,"client":"` + strings.Repeat("c", maxClient+1) + `","data":1}`),
		"id twice":         {Room: "a", Epoch: "e", Seq: 3, IDs: []ID{{ID: "x", Seq: 1}, {ID: "x", Seq: 2}}},
		"id seqs falling":  {Room: "a", Epoch: "e", Seq: 3, IDs: []ID{{ID: "x", Seq: 2}, {ID: "y", Seq: 1}}},
		"too many ids":     {Room: "a", Epoch: "e", Seq: MaxIDs + 2, IDs: manyIDs(MaxIDs + 1)},
		"epoch not UTF-8":  {Room: "a", Epoch: "\xff", Seq: 1},
		"binary seq wrong": {Room: "a", Epoch: "e", Seq: 1, History: []Message{{Seq: 1, Binary: true, Frame: make([]byte, 8)}}},
	} {
		if st.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func manyIDs(n int) []ID {
	ids := make([]ID, n)
	for i := range ids {
		ids[i] = ID{ID: "i" + strings.Repeat("x", i%7) + string(rune('a'+i%26)), Seq: uint64(i + 1)}
	}
	return ids
}

// A hand-off to a replica sends the tail only; the replica's copy completes it, and refuses when
// it cannot (another epoch or term, or behind the tail's base).
func TestTailCompletesFromTheReplicasCopy(t *testing.T) {
	msgs := func(from, to uint64) []Message {
		var out []Message
		for s := from; s <= to; s++ {
			out = append(out, Message{Seq: s, Frame: protocol.AppendMessage(nil, s, "c", "", []byte("1"))})
		}
		return out
	}
	full := State{Room: "a", Epoch: "e", Term: 3, Seq: 10, History: msgs(1, 10), IDs: []ID{{ID: "p", Seq: 9}}}
	tail := full.Tail(7)
	if tail.Base != 7 || len(tail.History) != 3 || tail.History[0].Seq != 8 {
		t.Fatalf("tail after 7: base %d, %d messages", tail.Base, len(tail.History))
	}
	if err := tail.Validate(); err != nil {
		t.Fatal(err)
	}
	replica := State{Room: "a", Epoch: "e", Term: 3, Seq: 8, History: msgs(1, 8)}
	got, ok := tail.Complete(replica)
	if !ok || got.Base != 0 || len(got.History) != 10 || got.History[9].Seq != 10 || got.Validate() != nil {
		t.Fatalf("completed: ok %v, base %d, %d messages", ok, got.Base, len(got.History))
	}
	for name, held := range map[string]State{
		"another epoch": {Room: "a", Epoch: "x", Term: 3, Seq: 8, History: msgs(1, 8)},
		"another term":  {Room: "a", Epoch: "e", Term: 2, Seq: 8, History: msgs(1, 8)},
		"behind":        {Room: "a", Epoch: "e", Term: 3, Seq: 6, History: msgs(1, 6)},
	} {
		if _, ok := tail.Complete(held); ok {
			t.Errorf("%s: completed", name)
		}
	}
	if short := (State{Room: "a", Epoch: "e", Seq: 10, History: msgs(9, 10)}).Tail(5); short.Base != 0 || len(short.History) != 2 {
		t.Fatalf("a tail whose start is no longer held: base %d, want the whole state", short.Base)
	}
	if bad := (State{Room: "a", Epoch: "e", Seq: 10, Base: 5, History: msgs(8, 10)}); bad.Validate() == nil {
		t.Fatal("a tail that does not follow on from its base was accepted")
	}
}

// The fast check recognises what AppendMessage makes and nothing the full check would refuse;
// a frame it does not recognise (an escaped client id) is still taken by the full check.
func TestCanonicalTextIsWhatAPublishMakes(t *testing.T) {
	for _, m := range []struct {
		client, id, data string
	}{{"ann", "p1", `{"t":1}`}, {"bo", "", `null`}, {"c", "x", `"}"`}, {"d", "", `[1,{"a":"}"}]`}, {"e", "", `"plain"`}, {"f", "", `"esc\"aped"`}} {
		frame := protocol.AppendMessage(nil, 42, m.client, m.id, []byte(m.data))
		if !canonicalText(frame, 42) {
			t.Errorf("%s: not recognised", frame)
		}
		if canonicalText(frame, 41) {
			t.Errorf("%s: recognised as seq 41", frame)
		}
	}
	escaped := protocol.AppendMessage(nil, 1, "a\"b", "", []byte(`1`))
	if canonicalText(escaped, 1) {
		t.Errorf("%s: an escaped client id taken by the fast check", escaped)
	}
	if err := validText(Message{Seq: 1, Frame: escaped}); err != nil {
		t.Errorf("%s: %v", escaped, err)
	}
	for _, frame := range []string{
		`{"type":"message","seq":1,"client":"a","data":1,"admin":true}`,
		`{"type":"message","seq":1,"client":"a","data":1} {}`,
		`{"type":"message","seq":1,"client":"a","data":}`,
		`{"type":"message","seq":1,"client":"a","data":1`,
		`{"type":"message","seq":10,"client":"a","data":1}`,
		"{\"type\":\"message\",\"seq\":1,\"client\":\"a\x01\",\"data\":1}",
		`{"type":"message","seq":1,"client":"a","data":"abc}`,
		`{"type":"message","seq":1,"client":"a","data":"a"x}`,
	} {
		if canonicalText([]byte(frame), 1) {
			t.Errorf("%s: recognised", frame)
		}
	}
}

// BenchmarkValidateHandOff: checking a hand-off's room of ten 1 KiB messages, as its receiver
// does for each room (b.N rooms).
func BenchmarkValidateHandOff(b *testing.B) {
	st := State{Room: "a", Epoch: "e", Seq: 10}
	data := []byte(`"` + strings.Repeat("x", 1000) + `"`)
	for seq := uint64(1); seq <= 10; seq++ {
		st.History = append(st.History, Message{Seq: seq, Frame: protocol.AppendMessage(nil, seq, "client-1", "id-"+strings.Repeat("7", 8), data)})
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := st.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}
