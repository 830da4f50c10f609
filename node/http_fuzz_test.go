package node

import (
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzResumeQuery: any query string on the WebSocket endpoint is either refused with a message
// or gives a resume, client id and presence flag within their bounds; never a panic.
func FuzzResumeQuery(f *testing.F) {
	for _, q := range []string{
		"", "since=3&epoch=abc", "since=-1", "since=18446744073709551616", "since=1e3",
		"client=ann&presence=1", "presence=yes", "client=%00", "client=%ff%fe", "epoch=" + strings.Repeat("e", 65),
		"since=1&since=2", "%zz", "since=%20", "client=" + strings.Repeat("a", 129), "presence=true&presence=0",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r := httptest.NewRequest("GET", "/v1/rooms/x/ws", nil)
		r.URL.RawQuery = raw
		res, client, _, err := parseResume(r)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("a refusal without a message")
			}
			return
		}
		if len(res.Epoch) > 64 || len(client) > 128 || !utf8.ValidString(client) {
			t.Fatalf("accepted epoch %q client %q", res.Epoch, client)
		}
		for _, c := range client {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("accepted a control character in client %q", client)
			}
		}
		if res.HasSince {
			// A whole decimal number, leading zeros allowed, and nothing else.
			digits := strings.TrimLeft(strings.TrimPrefix(r.URL.Query().Get("since"), "+"), "0")
			if digits == "" {
				digits = "0"
			}
			if digits != strconv.FormatUint(res.Since, 10) {
				t.Fatalf("since %q read as %d", r.URL.Query().Get("since"), res.Since)
			}
		}
	})
}
