package ring

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Config configures a member. Build it with DefaultConfig and change what you need.
type Config struct {
	// ID is the member's unique name in the cluster. Required.
	ID string
	// Role is RoleNode or RoleRouter. Default RoleNode.
	Role Role
	// Gossip is the host:port memberlist binds, TCP and UDP. Port 0 picks a free port. Default
	// "0.0.0.0:7946".
	Gossip string
	// Advertise is the host:port others reach this member's gossip on, for NAT and Kubernetes.
	// Default: the bind address, or the first private IP when binding all interfaces.
	Advertise string
	// HTTP is the host:port of this member's HTTP listener as others should dial it. An empty or
	// unspecified host (":9000", "0.0.0.0:9000") is replaced by the advertised gossip host.
	HTTP string
	// TCP is the host:port of stream ingest (nodes only), completed the same way as HTTP.
	TCP string
	// TLS says the HTTP listener speaks TLS, so peers use https:// and wss://.
	TLS bool
	// Join lists seeds: host:port, or host (the gossip port is assumed), where a DNS name may
	// resolve to several addresses. Empty starts a new cluster.
	Join []string
	// JoinRetry is how long to wait between attempts while no seed answers. Default 1s.
	JoinRetry time.Duration

	// Placement shapes the consistent hash; it must be the same on every member.
	Placement PlacementConfig

	// Memberlist timers, tuned for a LAN. With the defaults a killed member is suspected once the
	// probe that finds it fails (ProbeInterval, indirect probes included) and declared dead
	// SuspicionMult×ProbeInterval×max(1, log10 N) later, stretched up to SuspicionMaxMult times
	// that while unconfirmed: p99 1.75–2.45 s with 3 and 5 members. A member that does not run (a
	// pause, a starved machine) for ProbeInterval × (1+SuspicionMult) can be declared dead, so the
	// node's pause watchdog (--stale-after, 1 s) must stay below that.
	//
	// Faster timers are a choice, not the default. Measured side by side in one run (the README's
	// Failure detection): 100 ms probes with a 50 ms timeout, a suspicion of 3 intervals, 50 ms
	// gossip and --stale-after 300 ms detect a kill in p99 0.83–0.86 s (3 and 5 members; the
	// defaults 2.2–2.4 s), but in a 2.5-minute soak at 100% CPU gave 12 false dead verdicts
	// (the defaults 7, mostly on the router) and 189 rooms dropped by the pause watchdog (the
	// defaults none).
	ProbeInterval time.Duration // how often each member probes a random other; default 250ms
	ProbeTimeout  time.Duration // how long a direct probe waits for its ack; default 150ms
	SuspicionMult int           // suspicion lasts SuspicionMult × ProbeInterval × max(1, log10 N); default 4
	// SuspicionMaxMult: a suspicion starts at this many times that length and shrinks to it as
	// other members confirm it (memberlist's SuspicionMaxTimeoutMult). Small clusters have few
	// members to confirm, so their dead verdicts take longer than the minimum. Default 2.
	SuspicionMaxMult int
	// GossipInterval: how often queued state (a suspicion, its refutation, a death) is gossiped
	// to GossipNodes others; default 100ms.
	GossipInterval time.Duration
	GossipNodes    int           // default 3
	PushPull       time.Duration // full state sync interval; default 15s
	// DeadReclaim is how long after a member is declared dead its ID may rejoin from another
	// address (a restarted process on a new port). Default 2s.
	DeadReclaim time.Duration

	// Debounce is the quiet period that ends a burst of membership events; the placement is rebuilt
	// once per burst. Default 100ms.
	Debounce time.Duration
	// MaxDebounce bounds how long a steady stream of events can delay a rebuild. Default 1s.
	MaxDebounce time.Duration
	// GoneRetention is how long members that left or died stay listed (as left or dead) for
	// operators. Default 1m.
	GoneRetention time.Duration

	// SecretKey, when set (16, 24 or 32 bytes), encrypts gossip.
	SecretKey []byte
	// AcceptKeys are more keys whose gossip is accepted, but never sent with: during a rotation,
	// members on the old key and members on the new one understand each other.
	AcceptKeys [][]byte

	// Logger receives the member's logs; memberlist's own lines are routed to it too. Default
	// slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a Config with the LAN defaults documented on its fields.
func DefaultConfig() Config {
	return Config{
		Role:             RoleNode,
		Gossip:           "0.0.0.0:7946",
		JoinRetry:        time.Second,
		Placement:        DefaultPlacementConfig(),
		ProbeInterval:    250 * time.Millisecond,
		ProbeTimeout:     150 * time.Millisecond,
		SuspicionMult:    4,
		SuspicionMaxMult: 2,
		GossipInterval:   100 * time.Millisecond,
		GossipNodes:      3,
		PushPull:         15 * time.Second,
		DeadReclaim:      2 * time.Second,
		Debounce:         100 * time.Millisecond,
		MaxDebounce:      time.Second,
		GoneRetention:    time.Minute,
	}
}

// Validate reports the first field that cannot work.
func (c Config) Validate() error {
	if c.ID == "" {
		return errors.New("ring: ID is required")
	}
	if c.Role != RoleNode && c.Role != RoleRouter {
		return fmt.Errorf("ring: Role must be %q or %q, got %q", RoleNode, RoleRouter, c.Role)
	}
	if _, _, err := net.SplitHostPort(c.Gossip); err != nil {
		return fmt.Errorf("ring: Gossip %q: %w", c.Gossip, err)
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			return fmt.Errorf("ring: Advertise %q: %w", c.Advertise, err)
		}
	}
	if _, _, err := net.SplitHostPort(c.HTTP); err != nil {
		return fmt.Errorf("ring: HTTP %q: %w", c.HTTP, err)
	}
	if c.Role == RoleNode && c.TCP != "" {
		if _, _, err := net.SplitHostPort(c.TCP); err != nil {
			return fmt.Errorf("ring: TCP %q: %w", c.TCP, err)
		}
	}
	if c.ProbeTimeout <= 0 || c.ProbeInterval <= c.ProbeTimeout {
		return fmt.Errorf("ring: ProbeTimeout (%s) must be positive and below ProbeInterval (%s)", c.ProbeTimeout, c.ProbeInterval)
	}
	if c.SuspicionMult < 1 || c.SuspicionMaxMult < 1 || c.GossipNodes < 1 || c.GossipInterval <= 0 || c.PushPull <= 0 {
		return errors.New("ring: SuspicionMult, SuspicionMaxMult, GossipNodes, GossipInterval and PushPull must be positive")
	}
	if c.Debounce <= 0 || c.MaxDebounce < c.Debounce {
		return fmt.Errorf("ring: Debounce (%s) must be positive and at most MaxDebounce (%s)", c.Debounce, c.MaxDebounce)
	}
	if n := len(c.SecretKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("ring: SecretKey must be 16, 24 or 32 bytes, got %d", n)
	}
	if len(c.AcceptKeys) > 0 && len(c.SecretKey) == 0 {
		return fmt.Errorf("ring: AcceptKeys need a SecretKey")
	}
	return c.Placement.Validate()
}

// KeyFromSecret derives the 32-byte gossip encryption key from a cluster secret of any length.
func KeyFromSecret(secret string) []byte {
	sum := sha256.Sum256([]byte("roost gossip key v1\x00" + secret))
	return sum[:]
}
