package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/netns"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/node/handoff"
)

// The fault suite (issue 22): real node and router processes in network namespaces, one fault
// each, with clients through the router and straight to nodes whose every ack and delivery the
// history checker reads. Each fault lasts a few seconds by default, so make test can run them;
// ROOST_FAULT_SECONDS lengthens them (make chaos). They skip, saying why, where namespaces cannot
// be made.

// faultFor is how long a fault lasts: def, or ROOST_FAULT_SECONDS when set.
func faultFor(t *testing.T, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv("ROOST_FAULT_SECONDS")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("ROOST_FAULT_SECONDS=%q", s)
	}
	return time.Duration(n) * time.Second
}

// netMember starts a node or router in host's namespace, bound to addr (host.Addr when empty),
// and kills it when the test ends.
func netMember(t *testing.T, role, id string, host *netns.Host, addr, join string, extra ...string) *proc.Proc {
	t.Helper()
	if addr == "" {
		addr = host.Addr
	}
	return proc.StartT(t, proc.Spec{Binary: proc.Roost(t), Role: role, ID: id, Join: join, Host: addr, Wrap: host.Command(),
		Args: append(faultArgs(role), extra...), HTTP: quickHTTP})
}

// faultArgs are the flags of every member a fault test starts: its --log-level and, with
// ROOST_FAULT_REPLICAS set, that --room-replicas for nodes (the default is 1; 0 runs the suite
// without replication).
func faultArgs(role string) []string {
	args := []string{"--log-level", faultLogLevel()}
	if n := os.Getenv("ROOST_FAULT_REPLICAS"); n != "" && role == "node" {
		args = append(args, "--room-replicas", n)
	}
	return args
}

// faultLogLevel is the --log-level of the members a fault test starts itself: warn, or
// ROOST_FAULT_LOG_LEVEL (info shows every hand-off, for reading a failure).
func faultLogLevel() string {
	if l := os.Getenv("ROOST_FAULT_LOG_LEVEL"); l != "" {
		return l
	}
	return "warn"
}

// faultLoad is the logged traffic of a fault test.
type faultLoad struct {
	h       history
	ctx     context.Context
	stop    context.CancelFunc
	clients sync.WaitGroup
	tried   atomic.Int64 // fresh clients started
	fresh   atomic.Int64 // fresh clients that got an ack
	mu      sync.Mutex
	failed  map[string]int // why fresh clients got no ack, while the traffic ran
}

// fail counts why a fresh client got no ack, unless the traffic was over.
func (l *faultLoad) fail(err error) {
	if l.ctx.Err() != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed == nil {
		l.failed = map[string]int{}
	}
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120]
	}
	l.failed[msg]++
}

