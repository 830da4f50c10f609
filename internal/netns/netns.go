// Package netns gives tests a network of their own: Linux network namespaces joined by veth
// pairs to a bridge, with addresses that exist only there, so they can cut one host off, or slow
// or lose its packets, without touching any other traffic. Everything it creates it removes when
// the test ends, and what an earlier, killed test binary left behind is removed first.
//
// It needs root and the ip command (iproute2); Available says why not when it cannot run.
package netns

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// prefix names everything this package creates, followed by the creating process's pid.
const prefix = "rst"

// Available reports whether namespaces can be made here, and why not.
func Available() (bool, string) {
	if os.Geteuid() != 0 {
		return false, "network namespace tests need root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return false, "network namespace tests need the ip command (Debian: iproute2)"
	}
	return true, ""
}

// Net is a bridge in the test's own namespace and hosts on it, each in a namespace of its own.
type Net struct {
	tb     testing.TB
	bridge string
	subnet string // "10.X.Y", the first three octets
	hosts  []*Host
}

// Host is one namespace on the net.
type Host struct {
	Name string // the namespace
	Addr string // its IPv4 address on the net
	veth string // the bridge's end of its link
	net  *Net
}

var nets atomic.Int32

// New makes a net of n hosts, removed when tb ends. It fails tb when the kernel refuses.
func New(tb testing.TB, n int) *Net {
	tb.Helper()
	if ok, why := Available(); !ok {
		tb.Skip(why)
	}
	removeLeftovers()
	id := fmt.Sprintf("%s%d%c", prefix, os.Getpid(), 'a'+rune(nets.Add(1)-1)%26)
	seq := int(nets.Load())
	nt := &Net{tb: tb, bridge: id, subnet: fmt.Sprintf("10.%d.%d", 200+os.Getpid()%50, seq%250)}
	tb.Cleanup(nt.remove)
	nt.must("link", "add", nt.bridge, "type", "bridge")
	nt.must("addr", "add", nt.subnet+".1/24", "dev", nt.bridge)
	nt.must("link", "set", nt.bridge, "up")
	for i := range n {
		h := &Host{Name: fmt.Sprintf("%sh%d", id, i), Addr: fmt.Sprintf("%s.%d", nt.subnet, i+2), veth: fmt.Sprintf("%sv%d", id, i), net: nt}
		nt.hosts = append(nt.hosts, h)
		nt.must("netns", "add", h.Name)
		nt.must("link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.Name)
		nt.must("link", "set", h.veth, "master", nt.bridge)
		nt.must("link", "set", h.veth, "up")
		h.must("link", "set", "lo", "up")
		h.must("addr", "add", h.Addr+"/24", "dev", "eth0")
		h.must("link", "set", "eth0", "up")
	}
	return nt
}

// Hosts are the net's hosts, in order.
func (nt *Net) Hosts() []*Host { return nt.hosts }

// Command is how to run a program inside h: prepend it to the program's argv.
func (h *Host) Command() []string { return []string{"ip", "netns", "exec", h.Name} }

// Cut takes h's link down: nothing reaches it or leaves it, both ways, until Heal.
func (h *Host) Cut() { h.net.must("link", "set", h.veth, "down") }

// Heal brings h's link back up.
func (h *Host) Heal() { h.net.must("link", "set", h.veth, "up") }

// Netem shapes what leaves h (tc netem arguments, e.g. "delay 50ms loss 10%"); "" removes it.
func (h *Host) Netem(args string) {
	h.net.tb.Helper()
	if args == "" {
		_ = run("ip", "netns", "exec", h.Name, "tc", "qdisc", "del", "dev", "eth0", "root")
		return
	}
	if err := run(append([]string{"ip", "netns", "exec", h.Name, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem"}, strings.Fields(args)...)...); err != nil {
		h.net.tb.Fatal(err)
	}
}

func (nt *Net) must(args ...string) {
	nt.tb.Helper()
	if err := run(append([]string{"ip"}, args...)...); err != nil {
		nt.tb.Fatal(err)
	}
}

func (h *Host) must(args ...string) {
	h.net.tb.Helper()
	if err := run(append([]string{"ip", "netns", "exec", h.Name, "ip"}, args...)...); err != nil {
		h.net.tb.Fatal(err)
	}
}

// remove deletes the hosts' namespaces (their ends of the links go with them) and the bridge.
// The test's processes must be gone first (they are stopped by cleanups registered later, which
// run earlier).
func (nt *Net) remove() {
	for _, h := range nt.hosts {
		_ = run("ip", "netns", "del", h.Name)
		_ = run("ip", "link", "del", h.veth)
	}
	_ = run("ip", "link", "del", nt.bridge)
}

// removeLeftovers deletes what processes that no longer run left behind.
func removeLeftovers() {
	out, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if _, ok := leftover(name); ok {
			_ = run("ip", "link", "del", name)
		}
	}
	out, _ = exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if _, ok := leftover(f[0]); ok {
			_ = run("ip", "netns", "del", f[0])
		}
	}
}

// leftover reports whether name was made by this package in a process that has exited.
func leftover(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	pid, err := strconv.Atoi(rest[:i])
	if err != nil || pid == os.Getpid() {
		return 0, false
	}
	if err := syscall.Kill(pid, 0); err == nil || !errors.Is(err, syscall.ESRCH) {
		return pid, false // still running (or not ours to judge)
	}
	return pid, true
}

func run(argv ...string) error {
	var out bytes.Buffer
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
