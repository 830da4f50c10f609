package proc

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-dev/roost/internal/wait"
)

func TestMain(m *testing.M) {
	code := m.Run()
	RemoveBuilt()
	os.Exit(code)
}

// TestNodeProcess starts a node process, reads its view of the cluster, pauses and wakes it, and
// drains it with SIGTERM: it exits 0.
func TestNodeProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts roost")
	}
	n := StartT(t, Spec{Binary: Roost(t), Role: "node", ID: "n1", Args: []string{"--log-level", "warn"}, Ready: "/readyz"})
	if n.Gossip == "" || n.TCP == "" || n.URL() != "http://"+n.HTTP {
		t.Fatalf("addresses: %+v", n)
	}
	WaitRingT(t, []*Proc{n}, 1)
	if c, err := n.Cluster(); err != nil || c.Self != "n1" {
		t.Fatalf("cluster: %+v %v", c, err)
	}
	if st := n.State("n1"); st != "alive" {
		t.Fatalf("n1 reports itself %q", st)
	}
	n.Signal(syscall.SIGSTOP)
	// kill(2) returns before the process has stopped: a request sent at once may still be
	// answered by a thread already running. Ask only once the kernel says it is stopped.
	wait.Eventually(t, 5*time.Second, "the process is stopped", func() bool { return stopped(n.Pid()) })
	if st := n.State("n1"); st != "unreachable" {
		t.Fatalf("a stopped process answered: %q", st)
	}
	n.Signal(syscall.SIGCONT)
	if !n.Stop(30*time.Second) || n.ExitCode() != 0 {
		t.Fatalf("SIGTERM: exit code %d\n%s", n.ExitCode(), n.Log())
	}
}

func TestStartReportsAProcessThatExits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts roost")
	}
	_, err := Start(context.Background(), Spec{Binary: Roost(t), Role: "node", ID: "n1", Args: []string{"--no-such-flag"}})
	if err == nil || !strings.Contains(err.Error(), "exited before serving") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("got %v", err)
	}
}

// stopped reports whether the kernel lists pid as stopped (state T in /proc/PID/stat).
func stopped(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, ok := strings.Cut(string(b), ") ") // the command name may hold spaces
	return ok && strings.HasPrefix(rest, "T")
}
