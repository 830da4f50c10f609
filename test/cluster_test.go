package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-dev/roost/node"
	"github.com/roost-dev/roost/ring"
	"github.com/roost-dev/roost/router"
)

// member is one cluster member running in this process.
type member struct {
	ID     string
	Role   ring.Role
	ring   *ring.Ring
	node   *node.Node // nil for routers
	router *router.Router
	HTTP   string // host:port
	TCP    string
	srv    *http.Server
	stop   func() // idempotent
}

func (m *member) URL() string { return "http://" + m.HTTP }

// cluster is a set of members started by one test and stopped with it.
type cluster struct {
	t       *testing.T
	members []*member
	nodeCfg func(*node.Config) // applied to every node's config, when set
}

func testLogger() *slog.Logger {
	if os.Getenv("ROOST_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newCluster(t *testing.T, nodes, routers int) *cluster {
	t.Helper()
	return newClusterWith(t, nodes, routers, nil)
}

// newClusterWith starts a cluster whose nodes' configs pass through nodeCfg.
func newClusterWith(t *testing.T, nodes, routers int, nodeCfg func(*node.Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, nodeCfg: nodeCfg}
	for i := 1; i <= nodes; i++ {
		c.addNode(fmt.Sprintf("n%d", i))
	}
	for i := 1; i <= routers; i++ {
		c.addRouter(fmt.Sprintf("r%d", i))
	}
	c.waitConverged(nodes)
	return c
}

func (c *cluster) ringConfig(id string, role ring.Role, httpAddr, tcpAddr string) ring.Config {
	rc := ring.DefaultConfig()
	rc.ID, rc.Role, rc.Gossip, rc.HTTP, rc.TCP, rc.Logger = id, role, "127.0.0.1:0", httpAddr, tcpAddr, testLogger()
	if len(c.members) > 0 { // any live member will do as a seed
		rc.Join = []string{c.members[len(c.members)-1].ring.GossipAddr()}
	}
	return rc
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func (c *cluster) addNode(id string) *member {
	t := c.t
	t.Helper()
	httpLn, tcpLn := listen(t), listen(t)
	r, err := ring.New(c.ringConfig(id, ring.RoleNode, httpLn.Addr().String(), tcpLn.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.Logger = testLogger()
	// Every member runs in this process, so a CPU stall (a loaded CI machine, -race) pauses them
	// all alike and nobody is declared dead for it; the pause watchdog is for real processes.
	cfg.StaleAfter = 10 * time.Second
	// Every client of these tests comes from 127.0.0.1: one address holds them all.
	cfg.MaxAddrConns = loopbackConns
	if c.nodeCfg != nil {
		c.nodeCfg(&cfg)
	}
	n, err := node.New(cfg, r)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{ID: id, Role: ring.RoleNode, ring: r, node: n, HTTP: httpLn.Addr().String(), TCP: tcpLn.Addr().String(),
		srv: &http.Server{Handler: n.Handler()}}
	go m.srv.Serve(httpLn)
	go n.ServeTCP(tcpLn)
	m.stop = sync.OnceFunc(func() { n.Close(); m.srv.Close(); r.Close() })
	c.add(m)
	return m
}

// loopbackConns is the per-address connection limit of test clusters, whose clients all come
// from 127.0.0.1.
const loopbackConns = 100_000

func (c *cluster) addRouter(id string) *member {
	t := c.t
	t.Helper()
	ln := listen(t)
	r, err := ring.New(c.ringConfig(id, ring.RoleRouter, ln.Addr().String(), ""))
	if err != nil {
		t.Fatal(err)
	}
	cfg := router.DefaultConfig()
	cfg.Logger = testLogger()
	cfg.MaxAddrConns = loopbackConns
	rt, err := router.New(cfg, r)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{ID: id, Role: ring.RoleRouter, ring: r, router: rt, HTTP: ln.Addr().String(), srv: &http.Server{Handler: rt.Handler()}}
	go m.srv.Serve(ln)
	m.stop = sync.OnceFunc(func() { rt.Close(); m.srv.Close(); r.Close() })
	c.add(m)
	return m
}

func (c *cluster) add(m *member) {
	c.members = append(c.members, m)
	c.t.Cleanup(m.stop)
}

// drain stops a node the way SIGTERM does: hand its rooms off, leave, close.
func (c *cluster) drain(m *member) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.node.Drain(ctx); err != nil {
		c.t.Errorf("drain %s: %v", m.ID, err)
	}
	m.ring.Leave(time.Second)
	m.stop()
	for i, x := range c.members {
		if x == m {
			c.members = append(c.members[:i], c.members[i+1:]...)
			break
		}
	}
}

func (c *cluster) nodes() []*member   { return c.byRole(ring.RoleNode) }
func (c *cluster) routers() []*member { return c.byRole(ring.RoleRouter) }

func (c *cluster) byRole(role ring.Role) []*member {
	var out []*member
	for _, m := range c.members {
		if m.Role == role {
			out = append(out, m)
		}
	}
	return out
}

func (c *cluster) member(id string) *member {
	for _, m := range c.members {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// waitConverged waits until every member places the same n nodes under one version.
func (c *cluster) waitConverged(n int) {
	c.t.Helper()
	eventually(c.t, 15*time.Second, fmt.Sprintf("all members agree on a ring of %d nodes", n), func() bool {
		v := c.members[0].ring.Placement().Version()
		for _, m := range c.members {
			p := m.ring.Placement()
			if len(p.Nodes()) != n || p.Version() != v || !m.ring.Ready() {
				return false
			}
		}
		return true
	})
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// followRedirects does what curl -L does and reports every URL visited and the final body.
func followRedirects(ctx context.Context, start string) (hops []string, status int, body []byte, err error) {
	noFollow := &http.Client{Transport: quickHTTP.Transport, // trusts testCA
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	u := start
	for range 10 {
		hops = append(hops, u)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := noFollow.Do(req)
		if err != nil {
			return hops, 0, nil, err
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusTemporaryRedirect {
			return hops, resp.StatusCode, body, nil
		}
		u = resp.Header.Get("Location")
		if !strings.HasPrefix(u, "http") {
			return hops, resp.StatusCode, body, fmt.Errorf("relative Location %q", u)
		}
	}
	return hops, 0, nil, fmt.Errorf("redirect loop: %v", hops)
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}
