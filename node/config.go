package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"time"

	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/node/handoff"
	"github.com/roost-dev/roost/node/room"
)

// Config configures a node. Build it with DefaultConfig; every limit is a flag of `roost node`.
type Config struct {
	// MaxFrame is the largest WebSocket message a client may send, in bytes; larger ones close
	// the connection with 1009. Default 1 MiB.
	MaxFrame int64
	// HistoryCount and HistoryBytes bound each room's retained messages (for resume); the oldest
	// go first when either is exceeded. Defaults 1000 messages and 4 MiB.
	HistoryCount int
	HistoryBytes int
	// DedupeIDs is how many recent publish ids each room remembers to acknowledge retries without
	// delivering them twice. Default 1000.
	DedupeIDs int
	// DedupeClientIDs is how many of its own recent publish ids each of a room's latest
	// publishers keeps remembered besides (so a busy room does not forget a quiet client's id
	// before its retry arrives); 0: the room's window only. Default 32.
	DedupeClientIDs int
	// SendQueue is how many frames may wait for one slow connection before it is closed with 4008.
	// Default 1024.
	SendQueue int
	// SendQueueBytes is how much memory the messages waiting for one connection may hold before it
	// is closed with 4008, in bytes: a message counts its size (about three times that for one of
	// at most 8 KiB, which is also framed once for every receiver) plus a few hundred bytes. A
	// resume's replay of the history is not counted (HistoryBytes bounds it), and a first frame
	// always fits. Default 16 MiB.
	SendQueueBytes int
	// EdgeSendQueue and EdgeSendQueueBytes are SendQueue and SendQueueBytes for a router's edge
	// leg, which carries every client the router has in the room: their own frames (welcomes,
	// acks, replays) besides the room's. A leg that falls behind is dropped with 4008 and its
	// router re-attaches it. Defaults 32768 and 64 MiB.
	EdgeSendQueue      int
	EdgeSendQueueBytes int
	// WriteTimeout bounds one write to a client. Default 10s.
	WriteTimeout time.Duration
	// PingInterval is how often idle connections are pinged; a connection that answers nothing
	// for 2.5 intervals is closed. Default 30s.
	PingInterval time.Duration
	// RoomIdle is how long an empty room is kept (history and all) before it is reclaimed.
	// Default 5m.
	RoomIdle time.Duration
	// MaxRooms bounds the rooms one node holds; a new room beyond it is refused with 429.
	// Default 100000.
	MaxRooms int
	// MaxRoomConns bounds the connections of one room; more are refused with 429. Default 50000.
	MaxRoomConns int
	// MaxAddrConns bounds the connections (WebSocket and stream sources) open from one client
	// address; more are refused with 429. Default 1000.
	MaxAddrConns int
	// MaxHandshakes bounds the WebSocket handshakes in progress at once (from the request to the
	// welcome); more are refused with 503 "overloaded" and Retry-After, so that a storm of
	// reconnects becomes a ramp. 0: no bound. Default 1024.
	MaxHandshakes int
	// TrustedProxies are hops (load balancers) whose X-Forwarded-For names the client's address.
	// Routers of the cluster are trusted hops without being listed (other nodes are not: they
	// never proxy a client).
	TrustedProxies []netip.Prefix
	// RoomCreateRate bounds how many rooms one client address (an IPv6 /64) may have created on
	// this node per second, with bursts of RoomCreateBurst; a WebSocket that would create one
	// beyond it is refused with 429 (joining a room the node holds is not counted). An empty room
	// is kept RoomIdle, so this bounds the rooms one address can hold open to about
	// RoomCreateRate × RoomIdle. 0 turns the bound off. Defaults 10/s and 100.
	RoomCreateRate  float64
	RoomCreateBurst int
	// PublishRate bounds the messages one connection may publish per second, with bursts of
	// PublishBurst; a publish beyond it gets an error frame rate_limited and is not delivered.
	// Defaults 100/s and 200.
	PublishRate  float64
	PublishBurst int
	// MaxMemory: while the process holds more than this many bytes, new rooms are refused with
	// 429 (rooms it holds keep working, and rooms handed to it are taken). 0 turns the guard off.
	// Default 80% of the container's memory limit, or of the machine's memory.
	MaxMemory uint64
	// MemoryBudget bounds, in bytes, the memory the node keeps for its clients, counted as it is
	// kept: room history (rooms received in hand-offs included), messages waiting in send queues,
	// remembered publish ids. A publish that would grow it past the bound is refused (error frame,
	// or ERR line, `overloaded`; the room keeps what it accepted before), as is a new room (429).
	// So is anything that would grow while the process holds more than MaxMemory. A room handed
	// over is always taken, and counted: the cluster holds it already (its sender frees as much),
	// and a refused one would leave its owner to start it afresh, its state lost; past the bound,
	// its growth is refused like any room's. 0: half of MaxMemory (the collector lets the heap
	// grow to about twice what is live), or unbounded when MaxMemory is 0. Default 0.
	MemoryBudget uint64
	// PresenceAnnounceMax is the room size up to which presence is sent as join/leave events;
	// above it, as one interval summary per PresenceInterval. Defaults 100 and 1s.
	PresenceAnnounceMax int
	PresenceInterval    time.Duration
	// IngestMaxFrame is the largest frame a TCP stream source may send, in bytes. Default 1 MiB.
	IngestMaxFrame int
	// MaxRoomSources bounds the TCP stream sources of one room. Default 16.
	MaxRoomSources int
	// IngestHandshake bounds how long a source may take to send its handshake line. Default 5s.
	IngestHandshake time.Duration
	// IngestIdle closes a source that sends nothing for this long. Default 2m.
	IngestIdle time.Duration
	// IngestRate bounds one source's payload bytes per second; a faster source is slowed down
	// (the node reads it no faster: TCP backpressure), never cut off. Bursts of an eighth of a
	// second's worth, or one maximal frame, pass. Default 64 MiB/s.
	IngestRate int
	// HandoffTimeout bounds one hand-off call to the new owner. Default 5s.
	HandoffTimeout time.Duration
	// HandoffHold is how long a publish waits while its room is being handed off; it then fails
	// as moved. Default HandoffTimeout + 1s.
	HandoffHold time.Duration
	// ArriveTimeout is how long a room this node gained waits for its previous owner to hand it
	// over (while that owner is alive but does not answer) before starting afresh with a new
	// epoch. Default 5s.
	ArriveTimeout time.Duration
	// FenceWait is how long a hand-off receiver waits for its own placement to name it the owner
	// of the rooms it is sent, before refusing them. Default 2s.
	FenceWait time.Duration
	// PeerKey, when set, signs and checks node-to-node calls (HMAC-SHA256). Derive it from the
	// cluster secret; every node needs the same.
	PeerKey []byte
	// PeerAcceptKeys are more keys whose signatures are accepted (never signed with), while the
	// cluster secret is rotated.
	PeerAcceptKeys [][]byte
	// StaleAfter: a node that did not run for this long (a pause, a VM stall) may have been
	// declared dead and its rooms started elsewhere, so it asks its peers and drops every room
	// if one took over (see package pause). Keep it below the ring's failure-detection time
	// (suspicion: 4 × 250 ms by default). Default 1s.
	StaleAfter time.Duration
	// Quarantine is how long a node that woke from such a pause creates no room, while gossip
	// brings its ring up to date. Default 3s.
	Quarantine time.Duration
	// RoomReplicas is how many nodes besides its owner keep each room (its heirs: see package
	// replica); a message is acked once they hold it, and a crash of the owner loses nothing
	// acknowledged. 0 turns replication off (a crash resets its rooms). Default 1.
	RoomReplicas int
	// ReplicaTimeout is how long a replica whose stream broke still holds back its rooms' acks,
	// before they go on without it (the rooms counted under-replicated). Default 5s.
	ReplicaTimeout time.Duration
	// MinorityHold: a node that loses touch with most of the cluster at once (a partition cut it
	// off, or node-to-node calls are blocked) takes no writes for up to this long, unless enough
	// nodes answer again sooner; the majority meanwhile serves its rooms (see package quorum).
	// 0 turns the rule off: both sides of a partition take writes. Default 30s.
	MinorityHold time.Duration
	// HeartbeatInterval is how often a node calls every other node to know whether it still
	// reaches them; one unheard for 4 intervals is out of reach. Default 250ms.
	HeartbeatInterval time.Duration
	// StatsInterval is how often room and connection counts are gossiped. Default 2s.
	StatsInterval time.Duration
	// APIKeys are keys a trusted backend may give as Authorization: Bearer on the server API,
	// for every room and with publishing allowed (its messages' client is ""). With APIKeys but
	// no Auth, the server API requires one.
	APIKeys []string
	// APIPublishRate bounds the server API publishes one client address may make per second,
	// with bursts of APIPublishBurst (more: 429); 0 turns the bound off. Defaults 1000/s and 2000.
	APIPublishRate  float64
	APIPublishBurst int
	// APITimeout bounds how long a server API publish waits for its message to be committed
	// (sequenced, replicated, delivered) before it answers 503. Default HandoffHold + ReplicaTimeout.
	APITimeout time.Duration
	// APIHistoryDefault and APIHistoryMax are the default and the largest limit of
	// GET /v1/rooms/{room}/messages. Defaults 100 and 1000.
	APIHistoryDefault int
	APIHistoryMax     int
	// APIPresenceMax caps the client ids GET /v1/rooms/{room}/presence lists (count is exact).
	// Default 1000.
	APIPresenceMax int
	// WebhookURL, when set, turns webhooks on: every room's owner POSTs its events there (see
	// package webhook), signed with WebhookSecret.
	WebhookURL    string
	WebhookSecret []byte
	// WebhookEvents are the event types sent. Default room.occupied, room.vacated, member.join,
	// member.leave (add message for every message).
	WebhookEvents map[string]bool
	// WebhookMaxBytes bounds each room's outbox of undelivered events, in bytes of their JSON
	// (counted in the memory budget too): past it, or with the budget spent, while a receiver is
	// down, the oldest events are dropped (counted in roost_webhook_events_total{result="dropped"}
	// and logged); publishes are never refused for it. Default 1 MiB.
	WebhookMaxBytes int
	// WebhookBatch bounds the events of one POST, and WebhookBatchBytes their JSON (a first
	// event always goes, however large). Defaults 100 and 256 KiB.
	WebhookBatch      int
	WebhookBatchBytes int
	// WebhookTimeout bounds one POST, the receiver's answer included. Default 5s.
	WebhookTimeout time.Duration
	// WebhookBackoffMin and WebhookBackoffMax bound the delay before a failed batch is posted
	// again: doubled on every failure, with jitter. Defaults 500ms and 30s.
	WebhookBackoffMin time.Duration
	WebhookBackoffMax time.Duration
	// WebhookConcurrency is how many rooms' batches are posted at once. Default 8.
	WebhookConcurrency int
	// WebhookGrace is how long a room that moved here (a hand-off, or a crash of its owner)
	// waits for its members to reconnect: their reconnections are not new joins, and those not
	// back by then leave. Default 15s.
	WebhookGrace time.Duration
	// Auth checks client and stream-source tokens; nil runs the node open.
	Auth *auth.Verifier
	// Origins are the browser origins allowed to open WebSockets; the zero value allows any.
	Origins auth.Origins
	// PeerTLS configures calls to other nodes when they serve TLS (trusted CAs); nil uses the
	// system's roots.
	PeerTLS *tls.Config
	// Logger receives the node's logs. Default slog.Default().
	Logger *slog.Logger

	clock func() time.Duration // the watchdog's monotonic clock; nil: the process's (tests jump it)
}

