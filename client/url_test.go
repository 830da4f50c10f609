package client

import (
	"net/url"
	"testing"
	"time"
)

func TestParseBase(t *testing.T) {
	for _, c := range []struct {
		in, want string // want "" means an error
	}{
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"ws://h:1/", "http://h:1"},
		{"wss://h", "https://h"},
		{"https://h/prefix/", "https://h/prefix"},
		{" http://h ", "http://h"},
		{"ftp://h", ""},
		{"http://", ""},
		{"http://h?x=1", ""},
		{"http://h/v1/rooms/x/ws", ""},
	} {
		u, err := parseBase(c.in)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("parseBase(%q) = %s, want an error", c.in, u)
		case c.want != "" && (err != nil || u.String() != c.want):
			t.Errorf("parseBase(%q) = %v, %v; want %s", c.in, u, err, c.want)
		}
	}
}

func TestRoomURL(t *testing.T) {
	b, _ := parseBase("https://h:1/p")
	if got := wsForm(roomURL(b, "a.b:c", "/ws")).String(); got != "wss://h:1/p/v1/rooms/a.b:c/ws" {
		t.Errorf("room URL %s", got)
	}
	if got := roomURL(b, "bad/name x", "").String(); got != "https://h:1/p/v1/rooms/bad%2Fname%20x" {
		t.Errorf("escaped room URL %s", got)
	}
}

func TestFollow(t *testing.T) {
	for _, c := range []struct {
		cur, loc string
		secret   bool
		want     string // "" means refused
	}{
		{"ws://a:1/v1/rooms/r/ws?since=1", "ws://b:2/v1/rooms/r/ws?since=1", false, "ws://b:2/v1/rooms/r/ws?since=1"},
		{"ws://a:1/v1/rooms/r/ws", "http://b:2/v1/rooms/r/ws", false, "ws://b:2/v1/rooms/r/ws"},
		{"ws://a:1/v1/rooms/r/ws", "/other/ws", false, "ws://a:1/other/ws"},
		{"http://a:1/v1/rooms/r", "ws://b:2/v1/rooms/r", false, "http://b:2/v1/rooms/r"},
		{"https://a/v1/rooms/r", "https://b/v1/rooms/r", true, "https://b/v1/rooms/r"},
		{"wss://a/v1/rooms/r/ws", "ws://b/v1/rooms/r/ws", false, "ws://b/v1/rooms/r/ws"},
		{"wss://a/v1/rooms/r/ws", "ws://b/v1/rooms/r/ws", true, ""}, // no token over plain text
		{"ws://a/v1/rooms/r/ws", "", false, ""},
		{"ws://a/v1/rooms/r/ws", "gopher://b/", false, ""},
	} {
		cur, _ := url.Parse(c.cur)
		got, err := follow(cur, c.loc, c.secret)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("follow(%s, %q) = %s, want a refusal", c.cur, c.loc, got)
		case c.want != "" && (err != nil || got.String() != c.want):
			t.Errorf("follow(%s, %q) = %v, %v; want %s", c.cur, c.loc, got, err, c.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	for failures := 1; failures < 40; failures++ {
		d := backoff(failures, 2*time.Second)
		base := min(minReconnectDelay<<min(failures-1, 20), 2*time.Second)
		if d < base/2 || d > base {
			t.Fatalf("backoff(%d) = %s, want within [%s, %s]", failures, d, base/2, base)
		}
	}
}

func TestPositionDropsDuplicates(t *testing.T) {
	p := position{epoch: "e1", seq: 5}
	steps := []struct {
		ev   Event
		keep bool
		seq  uint64
		ep   string
	}{
		{Event{Type: EventMessage, Seq: 5}, false, 5, "e1"},
		{Event{Type: EventMessage, Seq: 6}, true, 6, "e1"},
		{Event{Type: EventBinary, Seq: 6}, false, 6, "e1"},
		{Event{Type: EventGap, From: 7, To: 9}, true, 9, "e1"},
		{Event{Type: EventMessage, Seq: 8}, false, 9, "e1"},
		{Event{Type: EventPresence}, true, 9, "e1"},
		{Event{Type: EventReset, Epoch: "e2", Seq: 3}, true, 0, "e2"},
		{Event{Type: EventMessage, Seq: 1}, true, 1, "e2"},
	}
	for i, s := range steps {
		if keep := p.advance(&s.ev); keep != s.keep || p.seq != s.seq || p.epoch != s.ep {
			t.Fatalf("step %d (%+v): keep %v, position %+v", i, s.ev, keep, p)
		}
	}
}
