package client

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

// Options configures Dial. The zero value is ready to use: a live-only connection that
// reconnects on its own. Every duration defaults when zero.
type Options struct {
	// ClientID is this client's stable id in the room: its presence identity and the "client"
	// of its messages. Empty: the server makes one up at the first connection and the Conn keeps
	// it for every reconnect.
	ClientID string

	// Since resumes after this seq of Epoch: the server replays what it still retains after it
	// (with a gap event for what it no longer has, a reset event when Epoch is gone). Nil joins
	// live: the first message is the one after the welcome. Pass back Conn.LastSeq and
	// Conn.Epoch of an earlier connection.
	Since *uint64
	// Epoch is the epoch Since belongs to, as a welcome or reset gave it. It is sent only with
	// Since.
	Epoch string

	// Presence asks for presence events: the room's member list right after connecting, then
	// joins and leaves (or periodic summaries in large rooms).
	Presence bool

	// Token authenticates the client (a JWT, when the cluster has auth on). It is sent as an
	// "Authorization: Bearer" header to every node the redirects lead to; those are members of
	// the cluster. A redirect from wss:// to plain ws:// is refused while a token is set.
	Token string
	// Header holds extra handshake headers, e.g. Origin or a tracing header.
	Header http.Header

	// Alternates are more base addresses of the same cluster (routers or nodes, http(s):// or
	// ws(s)://). Dial and every reconnect try the base address first, then these in order, so a
	// client keeps finding the room when the node it was first given goes away.
	Alternates []string

	// DisableReconnect turns automatic reconnection off: the first close or network error ends
	// the Conn and Next reports it. By default the Conn reconnects on 4001 (room moved), 1001
	// (going away), abnormal closures and network errors, resuming where it was.
	DisableReconnect bool
	// MaxReconnectWait bounds how long the Conn keeps trying to reconnect after losing its
	// connection; then it gives up and Next and Publish report the last error. Default 1m.
	MaxReconnectWait time.Duration
	// MaxReconnectDelay caps the backoff between reconnect attempts (it starts at 50ms, doubles
	// with each failure and is jittered). The first attempt after a connection that lived a while
	// is immediate. Default 2s.
	MaxReconnectDelay time.Duration

	// HandshakeTimeout bounds one connection attempt: every redirect, the upgrade and the welcome
	// frame. Default 10s.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds each write to the server. Default 10s.
	WriteTimeout time.Duration
	// PingInterval is how often the client pings the server. A connection on which nothing at
	// all arrives (not even a pong) for 2.5 intervals is taken for dead and replaced: a node that
	// died or was cut off without closing its sockets is left within 12.5 s by default. Default
	// 5s.
	PingInterval time.Duration

	// EventBuffer is how many received events may wait for Next. When it is full the Conn stops
	// reading, and acks queued behind the events wait too; keep calling Next. A Conn that falls
	// far enough behind is dropped by the server with 4008. Default 1024.
	EventBuffer int
	// Discard drops every event instead of queueing it, for connections that only publish. Next
	// then only reports the end of the Conn, and LastSeq still advances.
	Discard bool

	// MaxFrame is the largest publish frame the Conn sends, in bytes. Keep it at the server's
	// --max-frame: the server closes a connection that sends more with 1009, while Publish can
	// refuse a single message up front. Default 1 MiB (the server's default); negative: no check.
	MaxFrame int
	// ReadLimit is the largest frame the Conn accepts from the server, in bytes; a larger one
	// ends the Conn with 1009. Default 16 MiB.
	ReadLimit int64

	// Dialer makes the WebSocket connections: TLS settings, proxies, custom network dialing.
	// Nil: a default dialer that uses the proxy settings of the environment. Its
	// HandshakeTimeout is ignored in favour of Options.HandshakeTimeout.
	Dialer *websocket.Dialer
	// Logger receives the Conn's reconnect attempts and outcomes. Default: no logging.
	Logger *slog.Logger
}

// Defaults documented on Options.
const (
	defaultMaxReconnectWait  = time.Minute
	defaultMaxReconnectDelay = 2 * time.Second
	minReconnectDelay        = 50 * time.Millisecond
	defaultHandshakeTimeout  = 10 * time.Second
	defaultWriteTimeout      = 10 * time.Second
	defaultPingInterval      = 5 * time.Second
	defaultEventBuffer       = 1024
	defaultMaxFrame          = 1 << 20
	defaultReadLimit         = 16 << 20
)

// withDefaults returns a copy of o with every zero field set to its default.
func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	setDefault(&c.MaxReconnectWait, defaultMaxReconnectWait)
	setDefault(&c.MaxReconnectDelay, defaultMaxReconnectDelay)
	setDefault(&c.HandshakeTimeout, defaultHandshakeTimeout)
	setDefault(&c.WriteTimeout, defaultWriteTimeout)
	setDefault(&c.PingInterval, defaultPingInterval)
	setDefault(&c.EventBuffer, defaultEventBuffer)
	setDefault(&c.MaxFrame, defaultMaxFrame)
	setDefault(&c.ReadLimit, defaultReadLimit)
	if c.Dialer == nil {
		c.Dialer = &websocket.Dialer{Proxy: http.ProxyFromEnvironment}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Since != nil {
		since := *c.Since // the caller may reuse its variable
		c.Since = &since
	}
	return c
}

func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}