// DefaultConfig returns the defaults documented on Config's fields.
func DefaultConfig() Config {
	return Config{
		MaxFrame:            1 << 20,
		HistoryCount:        1000,
		HistoryBytes:        4 << 20,
		DedupeIDs:           1000,
		DedupeClientIDs:     32,
		SendQueue:           1024,
		SendQueueBytes:      16 << 20,
		EdgeSendQueue:       32768,
		EdgeSendQueueBytes:  64 << 20,
		WriteTimeout:        10 * time.Second,
		PingInterval:        30 * time.Second,
		RoomIdle:            5 * time.Minute,
		MaxRooms:            100_000,
		MaxRoomConns:        50_000,
		MaxAddrConns:        1000,
		MaxHandshakes:       1024,
		RoomCreateRate:      10,
		RoomCreateBurst:     100,
		PublishRate:         100,
		PublishBurst:        200,
		MaxMemory:           limit.DefaultMemoryLimit(),
		PresenceAnnounceMax: 100,
		PresenceInterval:    time.Second,
		StatsInterval:       2 * time.Second,
		MinorityHold:        30 * time.Second,
		RoomReplicas:        1,
		ReplicaTimeout:      5 * time.Second,
		HeartbeatInterval:   250 * time.Millisecond,
		StaleAfter:          time.Second,
		Quarantine:          3 * time.Second,
		HandoffTimeout:      5 * time.Second,
		HandoffHold:         6 * time.Second,
		ArriveTimeout:       5 * time.Second,
		FenceWait:           2 * time.Second,
		IngestMaxFrame:      1 << 20,
		MaxRoomSources:      16,
		IngestHandshake:     5 * time.Second,
		IngestIdle:          2 * time.Minute,
		IngestRate:          64 << 20,
		APIPublishRate:      1000,
		APIPublishBurst:     2000,
		APITimeout:          11 * time.Second,
		APIHistoryDefault:   100,
		APIHistoryMax:       1000,
		APIPresenceMax:      1000,
		WebhookEvents:       map[string]bool{"room.occupied": true, "room.vacated": true, "member.join": true, "member.leave": true},
		WebhookMaxBytes:     1 << 20,
		WebhookBatch:        100,
		WebhookBatchBytes:   256 << 10,
		WebhookTimeout:      5 * time.Second,
		WebhookBackoffMin:   500 * time.Millisecond,
		WebhookBackoffMax:   30 * time.Second,
		WebhookConcurrency:  8,
		WebhookGrace:        15 * time.Second,
	}
}

