package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/internal/httpapi"
	"github.com/roost-dev/roost/internal/loop"
	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/node/edge"
	"github.com/roost-dev/roost/node/handoff"
	"github.com/roost-dev/roost/node/pause"
	"github.com/roost-dev/roost/node/quorum"
	"github.com/roost-dev/roost/node/replica"
	"github.com/roost-dev/roost/node/room"
	"github.com/roost-dev/roost/node/webhook"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// Ring is what a node needs from its membership: who it is, the current placement, word of
// changes, and a way to gossip its own counters.
type Ring interface {
	ID() string
	Placement() *ring.Placement
	Subscribe() (<-chan *ring.Placement, func())
	Ready() bool
	UpdateMeta(ctx context.Context, change func(*ring.Meta)) error
	// GoneSince reports how long ago id was last seen leave or declared dead, if ever.
	GoneSince(id string) (time.Duration, bool)
}

// Errors the node answers with.
var (
	// ErrNotOwner: this node's placement gives the room to another node.
	ErrNotOwner = handoff.ErrNotOwner
	// ErrTooManyRooms: the node holds MaxRooms rooms.
	ErrTooManyRooms = errors.New("too many rooms on this node")
	// ErrClosed: the node is shutting down.
	ErrClosed = errors.New("node closed")
	// ErrMemory: the node is near its memory limit and creates no room.
	ErrMemory = errors.New("node near its memory limit")
	// ErrStale: the node has not yet joined the ring, or was paused and has not caught up with it.
	ErrStale = room.ErrStale
)

// Node owns rooms and serves their clients. It wires the parts: the room table (package room),
// the pause watchdog (package pause), hand-offs (package handoff), and the HTTP and TCP surfaces
// its clients and peers reach it on.
type Node struct {
	cfg      Config
	id       string
	ring     Ring
	log      *slog.Logger
	rooms    *room.Table
	roomCfg  *room.Config
	watchdog *pause.Watchdog
	mover    *handoff.Mover
	quorum   *quorum.Tracker
	replicas *replica.Replicator // nil: replication off
	hooks    *webhook.Dispatcher // nil: webhooks off
	edge     *edge.Server        // routers' edge legs
	peers    *peer.Client        // node-to-node calls, signed
	metrics  *metrics
	upgrader websocket.Upgrader
	conns    atomic.Int64
	door     *httpapi.Door  // lets clients' WebSockets in
	perAddr  *limit.PerAddr // connections per client address, shared by door and stream ingest
	memory   *limit.Memory  // refuses new rooms near the memory limit
	apiRate  *limit.Rate    // server API publishes per client address
	draining atomic.Bool
	// undemoting: a loop settles the rooms demoted in a minority (see undemote).
	undemoting atomic.Bool

	mu        sync.Mutex // guards closed, listeners and handlers.Add
	closed    bool
	listeners []net.Listener
	handlers  sync.WaitGroup // open client connections

	ctx    context.Context // ends when the node closes: the owner of connections' waits
	cancel context.CancelFunc
	wg     sync.WaitGroup // background loops
}

