package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roost-dev/roost/protocol"
)

// The chaos harness: the real roost binary, run as processes on loopback.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// roostBinary builds cmd/roost once per test run.
func roostBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "roost-test-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "roost")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/roost").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ../cmd/roost: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is one roost process.
type proc struct {
	id, role          string
	gossip, http, tcp string
	tls               bool // serves HTTPS (--tls-cert), with a certificate from testCA
	cmd               *exec.Cmd
	log               *logBuffer
	exited            chan struct{}
}

// logBuffer collects a process's output; tests may read it while the process writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freePort(t *testing.T, udpToo bool) string {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if !udpToo {
			return addr
		}
		if u, err := net.ListenPacket("udp", addr); err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

// startProc starts a node or router process and kills it when the test ends, whatever happens.
// A free port can be taken by another test package between freePort and the process binding
// it; then the process is started again on new ports.
func startProc(t *testing.T, role, id, join string, extra ...string) *proc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p := startProcOnce(t, role, id, join, extra...)
		if attempt == 5 || !p.lostPortRace() {
			return p
		}
	}
}

// lostPortRace waits until the process serves HTTP, and reports whether it exited instead
// because one of its ports was taken.
func (p *proc) lostPortRace() bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return strings.Contains(p.log.String(), "address already in use")
		default:
		}
		if resp, err := quickHTTP.Get(p.url() + "/healthz"); err == nil {
			resp.Body.Close()
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func startProcOnce(t *testing.T, role, id, join string, extra ...string) *proc {
	t.Helper()
	p := &proc{id: id, role: role, gossip: freePort(t, true), http: freePort(t, false), log: &logBuffer{}, exited: make(chan struct{}),
		tls: slices.Contains(extra, "--tls-cert")}
	args := []string{role, "--id", id, "--gossip", p.gossip, "--http", p.http, "--log-level", "warn",
		"--max-addr-conns", strconv.Itoa(loopbackConns)}
	if role == "node" {
		p.tcp = freePort(t, false)
		args = append(args, "--tcp", p.tcp)
	}
	if join != "" {
		args = append(args, "--join", join)
	}
	p.cmd = exec.Command(roostBinary(t), append(args, extra...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.exited
		if t.Failed() {
			t.Logf("log of %s:\n%s", p.id, p.log.String())
		}
	})
	return p
}

func (p *proc) signal(sig syscall.Signal) {
	if p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	}
}

func (p *proc) url() string {
	if p.tls {
		return "https://" + p.http
	}
	return "http://" + p.http
}

var quickHTTP = &http.Client{Timeout: 2 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// clusterView is p's GET /v1/cluster, or false when it does not answer.
func (p *proc) clusterView() (protocol.Cluster, bool) {
	var c protocol.Cluster
	resp, err := quickHTTP.Get(p.url() + "/v1/cluster")
	if err != nil {
		return c, false
	}
	defer resp.Body.Close()
	return c, json.NewDecoder(resp.Body).Decode(&c) == nil
}

// nodeState is the state p reports for member id ("" when p does not list it).
func (p *proc) nodeState(id string) string {
	c, ok := p.clusterView()
	if !ok {
		return "unreachable"
	}
	for _, m := range c.Members {
		if m.ID == id {
			return m.State
		}
	}
	return ""
}

// ownerFrom asks p who owns room (one hop: the Location of a redirect, or p itself).
func (p *proc) ownerFrom(ctx context.Context, room string) (protocol.Owner, error) {
	hops, status, body, err := followRedirects(ctx, p.url()+"/v1/rooms/"+room)
	if err != nil {
		return protocol.Owner{}, err
	}
	if status != 200 {
		return protocol.Owner{}, fmt.Errorf("%v: %d %s", hops, status, body)
	}
	var o protocol.Owner
	return o, json.Unmarshal(body, &o)
}

// startProcCluster starts n node processes and waits until they agree on a ring of n nodes.
func startProcCluster(t *testing.T, n int) []*proc {
	t.Helper()
	var ps []*proc
	for i := 1; i <= n; i++ {
		join := ""
		if i > 1 {
			join = ps[0].gossip
		}
		ps = append(ps, startProc(t, "node", fmt.Sprintf("n%d", i), join))
	}
	waitProcRing(t, ps, n)
	return ps
}

func waitProcRing(t *testing.T, ps []*proc, nodes int) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("processes agree on a ring of %d nodes", nodes), func() bool {
		var ring string
		for _, p := range ps {
			c, ok := p.clusterView()
			if !ok || len(c.Rooms) != nodes || (ring != "" && c.Ring != ring) {
				return false
			}
			ring = c.Ring
		}
		return true
	})
}
