package proc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

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
// build) it is $ROOST_BIN_DIR/name, and nothing is built. With -short, the test is skipped: every
// test that starts processes goes through here.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("starts processes (skipped with -short)")
	}
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
