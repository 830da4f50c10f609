// Command roost-bench is roost's benchmark suite: a load generator that runs roost nodes and
// routers as processes on loopback, measures them beside a minimal broadcast server (its own
// `roost-bench baseline`) and prints a table and a JSON line per row. It lives apart from the
// server so that the binary users deploy holds only the server; `roost bench` runs it.
//
//	make build && bin/roost-bench --quick
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	if args := os.Args[1:]; len(args) > 0 && args[0] == "baseline" { // started by the fan-out workloads
		err = runBaseline(ctx, args[1:])
	} else {
		err = runBench(ctx, args)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "roost-bench:", strings.TrimPrefix(err.Error(), "roost-bench: "))
		os.Exit(1)
	}
}