// Validate reports the first field that cannot work.
func (c Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxFrame", c.MaxFrame}, {"HistoryCount", int64(c.HistoryCount)}, {"HistoryBytes", int64(c.HistoryBytes)},
		{"DedupeIDs", int64(c.DedupeIDs)}, {"SendQueue", int64(c.SendQueue)}, {"SendQueueBytes", int64(c.SendQueueBytes)},
		{"EdgeSendQueue", int64(c.EdgeSendQueue)}, {"EdgeSendQueueBytes", int64(c.EdgeSendQueueBytes)},
		{"MaxRooms", int64(c.MaxRooms)},
		{"MaxRoomConns", int64(c.MaxRoomConns)}, {"MaxAddrConns", int64(c.MaxAddrConns)},
		{"PublishRate", int64(c.PublishRate * 1000)}, {"PublishBurst", int64(c.PublishBurst)}, {"PresenceAnnounceMax", int64(c.PresenceAnnounceMax)},
		{"WriteTimeout", int64(c.WriteTimeout)}, {"PingInterval", int64(c.PingInterval)}, {"RoomIdle", int64(c.RoomIdle)},
		{"PresenceInterval", int64(c.PresenceInterval)}, {"StatsInterval", int64(c.StatsInterval)},
		{"IngestMaxFrame", int64(c.IngestMaxFrame)}, {"MaxRoomSources", int64(c.MaxRoomSources)},
		{"IngestHandshake", int64(c.IngestHandshake)}, {"IngestIdle", int64(c.IngestIdle)},
		{"IngestRate", int64(c.IngestRate)},
		{"HandoffTimeout", int64(c.HandoffTimeout)}, {"HandoffHold", int64(c.HandoffHold)},
		{"ArriveTimeout", int64(c.ArriveTimeout)}, {"FenceWait", int64(c.FenceWait)},
		{"StaleAfter", int64(c.StaleAfter)}, {"Quarantine", int64(c.Quarantine)},
		{"HeartbeatInterval", int64(c.HeartbeatInterval)}, {"ReplicaTimeout", int64(c.ReplicaTimeout)},
		{"APITimeout", int64(c.APITimeout)}, {"APIHistoryDefault", int64(c.APIHistoryDefault)},
		{"APIHistoryMax", int64(c.APIHistoryMax)}, {"APIPresenceMax", int64(c.APIPresenceMax)},
		{"WebhookMaxBytes", int64(c.WebhookMaxBytes)}, {"WebhookBatch", int64(c.WebhookBatch)}, {"WebhookBatchBytes", int64(c.WebhookBatchBytes)},
		{"WebhookTimeout", int64(c.WebhookTimeout)}, {"WebhookBackoffMin", int64(c.WebhookBackoffMin)},
		{"WebhookBackoffMax", int64(c.WebhookBackoffMax)}, {"WebhookConcurrency", int64(c.WebhookConcurrency)},
		{"WebhookGrace", int64(c.WebhookGrace)},
	} {
		if f.v <= 0 {
			return fmt.Errorf("node: %s must be positive, got %d", f.name, f.v)
		}
	}
	if c.MaxHandshakes < 0 {
		return fmt.Errorf("node: MaxHandshakes must not be negative (0: no bound), got %d", c.MaxHandshakes)
	}
	if c.WebhookURL != "" {
		if u, err := url.Parse(c.WebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("node: WebhookURL %q must be an http:// or https:// URL", c.WebhookURL)
		}
		if len(c.WebhookEvents) == 0 {
			return errors.New("node: WebhookEvents names no event type")
		}
	}
	if c.WebhookBackoffMin > c.WebhookBackoffMax {
		return fmt.Errorf("node: WebhookBackoffMin (%s) must not exceed WebhookBackoffMax (%s)", c.WebhookBackoffMin, c.WebhookBackoffMax)
	}
	if c.APIHistoryDefault > c.APIHistoryMax {
		return fmt.Errorf("node: APIHistoryDefault (%d) must not exceed APIHistoryMax (%d)", c.APIHistoryDefault, c.APIHistoryMax)
	}
	if c.APIPublishRate < 0 || c.APIPublishRate > 0 && c.APIPublishBurst <= 0 {
		return fmt.Errorf("node: APIPublishRate must not be negative (0: off) and APIPublishBurst positive, got %g and %d", c.APIPublishRate, c.APIPublishBurst)
	}
	for i, k := range c.APIKeys {
		if len(k) < 16 {
			return fmt.Errorf("node: APIKeys[%d] is %d bytes; an API key needs at least 16", i, len(k))
		}
	}
	if c.RoomReplicas < 0 {
		return fmt.Errorf("node: RoomReplicas must not be negative (0: off), got %d", c.RoomReplicas)
	}
	if c.DedupeClientIDs < 0 {
		return fmt.Errorf("node: DedupeClientIDs must not be negative (0: off), got %d", c.DedupeClientIDs)
	}
	if c.MinorityHold < 0 {
		return fmt.Errorf("node: MinorityHold must not be negative (0: off), got %s", c.MinorityHold)
	}
	if c.RoomCreateRate < 0 || c.RoomCreateRate > 0 && c.RoomCreateBurst <= 0 {
		return fmt.Errorf("node: RoomCreateRate must not be negative (0: off) and RoomCreateBurst positive, got %g and %d", c.RoomCreateRate, c.RoomCreateBurst)
	}
	return nil
}