// New starts a node on the membership r. Close it to close every connection and stop its loops.
func New(cfg Config, r Ring) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Node{
		cfg:      cfg,
		id:       r.ID(),
		ring:     r,
		log:      cfg.Logger.With("node", r.ID()),
		rooms:    room.NewTable(),
		upgrader: httpapi.NewUpgrader(),
		perAddr:  limit.NewPerAddr(cfg.MaxAddrConns),
		memory:   limit.NewMemory(cfg.MaxMemory),
		apiRate:  limit.NewRate(cfg.APIPublishRate, cfg.APIPublishBurst),
		peers:    peer.New(cfg.PeerKey, cfg.PeerAcceptKeys, cfg.MaxPeerBody(), cfg.PeerTLS),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.metrics = newMetrics(n)
	n.door = &httpapi.Door{Auth: cfg.Auth, Upgrader: &n.upgrader, Refused: n.metrics.refused, Log: n.log,
		Limits: &limit.Door{Origins: cfg.Origins, PerAddr: n.perAddr, Handshakes: limit.NewInFlight(cfg.MaxHandshakes), Rooms: limit.NewRate(cfg.RoomCreateRate, cfg.RoomCreateBurst),
			Hops: limit.Hops{Prefixes: cfg.TrustedProxies, Member: func(a netip.Addr) bool { return n.ring.Placement().IsRouterHost(a) }}}}
	n.watchdog = pause.New(pause.Config{
		StaleAfter: cfg.StaleAfter, Quarantine: cfg.Quarantine, Ring: r, Peers: n.peers, Log: n.log,
		Held: n.rooms.Len, Drop: n.dropAll, Pauses: n.metrics.pauses, Decision: n.metrics.pauseDecision,
		Clock: cfg.clock,
	})
	n.quorum = quorum.New(quorum.Config{Ring: r, Peers: n.peers, Interval: cfg.HeartbeatInterval, Hold: cfg.MinorityHold,
		Log: n.log, Changed: n.minorityChanged})
	n.roomCfg = cfg.roomConfig(n.id, n.watchdog, n.quorum, room.Metrics{
		Messages: n.metrics.messages, Duplicates: n.metrics.dedup, Deliveries: n.metrics.deliveries,
		SlowConsumers: n.metrics.drops.WithLabelValues("slow_consumer"), Overloaded: n.metrics.refused.WithLabelValues("overloaded"),
	})
	if cfg.WebhookURL != "" {
		n.hooks = webhook.New(webhook.Config{URL: cfg.WebhookURL, Secret: cfg.WebhookSecret,
			Room: func(name string) webhook.Outbox {
				if r := n.rooms.Get(name); r != nil {
					return r
				}
				return nil
			},
			BatchEvents: cfg.WebhookBatch, BatchBytes: cfg.WebhookBatchBytes, Timeout: cfg.WebhookTimeout,
			BackoffMin: cfg.WebhookBackoffMin, BackoffMax: cfg.WebhookBackoffMax, Concurrency: cfg.WebhookConcurrency,
			Log: n.log, Metrics: n.metrics.webhookMetrics(n)})
		n.roomCfg.Webhook = &room.Webhook{Types: cfg.WebhookEvents, MaxBytes: cfg.WebhookMaxBytes, Grace: cfg.WebhookGrace, Notify: n.hooks.Notify}
		n.wg.Go(func() { n.hooks.Run(n.ctx) })
		if len(cfg.WebhookSecret) == 0 {
			n.log.Warn("webhooks unsigned: no --webhook-secret, so X-Roost-Signature is an HMAC with an empty key and a receiver cannot tell roost's POSTs from anyone's")
		}
	}
	var promote func(context.Context, string) (*room.Room, error)
	arrived := func(string) {}
	var holds func(*room.Room, string) uint64
	var complete func(string, room.State) (room.State, bool)
	var seeded func(context.Context, []*room.Room)
	var copied func(string) (handoff.Copy, bool)
	if cfg.RoomReplicas > 0 {
		n.replicas = replica.New(n.ctx, replica.Config{Ring: r, Rooms: n.rooms, Room: n.roomCfg, Peers: n.peers, Gate: n.watchdog,
			Replicas: cfg.RoomReplicas, ReplicaTimeout: cfg.ReplicaTimeout, DialTimeout: cfg.HandoffTimeout, WriteTimeout: cfg.WriteTimeout,
			MaxFrame: cfg.MaxPeerBody(), Log: n.log, Install: n.install, Writable: n.quorum.Writable, Silent: n.quorum.Silent, Answers: n.quorum.Answers,
			Acquire: func(ctx context.Context, name string) { _, _ = n.mover.Acquire(ctx, name) },
			Metrics: n.replicationMetrics()})
		n.roomCfg.Replicator = n.replicas
		promote, arrived = n.replicas.Promote, n.replicas.Store().Drop
		holds, complete, seeded = n.replicas.Holds, n.replicas.Store().Complete, n.replicas.AwaitSeeded
		copied = func(name string) (handoff.Copy, bool) {
			epoch, term, seq, ok := n.replicas.Store().Position(name)
			return handoff.Copy{Epoch: epoch, Term: term, Seq: seq}, ok
		}
	}
	if drop := arrived; n.hooks != nil {
		arrived = func(name string) {
			drop(name)
			if r := n.rooms.Get(name); r != nil {
				r.Owned() // its members are expected back, and its outbox is delivered from here
			}
		}
	}
	n.edge = edge.New(edge.Config{Auth: cfg.Auth, PublishRate: cfg.PublishRate, PublishBurst: cfg.PublishBurst,
		MaxFrame: cfg.MaxFrame, PingInterval: cfg.PingInterval, Gate: n.watchdog, Refused: n.metrics.refused, Drops: n.metrics.drops, Connects: n.metrics.connects,
		Log: n.log, Owner: func(name string) ring.Member { o, _, _ := n.owner(name); return o }})
	n.mover = handoff.New(handoff.Config{
		Ring: r, Rooms: n.rooms, Room: n.roomCfg, Peers: n.peers, Gate: n.watchdog, Log: n.log,
		Metrics: handoff.Metrics{Handoffs: n.metrics.handoffs, Bytes: n.metrics.handoffBytes, Seconds: n.metrics.handoffSeconds,
			RoomsLost: n.metrics.roomsLost, RoomsGained: n.metrics.roomsGained, Settled: n.metrics.settled,
			Fences: n.metrics.fences, Expired: n.metrics.leaseExpired, Tails: n.metrics.handoffTails},
		Timeout: cfg.HandoffTimeout, FenceWait: cfg.FenceWait, ArriveTimeout: cfg.ArriveTimeout,
		Silent: n.quorum.Silent, Heard: n.quorum.Heard, Promote: promote, Arrived: arrived, Holds: holds, Complete: complete, Seeded: seeded, Copied: copied, Admit: n.admit, Done: n.ctx.Done(),
	})
	// Subscribe before reading the current placement, so none adopted in between is missed:
	// finding a room's previous owner depends on having seen the placement where it was.
	changes, stopChanges := r.Subscribe()
	n.mover.Remember(r.Placement())
	n.wg.Add(5)
	if n.replicas != nil {
		n.wg.Go(func() { n.replicas.Run(n.ctx) })
	}
	go func() { defer n.wg.Done(); n.watchdog.Run(n.ctx) }()
	go func() { defer n.wg.Done(); n.quorum.Run(n.ctx) }()
	go func() { defer n.wg.Done(); n.watchRing(n.ctx, changes, stopChanges) }()
	go func() { defer n.wg.Done(); n.reclaimIdle(n.ctx) }()
	go func() {
		defer n.wg.Done()
		// At once: /v1/cluster says room_replicas from the start, and routers use edge legs.
		ctx, cancel := context.WithTimeout(n.ctx, time.Second)
		_ = r.UpdateMeta(ctx, func(m *ring.Meta) { m.Replicas, m.Edge = cfg.RoomReplicas, true })
		cancel()
		httpapi.GossipStats(n.ctx, r, cfg.StatsInterval, n.log, func(m *ring.Meta) {
			m.Rooms, m.Conns, m.Replicas = n.rooms.Len(), n.clientConns(), cfg.RoomReplicas
			m.Edge, m.Edges = true, n.edge.Legs()
			if n.replicas != nil {
				m.Under = n.replicas.UnderReplicated()
			}
		})
	}()
	return n, nil
}

