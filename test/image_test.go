package test

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/internal/wait"
)

// TestContainerImageBinary checks what the Dockerfile promises without a Docker engine (none runs
// on CI machines): the binary builds with CGO_ENABLED=0 into a static executable, which is what
// lets it run on distroless/static, and it serves as the unprivileged user the image runs it as.
func TestContainerImageBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts a process")
	}
	docker, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`(?m)^RUN CGO_ENABLED=0 go build .* \./cmd/roost$`,
		`(?m)^FROM gcr\.io/distroless/static-debian12:nonroot$`,
		`(?m)^USER nonroot:nonroot$`,
		`(?m)^EXPOSE 7946/tcp 7946/udp 9000/tcp 9100/tcp`,
		`(?m)^CMD \["node"\]$`,
	} {
		if !regexp.MustCompile(want).Match(docker) {
			t.Errorf("Dockerfile has no line matching %s", want)
		}
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "roost")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/roost")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	libs, _ := f.ImportedLibraries()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary asks for a dynamic loader: distroless/static has none")
		}
	}
	f.Close()
	if len(libs) > 0 {
		t.Fatalf("the binary links %v: distroless/static has no shared libraries", libs)
	}

	if os.Geteuid() != 0 {
		t.Log("not root: cannot switch to the image's user 65532; checked the build only")
		return
	}
	// The image's user (distroless nonroot) needs to reach the binary.
	for d := dir; strings.HasPrefix(d, os.TempDir()+string(filepath.Separator)); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	http := proc.FreePort(t, false)
	cmd := exec.Command(bin, "node", "--id", "img", "--gossip", proc.FreePort(t, true), "--http", http, "--tcp", proc.FreePort(t, false))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65532, Gid: 65532}, Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	wait.Eventually(t, 10*time.Second, "the node, as user 65532, is ready", func() bool {
		resp, err := quickHTTP.Get("http://" + http + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Uid:\s+65532\s+65532\s+65532\s+65532$`).Match(status) {
		t.Fatalf("the node does not run as 65532:\n%s", status)
	}
}
