package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
	"golang.org/x/sync/singleflight"
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
	ErrNotOwner = errors.New("not the owner of this room")
	// ErrTooManyRooms: the node holds MaxRooms rooms.
	ErrTooManyRooms = errors.New("too many rooms on this node")
	// ErrClosed: the node is shutting down.
	ErrClosed = errors.New("node closed")
	// ErrMemory: the node is near its memory limit and creates no room.
	ErrMemory = errors.New("node near its memory limit")
	// ErrStale: the node has not yet joined the ring, or was paused and has not caught up with it.
	ErrStale = errors.New("node catching up with the ring")
)

// Node owns rooms and serves their clients.
type Node struct {
	cfg      Config
	id       string
	ring     Ring
	log      *slog.Logger
	rooms    *rooms
	metrics  *metrics
	upgrader websocket.Upgrader
	conns    atomic.Int64
	door     *limit.Door    // browser origins and connections per client address
	perAddr  *limit.PerAddr // connections per client address, shared by door and stream ingest
	memory   *limit.Memory  // refuses new rooms near the memory limit

	mu        sync.Mutex // guards closed, listeners and handlers.Add
	closed    bool
	listeners []net.Listener
	handlers  sync.WaitGroup // open WebSocket connections

	peers    *peer.Client       // node-to-node calls, signed
	arrivals singleflight.Group // one acquisition per room at a time
	draining atomic.Bool

	start           time.Time                     // the monotonic base of lastTick
	lastTick        atomic.Int64                  // when the watchdog last ran, as time since start
	quarantineUntil atomic.Int64                  // no room is created before this, as time since start
	ticked          atomic.Pointer[chan struct{}] // closed at the watchdog's next tick

	takeMu   sync.Mutex
	tookOver map[string]time.Time // previous owners whose rooms were started afresh, and when

	pastMu sync.Mutex
	past   []*ring.Placement // the last few placements, to find a room's previous owners
	alts   []*ring.Placement // the newest one's counterfactuals (see remember)

	ctx    context.Context // ends when the node closes: the owner of connections' waits
	cancel context.CancelFunc
	wg     sync.WaitGroup // background loops
}

// pastPlacements is how many earlier placements are kept to find where a room was.
const pastPlacements = 4

// remember keeps p, and where rooms were just before it, for finding rooms' previous owners.
// Subscriptions deliver only the newest placement, and a node that just joined has seen none
// before its own, so past placements alone can miss where a room is.
func (n *Node) remember(p *ring.Placement) {
	alts := p.Counterfactuals(n.id)
	n.pastMu.Lock()
	defer n.pastMu.Unlock()
	n.past = append(n.past, p)
	if len(n.past) > pastPlacements {
		n.past = n.past[1:]
	}
	n.alts = alts
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
		cfg:   cfg,
		id:    r.ID(),
		ring:  r,
		log:   cfg.Logger.With("node", r.ID()),
		rooms: newRooms(),
		upgrader: websocket.Upgrader{
			// Clients mostly listen: a small read buffer (a publish of more is read in a few
			// reads) keeps an idle connection cheap. Big writes go through the pool.
			ReadBufferSize:  512,
			WriteBufferSize: 1024,
			WriteBufferPool: &sync.Pool{},
			// handleWS checks Config.Origins itself, to answer with a JSON error.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	n.perAddr = limit.NewPerAddr(cfg.MaxAddrConns)
	n.door = &limit.Door{Origins: cfg.Origins, PerAddr: n.perAddr,
		Hops: limit.Hops{Prefixes: cfg.TrustedProxies, Member: func(a netip.Addr) bool { return n.ring.Placement().IsMemberHost(a) }}}
	n.memory = limit.NewMemory(cfg.MaxMemory)
	n.start = time.Now()
	n.tookOver = map[string]time.Time{}
	n.tick()
	n.metrics = newMetrics(n)
	n.peers = peer.New(cfg.PeerKey, cfg.PeerAcceptKeys, cfg.maxPeerBody(), cfg.PeerTLS)
	// Subscribe before reading the current placement, so none adopted in between is missed:
	// finding a room's previous owner depends on having seen the placement where it was.
	changes, stopChanges := r.Subscribe()
	n.remember(r.Placement())
	ctx, cancel := context.WithCancel(context.Background())
	n.ctx, n.cancel = ctx, cancel
	n.wg.Add(4)
	go n.watchdog(ctx)
	go n.watchRing(ctx, changes, stopChanges)
	go n.reclaimIdle(ctx)
	go n.gossipStats(ctx)
	return n, nil
}

// ID is the node's member id.
func (n *Node) ID() string { return n.id }

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
	bye := farewell{code: protocol.CloseGoingAway, flush: true,
		reason: func(string) closeReason { return staticReason("node shutting down") },
		source: func(uint64) string {
			return "ERR going_away the node is shutting down; resolve the room again and reconnect"
		}}
	for _, r := range n.rooms.all() {
		n.rooms.remove(r)
		r.closeAll(bye)
	}
	n.handlers.Wait()
	n.peers.Close()
	return nil
}

// owner is the room's owner by this node's placement.
func (n *Node) owner(room string) (ring.Member, *ring.Placement, bool) {
	p := n.ring.Placement()
	m, ok := p.Owner(room)
	return m, p, ok
}

// watchRing hands off the rooms each new placement gives to other nodes, and retries what could
// not be handed off yet.
func (n *Node) watchRing(ctx context.Context, changes <-chan *ring.Placement, stop func()) {
	defer n.wg.Done()
	defer stop()
	retry := time.NewTicker(250 * time.Millisecond)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-changes:
			n.metrics.ringChanges.Inc()
			n.remember(p)
			n.rebalance(ctx)
		case <-retry.C:
			if n.lost() {
				n.rebalance(ctx)
			}
		}
	}
}

func movedReason(node string) func(epoch string) closeReason {
	return func(epoch string) closeReason {
		return func(lastSent uint64) string {
			b, _ := json.Marshal(protocol.MovedReason{Node: node, Epoch: epoch, Seq: lastSent})
			return string(b)
		}
	}
}

// reclaimIdle forgets rooms nobody has used for RoomIdle.
func (n *Node) reclaimIdle(ctx context.Context) {
	defer n.wg.Done()
	every := min(n.cfg.RoomIdle/4, 30*time.Second)
	t := time.NewTicker(max(every, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, r := range n.rooms.all() {
				if r.reclaimIfIdle(now.Add(-n.cfg.RoomIdle)) {
					n.rooms.remove(r)
					n.metrics.reclaimed.Inc()
					n.log.Debug("idle room reclaimed", "room", r.name)
				}
			}
		}
	}
}

// gossipStats spreads the node's room and connection counts, for /v1/cluster and ctl status.
func (n *Node) gossipStats(ctx context.Context) {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rooms, conns := n.rooms.len(), int(n.conns.Load())
			uctx, cancel := context.WithTimeout(ctx, time.Second)
			if err := n.ring.UpdateMeta(uctx, func(m *ring.Meta) { m.Rooms, m.Conns = rooms, conns }); err != nil && ctx.Err() == nil {
				n.log.Debug("could not gossip stats", "err", err)
			}
			cancel()
		}
	}
}

// Rooms lists the rooms this node holds, for operators and tests.
func (n *Node) Rooms() []Stats {
	rs := n.rooms.all()
	out := make([]Stats, len(rs))
	for i, r := range rs {
		out[i] = r.stats()
	}
	return out
}

// HasRoom reports whether the node holds room now.
func (n *Node) HasRoom(room string) bool { return n.rooms.get(room) != nil }

func newClientID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "c-" + hex.EncodeToString(b[:])
}
