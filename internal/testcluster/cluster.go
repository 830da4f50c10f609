package testcluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/node"
	"github.com/roost-dev/roost/ring"
	"github.com/roost-dev/roost/router"
)

// LoopbackConns is the per-address connection limit of the members' configs: every client of a
// test comes from 127.0.0.1, so one address holds them all.
const LoopbackConns = 100_000

// Config says what New starts and how each member is configured.
type Config struct {
	// Nodes and Routers are how many of each New starts, named n1, n2, … and r1, r2, ….
	Nodes, Routers int
	// Node, Router and Ring, when set, change each member's config after the defaults below.
	// The nodes' defaults are node.DefaultConfig with StaleAfter 10 s and MaxAddrConns
	// LoopbackConns; the routers' router.DefaultConfig with MaxAddrConns LoopbackConns; the
	// rings' ring.DefaultConfig on 127.0.0.1:0, joined to the member started last. All log to
	// Logger().
	Node   func(*node.Config)
	Router func(*router.Config)
	Ring   func(*ring.Config)
}

// Member is one cluster member running in this process.
type Member struct {
	ID     string
	Role   ring.Role
	Ring   *ring.Ring
	Node   *node.Node     // nil for routers
	Router *router.Router // nil for nodes
	HTTP   string         // host:port of the HTTP listener
	TCP    string         // host:port of a node's TCP ingest; "" for routers
	stop   func()         // idempotent
}

// URL is the base URL of the member's HTTP listener.
func (m *Member) URL() string { return "http://" + m.HTTP }

// Cluster is a set of members started by one test and stopped with it.
type Cluster struct {
	tb      testing.TB
	cfg     Config
	members []*Member
}

// New starts cfg.Nodes nodes and cfg.Routers routers, waits until they agree on a ring of
// cfg.Nodes nodes, and stops every member when the test ends (each after whatever the test
// opened later, as cleanups run last-in first-out).
func New(tb testing.TB, cfg Config) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb, cfg: cfg}
	for i := 1; i <= cfg.Nodes; i++ {
		c.AddNode(fmt.Sprintf("n%d", i))
	}
	for i := 1; i <= cfg.Routers; i++ {
		c.AddRouter(fmt.Sprintf("r%d", i))
	}
	if len(c.members) > 0 {
		c.WaitConverged(cfg.Nodes)
	}
	return c
}

// Logger is the members' logger: debug to stderr with ROOST_TEST_LOG set, else nothing.
func Logger() *slog.Logger {
	if os.Getenv("ROOST_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func (c *Cluster) ringConfig(id string, role ring.Role, httpAddr, tcpAddr string) ring.Config {
	rc := ring.DefaultConfig()
	rc.ID, rc.Role, rc.Gossip, rc.HTTP, rc.TCP, rc.Logger = id, role, "127.0.0.1:0", httpAddr, tcpAddr, Logger()
	if len(c.members) > 0 { // any live member will do as a seed
		rc.Join = []string{c.members[len(c.members)-1].Ring.GossipAddr()}
	}
	if c.cfg.Ring != nil {
		c.cfg.Ring(&rc)
	}
	return rc
}

func (c *Cluster) listen() net.Listener {
	c.tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.tb.Fatal(err)
	}
	return ln
}

// serve runs srv on ln until the returned stop, which waits for it.
func serve(srv *http.Server, ln net.Listener) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	return func() { srv.Close(); <-done }
}

