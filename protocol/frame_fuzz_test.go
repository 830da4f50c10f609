package protocol

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzParsePublish: any client text frame gets a valid publish or an error frame with a known
// code and a message, never a panic; an accepted publish survives a round trip.
func FuzzParsePublish(f *testing.F) {
	for _, s := range []string{
		`{"type":"publish","id":"a","data":{"x":1}}`,
		`{"type":"publish","data":"hi"}`,
		`{"type":"publish","id":"a"}`,
		`{"type":"subscribe"}`,
		`{"type":"publish","data":null}`,
		`{"type":"publish","id":1,"data":2}`,
		`[1,2]`, `null`, `"x"`, `{`, ``, `{"type":"publish","data":{"a":[1,2,{"b":"\u00e9"}]}}`,
		`{"type":"publish","type":"other","data":1}`,
		"{\"type\":\"publish\",\"data\":\"\xff\xfe\"}",
	} {
		f.Add([]byte(s))
	}
	codes := map[string]bool{CodeBadJSON: true, CodeBadRequest: true, CodeUnknownType: true}
	f.Fuzz(func(t *testing.T, frame []byte) {
		p, bad := ParsePublish(frame)
		if bad != nil {
			if !codes[bad.Code] || bad.Error == "" || bad.Type != TypeError {
				t.Fatalf("error frame %+v", bad)
			}
			if len(bad.ID) > MaxIDLen || !utf8.ValidString(bad.ID) && utf8.ValidString(p.ID) {
				t.Fatalf("error frame echoes an id of %d bytes", len(bad.ID))
			}
			if _, err := json.Marshal(bad); err != nil {
				t.Fatalf("error frame does not encode: %v", err)
			}
			return
		}
		if p.Type != TypePublish || len(p.ID) > MaxIDLen || !json.Valid(p.Data) || !utf8.Valid(frame) {
			t.Fatalf("accepted %+v", p)
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, bad := ParsePublish(again)
		if bad != nil || q.ID != p.ID {
			t.Fatalf("round trip of %q: %+v %+v", again, q, bad)
		}
	})
}