// startLoad opens, in every room, a subscriber and a publisher through the router and the same
// straight to a node (at gives its base and the other nodes to fall back on), all logged. With
// fresh, a new client also joins a random room every 100 ms, through the router or a node, and
// publishes one logged message, as real clients keep arriving during changes.
func startLoad(t *testing.T, rt *proc.Proc, rooms map[string]string, at func(room string) (string, []string), fresh bool) *faultLoad {
	t.Helper()
	l := &faultLoad{}
	l.ctx, l.stop = context.WithCancel(t.Context())
	t.Cleanup(func() { l.stop(); l.clients.Wait() })
	var names []string
	for room := range rooms {
		names = append(names, room)
		base, alt := at(room)
		for _, door := range []struct {
			name, base string
			alt        []string
		}{{"router", rt.URL(), nil}, {"direct", base, alt}} {
			who := room + "@" + door.name
			opts := func(suffix string, discard bool) *client.Options {
				return &client.Options{ClientID: who + suffix, Discard: discard, MaxReconnectDelay: 200 * time.Millisecond,
					Alternates: door.alt, MaxReconnectWait: 5 * time.Minute}
			}
			ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
			sub, err := client.Dial(ctx, door.base, room, opts("-sub", false))
			if err != nil {
				cancel()
				t.Fatalf("%s: %v", who, err)
			}
			pub, err := client.Dial(ctx, door.base, room, opts("-pub", true))
			cancel()
			if err != nil {
				t.Fatalf("%s: %v", who, err)
			}
			l.clients.Go(func() { defer sub.Close(); l.h.subscribe(l.ctx, who+"-sub", room, sub) })
			l.clients.Go(func() {
				defer pub.Close()
				for i := 0; l.ctx.Err() == nil; i++ {
					_ = l.h.publish(l.ctx, who+"-pub", room, pub, fmt.Sprintf("%s-%d", who, i), 2*time.Second)
					time.Sleep(75 * time.Millisecond)
				}
			})
		}
	}
	if fresh {
		l.clients.Go(func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-l.ctx.Done():
					return
				case <-tick.C:
				}
				room := names[rand.IntN(len(names))]
				base, alt := rt.URL(), []string(nil)
				if i%2 == 1 {
					base, alt = at(room)
				}
				who := fmt.Sprintf("fresh-%d", i)
				l.tried.Add(1)
				l.clients.Go(func() {
					ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
					defer cancel()
					c, err := client.Dial(ctx, base, room, &client.Options{ClientID: who, Discard: true, Alternates: alt})
					if err != nil {
						l.fail(err)
						return
					}
					defer c.Close()
					if err := l.h.publish(ctx, who, room, c, who, 5*time.Second); err != nil {
						l.fail(err)
					} else {
						l.fresh.Add(1)
					}
				})
			}
		})
	}
	return l
}

// finish stops the traffic and asserts the checker's invariants over it: no (room, epoch, seq)
// with two ids, no jump without a gap, nothing delivered or acked twice, no acked message a
// subscriber connected throughout missed, and no two epochs of a room acking side by side for
// longer than allowance. It logs the verdict and the overlap measured with no allowance.
func (l *faultLoad) finish(t *testing.T, allowance time.Duration) verdict {
	t.Helper()
	l.stop()
	l.clients.Wait()
	raw := l.h.check(0, time.Second)
	v := l.h.check(allowance, time.Second)
	t.Logf("history: %s; %d of %d fresh clients acked; epochs of one room acked side by side for %s at most (allowed %s)",
		v, l.fresh.Load(), l.tried.Load(), raw.overlap, allowance)
	for _, d := range v.details {
		t.Logf("  %s", d)
	}
	l.mu.Lock()
	for msg, n := range l.failed {
		t.Logf("  %d fresh clients got no ack: %s", n, msg)
	}
	l.mu.Unlock()
	if v.acks == 0 || v.deliveries == 0 {
		t.Fatalf("the checker saw no traffic: %s", v)
	}
	if v.forks != 0 || v.jumps != 0 || v.twice != 0 || v.lost != 0 || v.overlap != 0 {
		t.Errorf("history violations: %s", v)
		l.dump(t)
	}
	return v
}

// dump writes every record, in time order, to a file named in the test's log, for reading what
// the checker found in context.
func (l *faultLoad) dump(t *testing.T) {
	f, err := os.CreateTemp("", "roost-"+t.Name()+"-*.history")
	if err != nil {
		return
	}
	defer f.Close()
	l.h.mu.Lock()
	recs := append([]record(nil), l.h.records...)
	l.h.mu.Unlock()
	slices.SortStableFunc(recs, func(a, b record) int { return a.at.Compare(b.at) })
	for _, r := range recs {
		fmt.Fprintf(f, "%s %-7s %-28s %-12s node=%s epoch=%s seq=%d id=%s from=%d\n",
			r.at.Format("15:04:05.000"), r.kind, r.who, r.room, r.node, r.epoch, r.seq, r.id, r.from)
	}
	t.Logf("the history, record by record: %s", f.Name())
}

