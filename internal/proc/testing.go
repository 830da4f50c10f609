package proc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
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

var built struct {
	sync.Mutex
	dir  string
	bins map[string]string
	errs map[string]error
}

// Roost is the roost binary: Binary(tb, "roost").
func Roost(tb testing.TB) string { return Binary(tb, "roost") }

// Binary is the path of the module's command cmd/name, built once per test binary into a
// temporary directory (RemoveBuilt removes it). With ROOST_BIN_DIR set (e.g. to bin after make
// build) it is $ROOST_BIN_DIR/name, and nothing is built.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	if dir := os.Getenv("ROOST_BIN_DIR"); dir != "" {
		return filepath.Join(dir, name)
	}
	built.Lock()
	defer built.Unlock()
	if p, ok := built.bins[name]; ok {
		return p
	}
	if err, ok := built.errs[name]; ok {
		tb.Fatal(err)
	}
	p, err := build(name)
	if err != nil {
		if built.errs == nil {
			built.errs = map[string]error{}
		}
		built.errs[name] = err
		tb.Fatal(err)
	}
	if built.bins == nil {
		built.bins = map[string]string{}
	}
	built.bins[name] = p
	return p
}

// build builds cmd/name into the shared temporary directory; the caller holds built's lock.
func build(name string) (string, error) {
	if built.dir == "" {
		dir, err := os.MkdirTemp("", "roost-test-bin-")
		if err != nil {
			return "", err
		}
		built.dir = dir
	}
	p := filepath.Join(built.dir, name)
	pkg := "github.com/roost-dev/roost/cmd/" + name
	if out, err := exec.Command("go", "build", "-o", p, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return p, nil
}

// RemoveBuilt removes what Binary built. Call it from TestMain, after m.Run.
func RemoveBuilt() {
	built.Lock()
	defer built.Unlock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	built.dir, built.bins = "", nil
}
