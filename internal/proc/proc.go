package proc

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Spec says which process to start.
type Spec struct {
	// Binary is the executable (Roost(tb) in a test).
	Binary string
	// Role is its command. "node" and "router" are given --id ID, --gossip on a free TCP and UDP
	// port, --join Join when set, and a node --tcp on a free port; every command is given --http on
	// a free port. Other commands ("dev", the bench's "baseline") get only --http.
	Role string
	// ID and Join are a node's or router's --id and --join (a seed's gossip address, or "").
	ID, Join string
	// Args are more flags, after the ones above. With --tls-cert among them the process is
	// reached over HTTPS.
	Args []string
	// Ready is the path polled until it answers 200: "/healthz" (serving) when empty, "/readyz"
	// to wait until the member is placed with its cluster.
	Ready string
	// ReadyTimeout bounds the wait for Ready. Default 15 s.
	ReadyTimeout time.Duration
	// HTTP is the client for Ready and Cluster: one with a 2 s timeout that follows no redirect
	// when nil. Tests of TLS processes pass one that trusts their CA.
	HTTP *http.Client
	// Host, when set, is the address the process binds in a network of its own (a namespace of
	// package netns, entered with Wrap): its ports are then fixed (HTTP 9000, gossip 7946, TCP
	// 9100), as nothing else binds there.
	Host string
	// Wrap is a command the process runs under (e.g. netns's Host.Command()).
	Wrap []string
}

// Proc is one running process.
type Proc struct {
	ID, Role string
	// Gossip, HTTP and TCP are host:port; Gossip is empty for other roles than node and router,
	// and TCP for other roles than node.
	Gossip, HTTP, TCP string
	TLS               bool

	cmd    *exec.Cmd
	log    *logBuffer
	exited chan struct{}
	client *http.Client
}

var defaultClient = &http.Client{Timeout: 2 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// attempts is how often Start tries new ports when the process lost one to another process.
const attempts = 5

// Start starts the process and waits until it answers spec.Ready, which ctx can cut short. A
// free port can be taken by another process between picking it and the process binding it;
// then the process is started again on new ports. On an error nothing is left running.
func Start(ctx context.Context, spec Spec) (*Proc, error) {
	for attempt := 1; ; attempt++ {
		p, err := startOnce(spec)
		if err != nil {
			return nil, err
		}
		err = p.waitReady(ctx, spec)
		if err == nil {
			return p, nil
		}
		lost := strings.Contains(p.Log(), "address already in use")
		p.Kill()
		if !lost || attempt == attempts {
			return nil, err
		}
	}
}

func startOnce(spec Spec) (*Proc, error) {
	p := &Proc{ID: spec.ID, Role: spec.Role, TLS: slices.Contains(spec.Args, "--tls-cert"), log: &logBuffer{},
		exited: make(chan struct{}), client: spec.HTTP}
	if p.client == nil {
		p.client = defaultClient
	}
	// port is a free loopback port, or the fixed one in a network of the process's own.
	port := func(fixed string, udpToo bool) (string, error) {
		if spec.Host != "" {
			return spec.Host + ":" + fixed, nil
		}
		return freePort(udpToo)
	}
	var err error
	if p.HTTP, err = port("9000", false); err != nil {
		return nil, err
	}
	args := []string{spec.Role}
	if spec.Role == "node" || spec.Role == "router" {
		if p.Gossip, err = port("7946", true); err != nil {
			return nil, err
		}
		args = append(args, "--id", spec.ID, "--gossip", p.Gossip)
		if spec.Role == "node" {
			if p.TCP, err = port("9100", false); err != nil {
				return nil, err
			}
			args = append(args, "--tcp", p.TCP)
		}
		if spec.Join != "" {
			args = append(args, "--join", spec.Join)
		}
	}
	args = append(append(args, "--http", p.HTTP), spec.Args...)
	argv := append(append(slices.Clone(spec.Wrap), spec.Binary), args...)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	// Every client of a test or a bench comes from loopback: one address creating rooms as fast
	// as a whole user base does. So the per-address room rate is off, unless asked for (a
	// --room-create-rate in Args, or the variable in the environment).
	if _, ok := os.LookupEnv("ROOST_ROOM_CREATE_RATE"); !ok {
		p.cmd.Env = append(os.Environ(), "ROOST_ROOM_CREATE_RATE=0")
	}
	// A group of its own, so that a signal reaches whatever it starts too; killed with its parent.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.name(), err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	return p, nil
}

func (p *Proc) waitReady(ctx context.Context, spec Spec) error {
	path, timeout := spec.Ready, spec.ReadyTimeout
	if path == "" {
		path = "/healthz"
	}
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before serving:\n%s", p.name(), p.Log())
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", p.name(), ctx.Err())
		default:
		}
		if resp, err := p.client.Get(p.URL() + path); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && p.answersForItself() {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer %s with 200 within %s:\n%s", p.name(), path, timeout, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answersForItself reports whether the member answering on p.HTTP is p: another process may
// have taken the HTTP port first (p then exits, and Start tries again). A node or router is
// known by its gossip address, which only p can hold.
func (p *Proc) answersForItself() bool {
	if p.Gossip == "" {
		return true
	}
	c, err := p.Cluster()
	if err != nil {
		return false
	}
	for _, m := range c.Members {
		if m.ID == c.Self {
			return m.Gossip == p.Gossip
		}
	}
	return false
}

func (p *Proc) name() string {
	if p.ID == "" {
		return "roost " + p.Role
	}
	return "roost " + p.Role + " " + p.ID
}

// URL is the base URL of the process's HTTP listener.
func (p *Proc) URL() string {
	if p.TLS {
		return "https://" + p.HTTP
	}
	return "http://" + p.HTTP
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Log is what the process has printed so far.
func (p *Proc) Log() string { return p.log.String() }

// Exited is closed once the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// ExitCode is the process's exit code once Exited is closed (-1 when a signal ended it).
func (p *Proc) ExitCode() int { return p.cmd.ProcessState.ExitCode() }

// Signal sends sig to the process's group: SIGSTOP and SIGCONT pause and wake it, SIGTERM drains
// it, SIGKILL kills it.
func (p *Proc) Signal(sig syscall.Signal) {
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Kill kills the process (SIGKILL) and waits until it has exited.
func (p *Proc) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.exited
}

// Stop asks the process to end (SIGTERM: a node drains) and waits up to timeout, then kills it.
// It reports whether the process ended on its own.
func (p *Proc) Stop(timeout time.Duration) bool {
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return true
	case <-time.After(timeout):
		p.Kill()
		return false
	}
}