// Close closes every client connection with 1001 (after what is queued to it) and waits for
// them, then stops the node's loops. It does not hand rooms off: that is Drain's job.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.cancel()
	n.wg.Wait() // no hand-off in flight from here on
	n.mu.Lock()
	for _, ln := range n.listeners {
		ln.Close()
	}
	n.mu.Unlock()
	bye := room.Farewell{Code: protocol.CloseGoingAway, Flush: true, Reason: "node shutting down",
		Line: "ERR going_away the node is shutting down; resolve the room again and reconnect"}
	for _, r := range n.rooms.All() {
		n.rooms.Remove(r)
		r.Close(bye)
	}
	n.handlers.Wait()
	n.peers.Close()
	return nil
}

// isClosed reports whether Close has begun: it ends n.ctx first thing.
func (n *Node) isClosed() bool { return n.ctx.Err() != nil }

// track counts a connection handler in, unless the node is closing.
func (n *Node) track() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.handlers.Add(1)
	return true
}

// admit says whether a room may be created afresh here.
func (n *Node) admit() error {
	switch {
	case n.isClosed():
		return ErrClosed
	case n.rooms.Len() >= n.cfg.MaxRooms:
		return ErrTooManyRooms
	case n.memory.Over() || n.roomCfg.Budget.Full():
		return ErrMemory
	}
	return nil
}

