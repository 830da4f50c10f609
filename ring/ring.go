package ring

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
	"github.com/roost-dev/roost/internal/loop"
)

// Ring is this process's membership in the cluster and its current view of placement.
type Ring struct {
	cfg  Config
	log  *slog.Logger
	ml   *memberlist.Memberlist
	self string
	// gossipAddr is the host:port others reach this member's gossip on.
	gossipAddr string

	metaMu sync.Mutex // serialises changes of the local metadata
	meta   atomic.Pointer[Meta]

	placement atomic.Pointer[Placement]
	joined    atomic.Bool
	left      atomic.Bool
	changes   atomic.Uint64 // placement versions adopted, for metrics

	kick chan struct{} // membership changed; cap 1

	seedAddrs []string // cfg.Join with the gossip port where none is given

	feed Feed // each new placement, to the member's parts

	mu   sync.Mutex
	live map[string]Member     // members memberlist lists as alive, copied in its callbacks
	gone map[string]goneMember // members that left or died, kept for operators
	lost map[string]time.Time  // when each member was last seen leave or die, kept for good
	dead map[string]deadMember // members declared dead (not left), to reach again (see reconnect)

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type goneMember struct {
	Member
	at time.Time
}

type deadMember struct {
	gossip string // host:port
	at     time.Time
}

// reconnectFor is how long a member declared dead is looked for again before it is given up.
const reconnectFor = 72 * time.Hour

// New starts gossip, joins the seeds in cfg.Join (retrying in the background until one answers)
// and returns the member. Close it to leave the cluster and stop everything it started.
func New(cfg Config) (*Ring, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	bindHost, bindPort, err := splitPort(cfg.Gossip)
	if err != nil {
		return nil, fmt.Errorf("ring: Gossip: %w", err)
	}
	advHost, advPort := "", 0
	if cfg.Advertise != "" {
		if advHost, advPort, err = splitPort(cfg.Advertise); err != nil {
			return nil, fmt.Errorf("ring: Advertise: %w", err)
		}
	}
	advHost, err = advertiseHost(advHost, bindHost)
	if err != nil {
		return nil, err
	}
	meta := Meta{Role: cfg.Role, HTTP: completeHost(cfg.HTTP, advHost), TLS: cfg.TLS}
	if cfg.Role == RoleNode && cfg.TCP != "" {
		meta.TCP = completeHost(cfg.TCP, advHost)
	}
	if _, err := meta.encode(); err != nil {
		return nil, err
	}

	r := &Ring{
		cfg:  cfg,
		log:  cfg.Logger.With("node", cfg.ID),
		self: cfg.ID,
		kick: make(chan struct{}, 1),
		live: map[string]Member{},
		gone: map[string]goneMember{},
		lost: map[string]time.Time{},
		dead: map[string]deadMember{},
	}
	r.meta.Store(&meta)
	r.placement.Store(NewPlacement(nil, cfg.Placement))

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.ID
	mc.BindAddr, mc.BindPort = bindHost, bindPort
	mc.AdvertiseAddr, mc.AdvertisePort = advHost, bindPort
	if advPort != 0 {
		mc.AdvertisePort = advPort
	}
	mc.ProbeInterval, mc.ProbeTimeout = cfg.ProbeInterval, cfg.ProbeTimeout
	mc.SuspicionMult, mc.SuspicionMaxTimeoutMult = cfg.SuspicionMult, cfg.SuspicionMaxMult
	mc.GossipInterval, mc.GossipNodes = cfg.GossipInterval, cfg.GossipNodes
	mc.PushPullInterval = cfg.PushPull
	mc.DeadNodeReclaimTime = cfg.DeadReclaim
	mc.GossipToTheDeadTime = 5 * time.Second
	mc.TCPTimeout = 2 * time.Second
	if len(cfg.SecretKey) > 0 {
		kr, err := memberlist.NewKeyring(cfg.AcceptKeys, cfg.SecretKey)
		if err != nil {
			return nil, fmt.Errorf("ring: gossip keys: %w", err)
		}
		mc.Keyring = kr
	}
	mc.Delegate = delegate{r}
	mc.Events = delegate{r}
	mc.Logger = newMemberlistLogger(r.log)

	r.ml, err = memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("ring: start gossip on %s: %w", cfg.Gossip, err)
	}
	local := r.ml.LocalNode()
	// Read once, now: memberlist rewrites its local node when the metadata changes.
	r.gossipAddr = net.JoinHostPort(local.Addr.String(), strconv.Itoa(int(local.Port)))
	r.log.Info("gossip started", "role", cfg.Role, "gossip", r.gossipAddr, "http", meta.HTTP, "tcp", meta.TCP)

	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.seedAddrs = seeds(cfg.Join, int(local.Port))
	r.rebuild()
	r.wg.Add(2)
	go r.coalesce(ctx)
	go r.reconnect(ctx)
	if len(cfg.Join) == 0 {
		r.joined.Store(true)
	} else {
		r.wg.Add(1)
		go r.join(ctx)
	}
	return r, nil
}

