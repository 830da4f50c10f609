package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// execBench replaces this process with roost-bench (found next to this executable, else on
// PATH), passing args on and naming this binary as the one to run nodes and routers with. The
// benchmark suite is a command of its own so that the server binary holds only the server; roost
// bench stays for the habit. It returns only when the exec failed.
func execBench(args []string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	bench := filepath.Join(filepath.Dir(self), "roost-bench")
	if _, err := os.Stat(bench); err != nil {
		if bench, err = exec.LookPath("roost-bench"); err != nil {
			return fmt.Errorf("bench runs the roost-bench command, which is neither next to %s nor on PATH: build it with make build (or go build -o bin/roost-bench ./cmd/roost-bench)", self)
		}
	}
	// --roost first, so that one given in args wins.
	argv := append([]string{bench, "--roost", self}, args...)
	if err := syscall.Exec(bench, argv, os.Environ()); err != nil {
		return fmt.Errorf("bench: exec %s: %w", bench, err)
	}
	return nil
}
