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
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

	mu      sync.Mutex
	prio    int  // the last tc filter priority and ip rule/table number handed out
	aliases int  // the addresses Alias handed out
	sink    bool // the veth pair drop redirects to exists
}

// Host is one namespace on the net.
type Host struct {
	Name string // the namespace
	Addr string // its IPv4 address on the net
	veth string // the bridge's end of its link
	net  *Net

	clsact bool // the bridge's end of its link has a clsact qdisc (guarded by net.mu)
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

// Impairment is what Netem does to each packet a host sends: lose it with probability Loss, else
// deliver it Delay later, give or take up to Jitter (uniformly; packets may overtake each other,
// as with tc netem).
type Impairment struct {
	Loss          float64
	Delay, Jitter time.Duration
}

func (im Impairment) String() string {
	return fmt.Sprintf("loss %.0f%%, delay %s ± %s", im.Loss*100, im.Delay, im.Jitter)
}

// Netem impairs every IPv4 packet each host of the net sends (to another host or to the test),
// so a packet between two hosts is impaired once on its way; ARP is left alone. The undo it
// returns (also run when the test ends) takes the impairment off.
//
// It works without the kernel's netem (which many kernels, such as this project's CI machines',
// lack): a filter on the bridge's end of each host's link redirects the packets to a TAP device
// of the test's own, whose frames the test holds for their delay, or drops, and then writes
// back; the TAP is a bridge port that learns nothing and is flooded nothing, so the bridge
// forwards each frame written back to its destination and never sends a frame to the TAP.
func (nt *Net) Netem(im Impairment) (undo func()) {
	nt.tb.Helper()
	name := nt.bridge + "t"
	tap, err := openTAP(name)
	if err != nil {
		nt.tb.Fatal(err)
	}
	nt.must("link", "set", name, "master", nt.bridge)
	nt.must("link", "set", name, "type", "bridge_slave", "learning", "off", "flood", "off", "mcast_flood", "off")
	nt.must("link", "set", name, "up")
	var (
		mu     sync.Mutex
		closed bool
	)
	go func() {
		rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 22))
		for {
			buf := make([]byte, 65536)
			n, err := tap.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			lose := rnd.Float64() < im.Loss
			d := im.Delay
			if im.Jitter > 0 {
				d += time.Duration(rnd.Int64N(int64(2*im.Jitter))) - im.Jitter
			}
			mu.Unlock()
			if lose {
				continue
			}
			frame := buf[:n]
			time.AfterFunc(max(d, 0), func() {
				mu.Lock()
				defer mu.Unlock()
				if !closed {
					_, _ = tap.Write(frame)
				}
			})
		}
	}()
	var undos []func()
	for _, h := range nt.hosts {
		undos = append(undos, h.filter("ingress", []string{"u32", "match", "u32", "0", "0"}, "mirred", "egress", "redirect", "dev", name))
	}
	return nt.undo(func() {
		for _, u := range undos {
			u()
		}
		mu.Lock()
		closed = true
		mu.Unlock()
		tap.Close() // the TAP goes with its last file
	})
}