// ID is this member's name.
func (r *Ring) ID() string { return r.self }

// Self is this member as it advertises itself.
func (r *Ring) Self() Member {
	return Member{ID: r.self, Gossip: r.GossipAddr(), State: StateAlive, Meta: *r.meta.Load()}
}

// GossipAddr is the host:port others reach this member's gossip on.
func (r *Ring) GossipAddr() string { return r.gossipAddr }

// Placement is the current placement snapshot. It never blocks.
func (r *Ring) Placement() *Placement { return r.placement.Load() }

// Ready reports whether the member has joined its seeds and the ring has at least one node.
func (r *Ring) Ready() bool {
	return r.joined.Load() && !r.left.Load() && len(r.Placement().nodes) > 0
}

// Subscribe returns a channel that receives each new placement (only the newest one, if the
// reader is slow) and a function that ends the subscription.
func (r *Ring) Subscribe() (<-chan *Placement, func()) { return r.feed.Subscribe() }

// UpdateMeta changes this member's gossiped metadata and spreads it. A change that affects
// placement (draining) rebuilds the local placement at once, without waiting for gossip.
func (r *Ring) UpdateMeta(ctx context.Context, change func(*Meta)) error {
	r.metaMu.Lock()
	old := *r.meta.Load()
	m := old
	change(&m)
	if m == old {
		r.metaMu.Unlock()
		return nil
	}
	if _, err := m.encode(); err != nil {
		r.metaMu.Unlock()
		return err
	}
	r.meta.Store(&m)
	r.metaMu.Unlock()
	if m.Draining != old.Draining || m.Leaving != old.Leaving {
		r.rebuild()
	}
	timeout := 2 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	return r.ml.UpdateNode(timeout)
}

// Leave tells the cluster this member is going, waiting up to timeout for the news to spread.
// The member stops being ready. Close still has to be called.
func (r *Ring) Leave(timeout time.Duration) error {
	if r.left.Swap(true) {
		return nil
	}
	r.log.Info("leaving the cluster")
	ctx, cancel := context.WithTimeout(context.Background(), timeout/2)
	defer cancel()
	if err := r.UpdateMeta(ctx, func(m *Meta) { m.Leaving = true }); err != nil {
		r.log.Warn("could not announce the leave; others may list this member as dead", "err", err)
	}
	return r.ml.Leave(timeout / 2)
}

// Close leaves the cluster (if Leave was not called) and stops gossip and every goroutine.
// Calling it again does nothing.
func (r *Ring) Close() error {
	return r.shutdown(true)
}

// shutdown stops everything; without leave, the others see a crash.
func (r *Ring) shutdown(leave bool) error {
	err := errors.New("ring: already closed")
	r.closeOnce.Do(func() {
		// Stop the join and coalesce loops first, so nothing is inside memberlist's Join while
		// it leaves and shuts down.
		r.cancel()
		r.wg.Wait()
		if leave {
			_ = r.Leave(time.Second)
		}
		err = r.ml.Shutdown()
	})
	return err
}