// directTo sends a room's direct clients to its owner, falling back on the other nodes.
func directTo(nodes []*proc.Proc, rooms map[string]string) func(string) (string, []string) {
	return func(room string) (string, []string) {
		var base string
		var alt []string
		for _, n := range nodes {
			if n.ID == rooms[room] {
				base = n.URL()
			} else {
				alt = append(alt, n.URL())
			}
		}
		return base, alt
	}
}

// waitOneCopy waits until every member agrees on a ring of the nodes and they hold want rooms
// between them (one copy of each), and says how long that took.
func waitOneCopy(t *testing.T, nodes []*proc.Proc, rt *proc.Proc, want int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	all := append(append([]*proc.Proc(nil), nodes...), rt)
	for {
		held, ok := 0.0, proc.Agree(all, len(nodes))
		for _, n := range nodes {
			v, err := unlabelled(n, "roost_rooms")
			held, ok = held+v, ok && err == nil
		}
		if ok && held == float64(want) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			var views []string
			for _, p := range all {
				c, err := p.Cluster()
				views = append(views, fmt.Sprintf("%s: ring %s nodes %v err %v", p.ID, c.Ring, c.Rooms, err))
			}
			t.Fatalf("%s on: %d rooms held for %d, views %v", within, int(held), want, views)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFaultAsymmetricPartition drops one node's packets one way only — first everything it
// sends, then everything it is sent, a few seconds each (ROOST_FAULT_SECONDS) — while its rooms
// and a live node's rooms take traffic through the router and directly. After each heal the
// cluster must come back to one ring and one copy of every room, and the history must hold.
func TestFaultAsymmetricPartition(t *testing.T) {
	cut := faultFor(t, 5*time.Second)
	net := netns.New(t, 4)
	nodes, rt := startNetCluster(t, net, 3)
	victim, victimHost := nodes[2], net.Hosts()[2]
	rooms := roomsByOwner(t, rt, "asym-", 3, victim.ID, nodes[0].ID)
	load := startLoad(t, rt, rooms, directTo(nodes, rooms), false)
	time.Sleep(time.Second)
	for _, dir := range []netns.Direction{netns.FromHost, netns.ToHost} {
		heal := victimHost.CutOneWay(dir)
		time.Sleep(cut)
		heal()
		took := waitOneCopy(t, nodes, rt, len(rooms), 30*time.Second)
		t.Logf("%s's packets %s dropped for %s: one ring and one copy of each room %s after the heal", victim.ID, dir, cut, took.Round(100*time.Millisecond))
		time.Sleep(time.Second)
	}
	time.Sleep(time.Second)
	load.finish(t, time.Second)
}

// TestFaultNodeCallsBlocked blocks node-to-node HTTP (the nodes' port 9000 between node
// addresses only) while gossip flows and the router and the clients still reach every node, and
// a node joins meanwhile: every member agrees on the new ring, but no hand-off can cross. The
// rooms the newcomer gains must not be served by two writers; once the block lifts, one copy of
// each.
func TestFaultNodeCallsBlocked(t *testing.T) {
	// Longer than --arrive-timeout (5 s), after which the newcomer starts the rooms it gained
	// afresh: by then their old owners must have stopped acking.
	block := faultFor(t, 10*time.Second)
	net := netns.New(t, 5)
	hosts := net.Hosts()
	nodes, rt := startNetCluster(t, net, 3)
	var rooms = roomsByOwner(t, rt, "blocked-", 3, "n1", "n2", "n3")
	load := startLoad(t, rt, rooms, directTo(nodes, rooms), true)
	time.Sleep(time.Second)
	lift := net.BlockTCP(9000, hosts[0], hosts[1], hosts[2], hosts[4])
	blockedAt := time.Now()
	n4 := netMember(t, "node", "n4", hosts[4], "", nodes[0].Gossip)
	nodes = append(nodes, n4)
	proc.WaitRingT(t, append(nodes, rt), 4)
	t.Logf("n4 joined across the block; ring agreed %s after the block", time.Since(blockedAt).Round(100*time.Millisecond))
	time.Sleep(time.Until(blockedAt.Add(block)))
	lift()
	took := waitOneCopy(t, nodes, rt, len(rooms), 30*time.Second)
	t.Logf("node-to-node HTTP blocked for %s: one copy of each room %s after the block lifted", block, took.Round(100*time.Millisecond))
	time.Sleep(2 * time.Second)
	load.finish(t, time.Second)
}

// TestFaultNetemDrain runs the traffic and a drain with every link impaired (loss and delay with
// jitter; ROOST_FAULT_SECONDS of traffic before the drain): the drain hands every room over,
// and the history holds.
func TestFaultNetemDrain(t *testing.T) {
	before := faultFor(t, 3*time.Second)
	net := netns.New(t, 4)
	nodes, rt := startNetCluster(t, net, 3)
	rooms := roomsByOwner(t, rt, "netem-", 2, "n1", "n2", "n3")
	load := startLoad(t, rt, rooms, directTo(nodes, rooms), true)
	time.Sleep(time.Second)
	im := netns.Impairment{Loss: 0.1, Delay: 50 * time.Millisecond, Jitter: 20 * time.Millisecond}
	undo := net.Netem(im)
	time.Sleep(before)
	start := time.Now()
	drained := nodes[2].Stop(60 * time.Second)
	t.Logf("with %s on every link, n3 drained in %s (exit code %d)", im, time.Since(start).Round(100*time.Millisecond), nodes[2].ExitCode())
	if !drained || nodes[2].ExitCode() != 0 {
		t.Errorf("the drain under %s did not end cleanly: exit code %d", im, nodes[2].ExitCode())
	}
	nodes = nodes[:2]
	waitOneCopy(t, nodes, rt, len(rooms), 30*time.Second)
	time.Sleep(time.Second)
	undo()
	time.Sleep(2 * time.Second)
	load.finish(t, time.Second)
}

// TestFaultStopSweep freezes one node (SIGSTOP) for durations around the failure-detection time
// (0.5 s to 5 s; ROOST_FAULT_SECONDS repeats the sweep for that long), each time until the
// cluster has one ring again, under traffic in its rooms and a live node's. A node woken from a
// pause must not write beside the copy its rooms got meanwhile.
func TestFaultStopSweep(t *testing.T) {
	total := faultFor(t, time.Second)
	net := netns.New(t, 4)
	nodes, rt := startNetCluster(t, net, 3)
	victim := nodes[2]
	rooms := roomsByOwner(t, rt, "stop-", 3, victim.ID, nodes[0].ID)
	load := startLoad(t, rt, rooms, directTo(nodes, rooms), true)
	time.Sleep(time.Second)
	start := time.Now()
	for round := 0; round == 0 || time.Since(start) < total; round++ {
		for _, d := range []time.Duration{500 * time.Millisecond, time.Second, 1500 * time.Millisecond, 2 * time.Second, 3 * time.Second, 5 * time.Second} {
			victim.Signal(syscall.SIGSTOP)
			time.Sleep(d)
			victim.Signal(syscall.SIGCONT)
			took := waitOneCopy(t, nodes, rt, len(rooms), 30*time.Second)
			t.Logf("round %d: %s stopped for %s; one ring and one copy of each room %s after SIGCONT", round, victim.ID, d, took.Round(100*time.Millisecond))
			time.Sleep(500 * time.Millisecond)
		}
	}
	time.Sleep(time.Second)
	load.finish(t, time.Second)
}

// swallower is a proxy in front of one node's HTTP port: it passes every request on and every
// answer back, except, once armed, the answers to hand-off batches (not to the checks before
// them): it delivers the batch, reads the node's answer and keeps it, so the sender never hears
// whether its rooms were taken.
type swallower struct {
	to        string // the node's host:port
	rp        *httputil.ReverseProxy
	http      *http.Client
	armed     atomic.Bool
	swallowed atomic.Int64 // batches whose answer was kept
	accepted  atomic.Int64 // rooms the node accepted in them
}

func newSwallower(to string) *swallower {
	u := &url.URL{Scheme: "http", Host: to}
	return &swallower{to: to, http: &http.Client{Timeout: 30 * time.Second},
		rp: &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(u); r.Out.Host = r.In.Host }}}
}