// owner is the room's owner by this node's placement.
func (n *Node) owner(name string) (ring.Member, *ring.Placement, bool) {
	p := n.ring.Placement()
	m, ok := p.Owner(name)
	return m, p, ok
}

// watchRing hands off the rooms each new placement gives to other nodes, and retries what could
// not be handed off yet.
func (n *Node) watchRing(ctx context.Context, changes <-chan *ring.Placement, stop func()) {
	defer stop()
	retry := time.NewTicker(250 * time.Millisecond)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-changes:
			n.metrics.ringChanges.Inc()
			n.mover.Remember(p)
			if n.replicas != nil {
				n.replicas.Wake() // promote the rooms of a dead owner, seed the new replicas
			}
			n.mover.Rebalance(ctx)
		case <-retry.C:
			if n.mover.Lost() {
				n.mover.Rebalance(ctx)
			}
		}
	}
}

// install puts a room promoted from its replica in the table; false if one is there already.
func (n *Node) install(r *room.Room) bool {
	got, err := n.rooms.GetOrCreate(r.Name(), func() (*room.Room, error) { return r, nil })
	if err != nil || got != r {
		return false
	}
	r.Owned()
	return true
}

// undemote settles the rooms demoted in a minority, once the node is out of it (see
// handoff.Mover.Undemote), asking again every 100 ms until none is left or ctx ends. One runs at
// a time (n.undemoting).
func (n *Node) undemote(ctx context.Context) {
	demoted := func() (out []*room.Room) {
		for _, r := range n.rooms.All() {
			if r.Demoted() {
				out = append(out, r)
			}
		}
		return out
	}
	for {
		for rooms := demoted(); len(rooms) > 0; rooms = demoted() {
			if n.quorum.Writable() {
				var wg sync.WaitGroup
				sem := make(chan struct{}, 32) // rooms asked about at once
				for _, r := range rooms {
					sem <- struct{}{}
					wg.Go(func() { defer func() { <-sem }(); n.mover.Undemote(ctx, r) })
				}
				wg.Wait()
			}
			if loop.Sleep(ctx, 100*time.Millisecond) != nil {
				n.undemoting.Store(false)
				return
			}
		}
		n.undemoting.Store(false)
		// Demoted again since the last look, by a minority whose end found this loop running:
		// go on, unless that end started another.
		if len(demoted()) == 0 || !n.undemoting.CompareAndSwap(false, true) {
			return
		}
	}
}

// minorityChanged hears the node fall into a minority or leave it. Falling in, every room is
// demoted (if the partition heals with another copy of it elsewhere, that copy took the writes
// this node could not, and wins): it sequences and commits nothing more. Leaving it, the demoted
// rooms write and commit again once no other node holds them (undemote).
func (n *Node) minorityChanged(minority bool) {
	if !minority {
		if n.undemoting.CompareAndSwap(false, true) {
			n.wg.Go(func() { n.undemote(n.ctx) })
		}
		return
	}
	for _, r := range n.rooms.All() {
		r.Demote()
	}
}