// roomConfig is what the node's rooms and connections share.
func (c Config) roomConfig(node string, gate room.Gate, q room.Quorum, m room.Metrics) *room.Config {
	return &room.Config{
		Node:                node,
		HistoryCount:        c.HistoryCount,
		HistoryBytes:        c.HistoryBytes,
		DedupeIDs:           c.DedupeIDs,
		DedupeClientIDs:     c.DedupeClientIDs,
		MaxConns:            c.MaxRoomConns,
		MaxSources:          c.MaxRoomSources,
		PresenceAnnounceMax: c.PresenceAnnounceMax,
		PresenceInterval:    c.PresenceInterval,
		HoldWrites:          c.HandoffHold,
		SendQueue:           c.SendQueue,
		SendQueueBytes:      c.SendQueueBytes,
		LegSendQueue:        c.EdgeSendQueue,
		LegSendQueueBytes:   c.EdgeSendQueueBytes,
		Budget:              limit.NewBudget(c.memoryBudget(), limit.NewMemory(c.MaxMemory)),
		WriteTimeout:        c.WriteTimeout,
		PingInterval:        c.PingInterval,
		Gate:                gate,
		Quorum:              q,
		Metrics:             m,
	}
}

// memoryBudget is MemoryBudget with its default filled in.
func (c Config) memoryBudget() uint64 {
	if c.MemoryBudget > 0 {
		return c.MemoryBudget
	}
	return limit.DefaultBudget(c.MaxMemory)
}

// MaxPeerBody bounds a node-to-node body: the largest hand-off batch.
func (c Config) MaxPeerBody() int64 {
	return handoff.MaxBody(c.HistoryBytes+2*c.WebhookMaxBytes, max(c.MaxFrame, int64(c.IngestMaxFrame)), c.DedupeIDs+c.DedupeClientIDs*room.DedupeClients)
}
