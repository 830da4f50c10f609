package node

import (
	"strings"
	"testing"

	"github.com/roost-dev/roost/protocol"
)

// FuzzHandshake: whatever a source sends as its first line, the parser either accepts a valid
// room or answers with a one-line ERR, and never panics.
func FuzzHandshake(f *testing.F) {
	for _, s := range []string{`{"room":"lobby"}`, `{"room":"a","token":"t"}`, `garbage`, `{"room":"a b"}`,
		`{"room":"x","colour":1}`, `{"room":"a"}{"room":"b"}`, `{}`, `[]`, `{"room":null}`, `{"room":"` + strings.Repeat("x", 200) + `"}`,
		"{\"room\":\"\u00e9\"}", `{"room":"a\n"}`} {
		f.Add([]byte(s + "\n"))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		h, code, msg := parseHandshake(line)
		if code == "" {
			if err := protocol.ValidRoom(h.Room); err != nil {
				t.Fatalf("accepted %q with room %q: %v", line, h.Room, err)
			}
			return
		}
		if msg == "" || strings.ContainsAny(code+msg, "\r\n") {
			t.Fatalf("answer to %q is not one line with a reason: %q %q", line, code, msg)
		}
	})
}

// FuzzFrameLength: a length is accepted exactly when it is within 1..max.
func FuzzFrameLength(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0}, 1024)
	f.Add([]byte{0, 0, 4, 0}, 1024)
	f.Add([]byte{0, 0, 4, 1}, 1024)
	f.Add([]byte{255, 255, 255, 255}, 1<<20)
	f.Fuzz(func(t *testing.T, b []byte, max int) {
		if len(b) < 4 || max < 1 {
			return
		}
		var hdr [4]byte
		copy(hdr[:], b)
		size, err := frameLength(hdr, max)
		want := uint32(hdr[0])<<24 | uint32(hdr[1])<<16 | uint32(hdr[2])<<8 | uint32(hdr[3])
		if ok := want >= 1 && uint64(want) <= uint64(max); ok != (err == nil) || (ok && size != want) {
			t.Fatalf("frameLength(%v, %d) = %d, %v", hdr, max, size, err)
		}
	})
}
