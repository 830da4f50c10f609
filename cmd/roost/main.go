// Command roost runs a roost cluster member (node or router), a whole local cluster (dev), the
// operator's client (ctl), and runs the benchmarks (bench, an alias of the roost-bench command,
// which is built beside it and not shipped with it). See the README for a tour.
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

const usage = `roost: WebSocket rooms on many servers, each room on exactly one owner node.

Usage:
  roost node   [flags]     run a room-owner node
  roost router [flags]     run a stateless edge router
  roost dev    [flags]     run 3 nodes and a router in one process on 127.0.0.1
  roost ctl    COMMAND     resolve | tail | publish | stream | status | token (roost ctl -h)
  roost bench  [flags]     run the benchmarks on loopback (the roost-bench command, built by make build)

Every flag can also be set as ROOST_<FLAG> (e.g. --max-rooms is ROOST_MAX_ROOMS); a flag given on
the command line wins. Run "roost <command> -h" for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "node":
		err = runNode(ctx, args)
	case "router":
		err = runRouter(ctx, args)
	case "dev":
		err = runDev(ctx, args)
	case "ctl":
		err = runCtl(ctx, args)
	case "bench":
		err = execBench(args)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "roost: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "roost:", strings.TrimPrefix(err.Error(), "roost: "))
		os.Exit(1)
	}
}