// openTAP makes a TAP device called name; it lasts as long as the file.
func openTAP(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("make TAP %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

// Direction is which way along a host's link packets go.
type Direction int

const (
	// ToHost: packets the host receives.
	ToHost Direction = iota
	// FromHost: packets the host sends.
	FromHost
)

func (d Direction) String() string {
	if d == ToHost {
		return "to the host"
	}
	return "from the host"
}

// hook is where on the bridge's end of the link tc sees packets going dir: what the host sends
// arrives there (ingress), what it receives leaves there (egress).
func (d Direction) hook() string {
	if d == ToHost {
		return "egress"
	}
	return "ingress"
}

// CutOneWay drops every IPv4 packet going dir on h's link, the other way passing untouched.
// ARP still passes both ways, so the way left open keeps working: h's neighbours go on
// resolving it, and it them. The undo it returns (also run when the test ends) heals the cut.
func (h *Host) CutOneWay(dir Direction) (heal func()) {
	h.net.tb.Helper()
	return h.filter(dir.hook(), []string{"u32", "match", "u32", "0", "0"}, h.net.drop()...)
}

// BlockTCP drops TCP to and from port between any two of hosts, in both directions, while
// everything else flows: their gossip, and TCP on port with any other host or with the test
// (the router's and the clients' connections). The undo it returns (also run when the test
// ends) lifts the block.
func (nt *Net) BlockTCP(port int, hosts ...*Host) (undo func()) {
	nt.tb.Helper()
	var undos []func()
	for _, h := range hosts {
		for _, peer := range hosts {
			if peer == h {
				continue
			}
			// Every packet between two of hosts leaves one of them: drop it there, on its way
			// out, whichever end holds port.
			for _, end := range []string{"dport", "sport"} {
				undos = append(undos, h.filter("ingress", []string{"u32", "match", "ip", "protocol", "6", "0xff",
					"match", "ip", "dst", peer.Addr + "/32", "match", "ip", end, strconv.Itoa(port), "0xffff"}, nt.drop()...))
			}
		}
	}
	return nt.undo(func() {
		for _, u := range undos {
			u()
		}
	})
}

// filter adds a tc filter at hook ("ingress": what h sends, "egress": what h receives) of the
// bridge's end of h's link: the IPv4 packets match (a classifier and its match) selects get
// action. It returns the filter's removal, which also runs when the test ends. Filters live on
// a clsact qdisc, which leaves the link's root qdisc alone; they are deleted with the link.
func (h *Host) filter(hook string, match []string, action ...string) (undo func()) {
	nt := h.net
	nt.tb.Helper()
	nt.mu.Lock()
	if !h.clsact {
		if err := run("tc", "qdisc", "add", "dev", h.veth, "clsact"); err != nil {
			nt.mu.Unlock()
			nt.tb.Fatal(err)
		}
		h.clsact = true
	}
	nt.prio++
	prio := strconv.Itoa(nt.prio)
	nt.mu.Unlock()
	argv := append([]string{"tc", "filter", "add", "dev", h.veth, hook, "protocol", "ip", "prio", prio}, match...)
	if err := run(append(append(argv, "action"), action...)...); err != nil {
		nt.tb.Fatal(err)
	}
	return nt.undo(func() { _ = run("tc", "filter", "del", "dev", h.veth, hook, "protocol", "ip", "prio", prio) })
}

// drop is the tc action that drops a packet. Kernels without the gact action (this project's CI
// machines') can still redirect: to a veth whose other end is down, which discards what it is
// given. The pair is made the first time, and goes with the net.
func (nt *Net) drop() []string {
	nt.tb.Helper()
	sink := nt.bridge + "s0"
	nt.mu.Lock()
	defer nt.mu.Unlock()
	if !nt.sink {
		nt.must("link", "add", sink, "type", "veth", "peer", "name", nt.bridge+"s1")
		nt.must("link", "set", sink, "up")
		nt.sink = true
	}
	return []string{"mirred", "egress", "redirect", "dev", sink}
}

// undo makes f run once: when the caller calls it, or when the test ends, whichever is first.
func (nt *Net) undo(f func()) func() {
	var once sync.Once
	do := func() { once.Do(f) }
	nt.tb.Cleanup(do)
	return do
}

// Alias gives h one more address on its link (a secondary one, on the same subnet) and returns
// it: a process in h may bind it, and Divert can send some of its traffic elsewhere.
func (h *Host) Alias() string {
	nt := h.net
	nt.tb.Helper()
	nt.mu.Lock()
	nt.aliases++
	addr := fmt.Sprintf("%s.%d", nt.subnet, 100+nt.aliases)
	nt.mu.Unlock()
	h.must("addr", "add", addr+"/24", "dev", "eth0")
	return addr
}

// Divert makes TCP to addr:port sent by the hosts from go to via instead of to addr's own host
// (the rest of addr's traffic, and port from any other host, still goes there). via takes addr
// as a local address without answering ARP for it, so a listener made there with via.Listen
// receives what is diverted: a proxy, in front of one port of one host, for some callers only.
// The undo it returns (also run when the test ends) sends everything straight again.
func (nt *Net) Divert(addr string, port int, via *Host, from ...*Host) (undo func()) {
	nt.tb.Helper()
	via.must("addr", "add", addr+"/32", "dev", "lo")
	// Reply to ARP only for addresses on the interface asked on: addr is on lo, so its own host
	// goes on answering for it.
	if err := run("ip", "netns", "exec", via.Name, "sysctl", "-q", "-w", "net.ipv4.conf.all.arp_ignore=1"); err != nil {
		nt.tb.Fatal(err)
	}
	nt.mu.Lock()
	nt.prio++
	table := strconv.Itoa(1000 + nt.prio)
	nt.mu.Unlock()
	for _, h := range from {
		h.must("route", "add", addr+"/32", "via", via.Addr, "dev", "eth0", "table", table)
		h.must("rule", "add", "to", addr+"/32", "ipproto", "tcp", "dport", strconv.Itoa(port), "lookup", table, "priority", table)
	}
	return nt.undo(func() {
		for _, h := range from {
			_ = run("ip", "netns", "exec", h.Name, "ip", "rule", "del", "priority", table)
			_ = run("ip", "netns", "exec", h.Name, "ip", "route", "flush", "table", table)
		}
		_ = run("ip", "netns", "exec", via.Name, "ip", "addr", "del", addr+"/32", "dev", "lo")
	})
}

// Listen opens a listener in h's network namespace, for a server the test runs itself (a proxy,
// a fake peer): the socket stays in h's namespace, served by the test's goroutines as any other.
func (h *Host) Listen(network, address string) (l net.Listener, err error) {
	err = h.in(func() error { l, err = net.Listen(network, address); return err })
	return l, err
}

// Dial connects from h's network namespace, as a program running in h would.
func (h *Host) Dial(network, address string, timeout time.Duration) (c net.Conn, err error) {
	err = h.in(func() error { c, err = net.DialTimeout(network, address, timeout); return err })
	return c, err
}

// in runs f on a thread inside h's network namespace: the sockets f makes belong there. The
// thread goes back to the test's namespace afterwards, rather than end: a thread that ends kills
// the processes it started (proc sets Pdeathsig), and any thread may have started some.
func (h *Host) in(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer home.Close()
		ns, err := os.Open("/var/run/netns/" + h.Name)
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("setns %s: %w", h.Name, err)
			return
		}
		err = f()
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and ends with this goroutine, never to run in the wrong namespace
		done <- err
	}()
	return <-done
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
	if nt.sink {
		_ = run("ip", "link", "del", nt.bridge+"s0")
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