// AddNode starts a node that joins the cluster.
func (c *Cluster) AddNode(id string) *Member {
	tb := c.tb
	tb.Helper()
	httpLn, tcpLn := c.listen(), c.listen()
	r, err := ring.New(c.ringConfig(id, ring.RoleNode, httpLn.Addr().String(), tcpLn.Addr().String()))
	if err != nil {
		httpLn.Close()
		tcpLn.Close()
		tb.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.Logger = Logger()
	// Every member runs in this process, so a CPU stall (a loaded CI machine, -race) pauses them
	// all alike and nobody is declared dead for it; the pause watchdog is for real processes.
	cfg.StaleAfter = 10 * time.Second
	cfg.MaxAddrConns = LoopbackConns
	cfg.RoomCreateRate = 0 // every client is one loopback address, creating rooms for all
	if c.cfg.Node != nil {
		c.cfg.Node(&cfg)
	}
	n, err := node.New(cfg, r)
	if err != nil {
		httpLn.Close()
		tcpLn.Close()
		r.Close()
		tb.Fatal(err)
	}
	stopHTTP := serve(&http.Server{Handler: n.Handler(), ReadHeaderTimeout: 10 * time.Second}, httpLn)
	ingested := make(chan struct{})
	go func() {
		defer close(ingested)
		_ = n.ServeTCP(tcpLn) // returns once the node is closed
	}()
	m := &Member{ID: id, Role: ring.RoleNode, Ring: r, Node: n, HTTP: httpLn.Addr().String(), TCP: tcpLn.Addr().String()}
	m.stop = sync.OnceFunc(func() {
		n.Close()
		<-ingested
		stopHTTP()
		r.Close()
	})
	c.add(m)
	return m
}

// AddRouter starts a router that joins the cluster.
func (c *Cluster) AddRouter(id string) *Member {
	tb := c.tb
	tb.Helper()
	ln := c.listen()
	r, err := ring.New(c.ringConfig(id, ring.RoleRouter, ln.Addr().String(), ""))
	if err != nil {
		ln.Close()
		tb.Fatal(err)
	}
	cfg := router.DefaultConfig()
	cfg.Logger = Logger()
	cfg.MaxAddrConns = LoopbackConns
	if c.cfg.Router != nil {
		c.cfg.Router(&cfg)
	}
	rt, err := router.New(cfg, r)
	if err != nil {
		ln.Close()
		r.Close()
		tb.Fatal(err)
	}
	stopHTTP := serve(&http.Server{Handler: rt.Handler(), ReadHeaderTimeout: 10 * time.Second}, ln)
	m := &Member{ID: id, Role: ring.RoleRouter, Ring: r, Router: rt, HTTP: ln.Addr().String()}
	m.stop = sync.OnceFunc(func() {
		rt.Close()
		stopHTTP()
		r.Close()
	})
	c.add(m)
	return m
}

func (c *Cluster) add(m *Member) {
	c.members = append(c.members, m)
	c.tb.Cleanup(m.stop)
}

// Drain stops a node the way SIGTERM does: hand its rooms off, leave, close. It is no longer
// among the members.
func (c *Cluster) Drain(m *Member) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Node.Drain(ctx); err != nil {
		c.tb.Errorf("drain %s: %v", m.ID, err)
	}
	m.Ring.Leave(time.Second)
	c.Stop(m)
}

// Stop closes m at once, with no hand-off: a node closes its clients (1001) and its rooms
// start afresh elsewhere; the ring leaves. It is no longer among the members. Stopping it again
// does nothing.
func (c *Cluster) Stop(m *Member) {
	m.stop()
	for i, x := range c.members {
		if x == m {
			c.members = append(c.members[:i], c.members[i+1:]...)
			break
		}
	}
}

// Members are the members running, in the order they were started.
func (c *Cluster) Members() []*Member { return c.members }

// Nodes are the nodes running.
func (c *Cluster) Nodes() []*Member { return c.byRole(ring.RoleNode) }

// Routers are the routers running.
func (c *Cluster) Routers() []*Member { return c.byRole(ring.RoleRouter) }

func (c *Cluster) byRole(role ring.Role) []*Member {
	var out []*Member
	for _, m := range c.members {
		if m.Role == role {
			out = append(out, m)
		}
	}
	return out
}

// Member is the running member id, or nil.
func (c *Cluster) Member(id string) *Member {
	for _, m := range c.members {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// WaitConverged waits up to 15 s until every member is ready and places the same n nodes under
// one version.
func (c *Cluster) WaitConverged(n int) {
	c.tb.Helper()
	wait.Eventually(c.tb, 15*time.Second, fmt.Sprintf("all members agree on a ring of %d nodes", n), func() bool {
		v := c.members[0].Ring.Placement().Version()
		for _, m := range c.members {
			p := m.Ring.Placement()
			if len(p.Nodes()) != n || p.Version() != v || !m.Ring.Ready() {
				return false
			}
		}
		return true
	})
}
