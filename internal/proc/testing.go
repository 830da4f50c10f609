package proc

import (
	"fmt"
	"testing"
	"time"

	"github.com/roost-dev/roost/internal/wait"
)

// StartT starts the process as Start does, failing tb when it does not come up. The process is
// killed when the test ends, whether it passed or not, and its output is printed when it failed.
func StartT(tb testing.TB, spec Spec) *Proc {
	tb.Helper()
	p, err := Start(tb.Context(), spec)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		p.Kill()
		if tb.Failed() {
			tb.Logf("log of %s:\n%s", p.name(), p.Log())
		}
	})
	return p
}

// WaitRingT waits up to 20 s until Agree(ps, nodes), failing tb when they do not.
func WaitRingT(tb testing.TB, ps []*Proc, nodes int) {
	tb.Helper()
	wait.Eventually(tb, 20*time.Second, fmt.Sprintf("processes agree on a ring of %d nodes", nodes),
		func() bool { return Agree(ps, nodes) })
}

// FreePort is a loopback port free for TCP (and UDP with udpToo), for a process a test starts
// on its own.
func FreePort(tb testing.TB, udpToo bool) string {
	tb.Helper()
	addr, err := freePort(udpToo)
	if err != nil {
		tb.Fatal(err)
	}
	return addr
}
