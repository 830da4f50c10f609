package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestValidRoom(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"lobby", true}, {"a.b_c:d-E9", true}, {strings.Repeat("x", 128), true},
		{"", false}, {strings.Repeat("x", 129), false}, {"no spaces", false}, {"slash/y", false},
		{"é", false}, {"q?x", false}, {"%41", false},
	} {
		if err := ValidRoom(c.name); (err == nil) != c.ok {
			t.Errorf("ValidRoom(%q) = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func TestAppendMessageIsJSON(t *testing.T) {
	for _, c := range []struct{ client, id, data string }{
		{"c1", "p1", `{"x":1}`},
		{"c\"2", "", `"s"`},
		{"ünï", "id\n<>&", `[1,2,{"a":null}]`},
		{"", "", `null`},
	} {
		b := AppendMessage(nil, 42, c.client, c.id, []byte(c.data))
		var m Message
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if m.Type != TypeMessage || m.Seq != 42 || m.Client != c.client || m.ID != c.id || string(m.Data) != c.data {
			t.Fatalf("round trip of %+v gave %+v", c, m)
		}
	}
}

func TestBinaryFrame(t *testing.T) {
	seq, p, err := ParseBinary([]byte{0, 0, 0, 0, 0, 0, 0, 7, 'a', 'b', 'c'})
	if err != nil || seq != 7 || string(p) != "abc" {
		t.Fatalf("got %d %q %v", seq, p, err)
	}
	if _, _, err := ParseBinary([]byte{1, 2}); err == nil {
		t.Fatal("short frame parsed")
	}
}

func BenchmarkAppendMessage(b *testing.B) {
	buf := make([]byte, 0, 256)
	data := []byte(`{"text":"hello there","n":12}`)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMessage(buf[:0], 123456, "client-abcdef", "pub-123", data)
	}
}