func (s *swallower) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != handoff.Path || !s.armed.Load() {
		s.rp.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if b, err := handoff.Decode(body); err != nil || b.Check {
		r.Body = io.NopCloser(bytes.NewReader(body))
		s.rp.ServeHTTP(w, r)
		return
	}
	out, err := http.NewRequest(http.MethodPost, "http://"+s.to+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return
	}
	out.Header, out.Host = r.Header.Clone(), r.Host
	if resp, err := s.http.Do(out); err == nil {
		var reply handoff.Reply
		_ = json.NewDecoder(resp.Body).Decode(&reply)
		resp.Body.Close()
		s.accepted.Add(int64(len(reply.Accepted)))
	}
	s.swallowed.Add(1)
	<-r.Context().Done() // no answer: the sender gives up after its hand-off timeout
}

// TestFaultHandoffReplyLost puts a proxy in front of a joining node's HTTP port, for calls
// from the other nodes only (the router and the clients reach it directly): the proxy delivers
// every hand-off batch and swallows the answer. The senders never hear that the newcomer took
// their rooms, which it serves meanwhile (ROOST_FAULT_SECONDS); then the newcomer is killed, and
// the ring gives the rooms back to the senders, which still hold the copies they never heard
// were taken. Those copies are behind what the newcomer acked: they must not go on in the same
// epoch (two ids for one seq, the newcomer's acks gone without a reset).
func TestFaultHandoffReplyLost(t *testing.T) {
	serve := faultFor(t, 3*time.Second)
	net := netns.New(t, 6)
	hosts := net.Hosts()
	nodes, rt := startNetCluster(t, net, 3)
	// n4 binds an alias of its host, which the other nodes reach on port 9000 only through the
	// proxy's host; the proxy passes on to n4's own address.
	alias := hosts[4].Alias()
	net.Divert(alias, 9000, hosts[5], hosts[0], hosts[1], hosts[2])
	ln, err := hosts[5].Listen("tcp", alias+":9000")
	if err != nil {
		t.Fatal(err)
	}
	sw := newSwallower(hosts[4].Addr + ":9000")
	srv := &http.Server{Handler: sw}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	rooms := roomsByOwner(t, rt, "swallow-", 4, "n1", "n2", "n3")
	load := startLoad(t, rt, rooms, directTo(nodes, rooms), true)
	time.Sleep(time.Second)
	sw.armed.Store(true)
	n4 := netMember(t, "node", "n4", hosts[4], alias, nodes[0].Gossip, "--http", "0.0.0.0:9000")
	proc.WaitRingT(t, append(append([]*proc.Proc(nil), nodes...), n4, rt), 4)
	wait.Eventually(t, 30*time.Second, "n4 serves rooms whose senders never heard it took them", func() bool {
		v, err := unlabelled(n4, "roost_rooms")
		return err == nil && v > 0 && sw.accepted.Load() > 0
	})
	time.Sleep(serve)
	held, _ := unlabelled(n4, "roost_rooms")
	t.Logf("n4 served %v rooms for %s; %d hand-off answers swallowed (%d rooms accepted in them)", held, serve, sw.swallowed.Load(), sw.accepted.Load())
	n4.Kill()
	took := waitOneCopy(t, nodes, rt, len(rooms), 30*time.Second)
	t.Logf("one ring and one copy of each room %s after n4 was killed", took.Round(100*time.Millisecond))
	time.Sleep(2 * time.Second)
	load.finish(t, time.Second)
}