// join contacts the seeds until one answers.
func (r *Ring) join(ctx context.Context) {
	defer r.wg.Done()
	seeds := r.seedAddrs
	for attempt := 1; ; attempt++ {
		n, err := r.ml.Join(seeds)
		if n > 0 {
			// Join has merged the seeds' member lists: place them now, so that a member is never
			// ready with a placement of itself alone (it would start rooms others hold).
			r.rebuild()
			r.joined.Store(true)
			r.log.Info("joined the cluster", "seeds", seeds, "contacted", n)
			return
		}
		if attempt == 1 || attempt%10 == 0 {
			r.log.Warn("no seed answered; retrying", "seeds", seeds, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.cfg.JoinRetry):
		}
	}
}

// reconnect looks again, every JoinRetry, for members declared dead and, while this member sees
// no other, for its seeds. memberlist forgets a dead member after GossipToTheDeadTime and never
// looks for it again, and join runs once: without this, the two sides of a partition longer than
// that would each go on alone after the network came back, both owning every room. Whichever
// side reaches the other first merges the member lists, and the placement converges. A member
// that left is not looked for; one that stays dead is given up after reconnectFor.
func (r *Ring) reconnect(ctx context.Context) {
	defer r.wg.Done()
	loop.Every(ctx, r.cfg.JoinRetry, func(time.Time) {
		addrs := r.reconnectTargets()
		if len(addrs) == 0 {
			return
		}
		if n, err := r.ml.Join(addrs); n > 0 {
			r.log.Info("reached members again", "addrs", addrs, "contacted", n)
			r.nudge()
		} else {
			r.log.Debug("members still unreachable", "addrs", addrs, "err", err)
		}
	})
}

// reconnectTargets are the addresses reconnect tries now: one member declared dead, chosen at
// random (as serf does: a dead machine costs one connection attempt a round), and the seeds while
// this member sees no other.
func (r *Ring) reconnectTargets() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var addrs []string
	for id, d := range r.dead {
		if time.Since(d.at) > reconnectFor {
			delete(r.dead, id)
			continue
		}
		addrs = append(addrs, d.gossip)
		break // map order is random
	}
	if r.joined.Load() && len(r.live) <= 1 {
		addrs = append(addrs, r.seedAddrs...)
	}
	return addrs
}

// seeds are the join addresses, with the gossip port where none is given.
func seeds(join []string, port int) []string {
	out := make([]string, len(join))
	for i, s := range join {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, strconv.Itoa(port))
		}
		out[i] = s
	}
	return out
}

// nudge tells the coalescer that membership changed.
func (r *Ring) nudge() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// coalesce rebuilds placement once per burst of membership events (after Debounce of quiet, or
// MaxDebounce into a steady stream), and once a second to refresh states and forget old members.
func (r *Ring) coalesce(ctx context.Context) {
	defer r.wg.Done()
	refresh := time.NewTicker(time.Second)
	defer refresh.Stop()
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	var deadline <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			quiet.Stop()
			return
		case <-r.kick:
			quiet.Reset(r.cfg.Debounce)
			if deadline == nil {
				deadline = time.After(r.cfg.MaxDebounce)
			}
			continue
		case <-quiet.C:
		case <-deadline:
			quiet.Stop()
		case <-refresh.C:
		}
		deadline = nil
		r.rebuild()
	}
}

// rebuild reads the member list, builds a new placement if anything changed and tells subscribers
// when the placement version moved. The new consistent hash is built only when the placed set
// changed; otherwise the previous one is reused.
func (r *Ring) rebuild() {
	r.mu.Lock()
	defer r.mu.Unlock()
	members := r.members()
	prev := r.placement.Load()
	if slices.Equal(members, prev.members) {
		return
	}
	next := newPlacementFrom(prev, members, r.cfg.Placement)
	r.placement.Store(next)
	if next.version == prev.version {
		return
	}
	r.changes.Add(1)
	ids := make([]string, len(next.nodes))
	for i, n := range next.nodes {
		ids[i] = n.ID
	}
	r.log.Info("ring changed", "ring", next.version, "previous", prev.version, "nodes", ids, "load", next.load)
	r.feed.Send(next)
}