// reclaimIdle forgets rooms nobody has used for RoomIdle.
func (n *Node) reclaimIdle(ctx context.Context) {
	every := max(min(n.cfg.RoomIdle/4, 30*time.Second), 10*time.Millisecond)
	loop.Every(ctx, every, func(now time.Time) {
		for _, r := range n.rooms.All() {
			if r.ReclaimIfIdle(now.Add(-n.cfg.RoomIdle)) {
				n.rooms.Remove(r)
				n.metrics.reclaimed.Inc()
				n.log.Debug("idle room reclaimed", "room", r.Name())
			}
		}
	})
}

// dropAll closes every room after a pause; their clients reconnect to the owner.
func (n *Node) dropAll(paused time.Duration, why string) {
	rooms := n.rooms.All()
	n.log.Warn("this node was paused longer than the failure timeout and its rooms may be served elsewhere; dropping every room",
		"paused", paused.Round(time.Millisecond), "rooms", len(rooms), "why", why)
	p := n.ring.Placement()
	for _, r := range rooms {
		o, _ := p.Owner(r.Name())
		n.rooms.Remove(r)
		r.Close(room.Moved(o, true)) // after what is queued: every ack the copy gave reaches its client
		n.metrics.drops.WithLabelValues("stale_node").Inc()
	}
}

// Drain hands every room off to its owner on the ring without this node: it marks the node
// draining in gossip (so every member re-places its rooms), waits until the rooms are gone or
// ctx ends, and turns the node not-ready at once. The node keeps serving what it still holds.
func (n *Node) Drain(ctx context.Context) error {
	n.draining.Store(true)
	start := time.Now()
	held := n.rooms.Len()
	if err := n.ring.UpdateMeta(ctx, func(m *ring.Meta) { m.Draining = true }); err != nil {
		n.log.Warn("could not gossip draining", "err", err)
	}
	n.log.Info("draining", "rooms", held)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n.rooms.Len() > 0 {
		if len(n.ring.Placement().Nodes()) == 0 {
			return fmt.Errorf("drain: no other node to hand %d rooms to", n.rooms.Len())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain: %d of %d rooms not handed off before the deadline", n.rooms.Len(), held)
		case <-t.C:
		}
	}
	n.log.Info("drained", "rooms", held, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// Rooms lists the rooms this node holds, for operators and tests.
func (n *Node) Rooms() []room.Stats {
	rs := n.rooms.All()
	out := make([]room.Stats, len(rs))
	for i, r := range rs {
		out[i] = r.Stats()
	}
	return out
}

// HasRoom reports whether the node holds room now.
func (n *Node) HasRoom(name string) bool { return n.rooms.Get(name) != nil }

// signed serves a node-to-node call once its signature holds (checked from the headers, before
// the body is read), with its body read within peer.Serve's bounds on size, time and calls in
// flight. Calls are signed for the host:port this node advertises; refusals are counted.
func (n *Node) signed(h func(w http.ResponseWriter, r *http.Request, body []byte)) http.HandlerFunc {
	return n.peers.Serve(n.selfHTTP, func(reason string) { n.metrics.refused.WithLabelValues(reason).Inc() }, h)
}

// selfHTTP is the host:port this node advertises, which peers sign their calls for.
func (n *Node) selfHTTP() string {
	if s, ok := n.ring.(interface{ Self() ring.Member }); ok {
		return s.Self().HTTP
	}
	m, _ := n.ring.Placement().Member(n.id)
	return m.HTTP
}

func newClientID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "c-" + hex.EncodeToString(b[:])
}

// Edges is how many routers' edge legs the node serves (one per router and room).
func (n *Node) Edges() int {
	if n.edge == nil {
		return 0
	}
	return n.edge.Legs()
}

func (n *Node) edgeClients() int {
	if n.edge == nil {
		return 0
	}
	return n.edge.Clients()
}

// clientConns is how many clients the node serves: on connections of their own, and through
// routers' edge legs.
func (n *Node) clientConns() int { return int(n.conns.Load()) + n.edgeClients() }
