package peer

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzSignatureHeader: whatever a stranger puts in Roost-Signature, the receiver neither panics
// nor accepts it, and a header it parses prints back as itself.
func FuzzSignatureHeader(f *testing.F) {
	key := []byte("fuzz key")
	f.Add(Sign([]byte("another key"), Claim{Method: "POST", Host: self, URI: "/x", Time: time.Now(), Body: []byte("b")}))
	f.Add("v2.1.00112233445566778899aabbccddeeff.0." + strings.Repeat("0", 64) + "." + strings.Repeat("f", 64))
	f.Add("1700000000.deadbeef")
	f.Add("v2.....")
	f.Add("v2.-1.x.-1.x.x")
	p := New(key, nil, 1<<10, nil)
	f.Fuzz(func(t *testing.T, h string) {
		if s, ok := parseSig(h); ok && s.String() != h {
			t.Fatalf("parsed %q prints as %q", h, s)
		}
		r := httptest.NewRequest(http.MethodPost, "http://"+self+"/x", strings.NewReader("b"))
		r.Header.Set(SignatureHeader, h)
		if _, err := p.Verify(r, self); err == nil {
			t.Fatalf("header %q accepted without the key", h)
		}
	})
}