// members lists live and recently gone members, sorted by ID. r.mu is held.
func (r *Ring) members() []Member {
	now := time.Now()
	out := make([]Member, 0, len(r.live)+len(r.gone))
	for id, m := range r.live {
		if id == r.self {
			m.Meta = *r.meta.Load()
		}
		// memberlist does not expose suspicion, so members it still lists are alive or, by their
		// own word, draining.
		m.State = StateAlive
		if m.Draining || m.Leaving {
			m.State = StateDraining
		}
		out = append(out, m)
	}
	for id, g := range r.gone {
		if now.Sub(g.at) > r.cfg.GoneRetention {
			delete(r.gone, id)
			continue
		}
		out = append(out, g.Member)
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// newPlacementFrom is NewPlacement, reusing prev's hash when the placed set is unchanged.
func newPlacementFrom(prev *Placement, members []Member, cfg PlacementConfig) *Placement {
	var placed []Member
	for _, m := range members {
		if m.placed() {
			placed = append(placed, m)
		}
	}
	if prev == nil || len(prev.owners) == 0 || placementVersion(placed, cfg) != prev.version {
		return NewPlacement(members, cfg)
	}
	return &Placement{version: prev.version, cfg: cfg, load: prev.load, members: members,
		nodes: placed, owners: prev.owners, hash: prev.hash, hosts: memberHosts(members)}
}

// GoneSince reports how long ago this member last saw id leave the cluster or declared it dead,
// and false if it never did. A node woken from a pause asks its peers this to learn whether its
// rooms may have been started elsewhere meanwhile.
func (r *Ring) GoneSince(id string) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.lost[id]
	if !ok {
		return 0, false
	}
	return time.Since(at), true
}

// seen records a member memberlist reports alive. It runs inside memberlist's callbacks, under
// its lock, which is the only safe moment to read the *memberlist.Node.
func (r *Ring) seen(n *memberlist.Node) {
	meta, err := decodeMeta(n.Meta)
	if err != nil && n.Name != r.self {
		r.log.Warn("ignoring member with unreadable metadata", "peer", n.Name, "err", err)
		return
	}
	r.mu.Lock()
	r.live[n.Name] = Member{ID: n.Name, Gossip: n.Address(), State: StateAlive, Meta: meta}
	delete(r.gone, n.Name)
	delete(r.dead, n.Name)
	r.mu.Unlock()
}

// forget moves a member memberlist reports gone to the gone list, as left if it announced its
// leave and dead otherwise.
func (r *Ring) forget(n *memberlist.Node) {
	meta, _ := decodeMeta(n.Meta)
	st := StateDead
	if meta.Leaving {
		st = StateLeft
	}
	r.mu.Lock()
	delete(r.live, n.Name)
	now := time.Now()
	r.gone[n.Name] = goneMember{Member: Member{ID: n.Name, Gossip: n.Address(), State: st, Meta: meta}, at: now}
	r.lost[n.Name] = now
	if st == StateDead {
		r.dead[n.Name] = deadMember{gossip: n.Address(), at: now}
	} else {
		delete(r.dead, n.Name)
	}
	r.mu.Unlock()
	r.log.Info("member gone", "peer", n.Name, "state", st)
}

func splitPort(hostport string) (string, int, error) {
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", hostport)
	}
	return h, port, nil
}

// advertiseHost picks the IP others reach this member on: the one given, else the bind address,
// else a private IP of this machine, else its first non-loopback address.
func advertiseHost(given, bind string) (string, error) {
	if given != "" {
		if ip := net.ParseIP(given); ip != nil {
			return given, nil
		}
		ips, err := net.LookupIP(given)
		if err != nil || len(ips) == 0 {
			return "", fmt.Errorf("ring: cannot resolve advertise host %q: %v", given, err)
		}
		return ips[0].String(), nil
	}
	if ip := net.ParseIP(bind); ip != nil && !ip.IsUnspecified() {
		return bind, nil
	}
	if bind != "" && net.ParseIP(bind) == nil {
		return advertiseHost(bind, "")
	}
	if ip, err := sockaddr.GetPrivateIP(); err == nil && ip != "" {
		return ip, nil
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String(), nil
		}
	}
	return "", fmt.Errorf("ring: no address to advertise; set Advertise (--advertise)")
}

// completeHost fills an empty or unspecified host in hostport with host.
func completeHost(hostport, host string) string {
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort(host, p)
	}
	return hostport
}
