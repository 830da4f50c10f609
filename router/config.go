package router

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/limit"
)

// Config configures a router. Build it with DefaultConfig.
type Config struct {
	// MaxFrame is the largest message a client may send through the router, in bytes; a larger
	// one closes the client with 1009. Default 1 MiB (the node's default).
	MaxFrame int64
	// PingInterval is how often the router pings both legs of a proxied connection; a leg silent
	// for 2.5 intervals is taken for dead. Default 30s.
	PingInterval time.Duration
	// WriteTimeout bounds one write to either leg. Default 10s.
	WriteTimeout time.Duration
	// DialTimeout bounds dialing the owner, redirects included. Default 5s.
	DialTimeout time.Duration
	// MaxRedirects is how many 307s from nodes the router follows while members disagree about
	// the ring. Default 3.
	MaxRedirects int
	// RedialTimeout is how long the router keeps trying to reach a room's new owner after the old
	// one moved the room or went away, before it closes the client with 1001. A crashed owner is
	// replaced once the ring notices (about 1.5 s by default), so keep it above that. Default 10s.
	RedialTimeout time.Duration
	// APITimeout bounds one proxied server API request, the owner's answer included (keep it
	// above the nodes' --api-timeout). Default 15s.
	APITimeout time.Duration
	// StatsInterval is how often the connection count is gossiped. Default 2s.
	StatsInterval time.Duration
	// Auth, when set, checks client tokens before the owner is dialed (the owner checks them
	// again): a bad one costs the cluster nothing beyond this router.
	Auth *auth.Verifier
	// Origins are the browser origins allowed to open WebSockets; the zero value allows any.
	Origins auth.Origins
	// MaxAddrConns bounds the connections open from one client address; more are refused with
	// 429. Default 1000.
	MaxAddrConns int
	// MaxHandshakes bounds the WebSocket handshakes in progress at once (from the request to the
	// owner's welcome); more are refused with 503 "overloaded" and Retry-After. 0: no bound.
	// Default 1024.
	MaxHandshakes int
	// TrustedProxies are hops in front of the router (load balancers) whose X-Forwarded-For
	// names the client. Anyone else's is ignored, and the owner is told the address the router
	// saw.
	TrustedProxies []netip.Prefix
	// PendingBytes bounds, in bytes, the publishes of one client the router keeps until the owner
	// acks them (to re-send them after a move); a publish beyond it is refused with an error frame
	// `overloaded` and not sent (a first one always fits). Default 4 MiB.
	PendingBytes int
	// DedupeIDs is the nodes' --dedupe-ids: how many publish ids a room remembers. After a leg to
	// the owner broke, the router re-sends a publish the owner never answered only while the room
	// still remembers its id: fewer than DedupeIDs messages since it was sent; an older one is
	// answered with an error frame `owner_unavailable` instead, as it could be delivered twice.
	// Set it as the nodes have it (or lower). Default 1000 (the nodes' default).
	DedupeIDs int
	// MaxMemory: while the process holds more than this many bytes, the router keeps (so takes)
	// no more publishes: they are refused as past PendingBytes. 0 turns the guard off. Default 80%
	// of the container's memory limit, or of the machine's memory.
	MaxMemory uint64
	// MemoryBudget bounds, in bytes, what all sessions keep together (unacked publishes); past it
	// publishes are refused as past PendingBytes. 0: half of MaxMemory, or unbounded when
	// MaxMemory is 0. Default 0.
	MemoryBudget uint64
	// Edge: a client's room is served over the router's one edge leg to the room's owner (see
	// edge.go), when the owner serves legs; false proxies each client over a connection of its
	// own, as before v1.1. Default true.
	Edge bool
	// SendQueue is how many frames may wait for one client of an edge leg before the router
	// closes it with 4008 (the node's --send-queue). Default 1024.
	SendQueue int
	// SendQueueBytes is how much the frames waiting for one client of an edge leg may hold before
	// the router closes it with 4008, in bytes (a first frame always fits). Default 16 MiB.
	SendQueueBytes int
	// PeerKey signs the router's edge legs as the cluster's node-to-node calls are signed (from
	// --cluster-secret); nil: unsigned, for a cluster that runs open.
	PeerKey []byte
	// DialTLS configures wss:// dials to owners that serve TLS (trusted CAs); nil uses the
	// system's roots.
	DialTLS *tls.Config
	// Logger receives the router's logs. Default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{MaxFrame: 1 << 20, PingInterval: 30 * time.Second, WriteTimeout: 10 * time.Second,
		DialTimeout: 5 * time.Second, MaxRedirects: 3, StatsInterval: 2 * time.Second, RedialTimeout: 10 * time.Second, APITimeout: 15 * time.Second,
		MaxAddrConns: 1000, MaxHandshakes: 1024, PendingBytes: 4 << 20, DedupeIDs: 1000, MaxMemory: limit.DefaultMemoryLimit(),
		Edge: true, SendQueue: 1024, SendQueueBytes: 16 << 20}
}

// Validate reports the first field that cannot work.
func (c Config) Validate() error {
	switch {
	case c.MaxFrame <= 0:
		return fmt.Errorf("router: MaxFrame must be positive, got %d", c.MaxFrame)
	case c.PingInterval <= 0, c.WriteTimeout <= 0, c.DialTimeout <= 0, c.StatsInterval <= 0, c.RedialTimeout <= 0, c.APITimeout <= 0:
		return fmt.Errorf("router: PingInterval, WriteTimeout, DialTimeout, StatsInterval, RedialTimeout and APITimeout must be positive")
	case c.PendingBytes <= 0:
		return fmt.Errorf("router: PendingBytes must be positive, got %d", c.PendingBytes)
	case c.Edge && (c.SendQueue <= 0 || c.SendQueueBytes <= 0):
		return fmt.Errorf("router: SendQueue and SendQueueBytes must be positive, got %d and %d", c.SendQueue, c.SendQueueBytes)
	case c.DedupeIDs <= 0:
		return fmt.Errorf("router: DedupeIDs must be positive (the nodes' --dedupe-ids), got %d", c.DedupeIDs)
	case c.MaxAddrConns <= 0:
		return fmt.Errorf("router: MaxAddrConns must be positive, got %d", c.MaxAddrConns)
	case c.MaxHandshakes < 0:
		return fmt.Errorf("router: MaxHandshakes must not be negative, got %d", c.MaxHandshakes)
	case c.MaxRedirects < 0:
		return fmt.Errorf("router: MaxRedirects must not be negative, got %d", c.MaxRedirects)
	}
	return nil
}

// memoryBudget is MemoryBudget with its default filled in.
func (c Config) memoryBudget() uint64 {
	if c.MemoryBudget > 0 {
		return c.MemoryBudget
	}
	return limit.DefaultBudget(c.MaxMemory)
}
