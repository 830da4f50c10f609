package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/protocol"
)

// runDev is `roost dev`: a whole cluster in this one process for trying roost out — --nodes
// nodes and a router on 127.0.0.1, optionally a demo source streaming into a room — running
// until ctx ends, then shut down in reverse order.
func runDev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("roost dev", flag.ContinueOnError)
	httpAddr := fs.String("http", "127.0.0.1:8080", "host:port of the router (roost ctl's default --addr)")
	nodes := fs.Int("nodes", 3, "how many nodes to start")
	logLevel := fs.String("log-level", "warn", "log level: debug, info, warn or error")
	demoRoom := fs.String("demo-stream", "demo-stream", "room the demo source streams a moving picture into (empty: no demo source)")
	demoFPS := fs.Int("demo-fps", 10, "frames per second of the demo source")
	authSecret := fs.String("auth-hmac-secret", "", "turn client auth on with this HS256 secret (mint tokens with roost ctl token)")
	cfg := nodeFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := checkNodeFlags(cfg); err != nil {
		return err
	}
	if *nodes < 1 {
		return errors.New("--nodes must be at least 1")
	}
	if *demoFPS < 1 || *demoFPS > 1000 {
		return fmt.Errorf("--demo-fps %d: use 1 to 1000", *demoFPS)
	}
	if *demoRoom != "" {
		if err := protocol.ValidRoom(*demoRoom); err != nil {
			return fmt.Errorf("--demo-stream: %w", err)
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(devStderr, &slog.HandlerOptions{Level: level}))

	var servers []*server
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i := len(servers) - 1; i >= 0; i-- {
			_ = servers[i].shutdown(sctx, 0)
		}
	}()
	// With client auth on, node-to-node calls must be signed (see checkSecrets): the members all
	// live in this process, so they share a secret nobody else ever sees.
	clusterSecret := ""
	if *authSecret != "" {
		clusterSecret = randomSecret()
	}
	seed := ""
	for i := 1; i <= *nodes; i++ {
		m := devMember(fmt.Sprintf("n%d", i), "127.0.0.1:0", seed, *authSecret, clusterSecret)
		s, err := startNode(m, *cfg, "127.0.0.1:0", log)
		if err != nil {
			return fmt.Errorf("start node n%d: %w", i, err)
		}
		servers = append(servers, s)
		if seed == "" {
			seed = s.ring.GossipAddr()
		}
	}
	rc := routerFlags(flag.NewFlagSet("", flag.ContinueOnError))
	rt, err := startRouter(devMember("r1", *httpAddr, seed, *authSecret, clusterSecret), *rc, log)
	if err != nil {
		return fmt.Errorf("start the router on %s (is another roost dev running? try --http 127.0.0.1:0): %w", *httpAddr, err)
	}
	servers = append(servers, rt)

	deadline := time.Now().Add(10 * time.Second)
	for len(rt.ring.Placement().Nodes()) < *nodes && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if *demoRoom != "" {
		token := ""
		if *authSecret != "" { // the demo source needs a token like any other
			if token, err = auth.Mint([]byte(*authSecret), "demo-source", []string{*demoRoom}, true, 365*24*time.Hour); err != nil {
				return err
			}
		}
		demoCtx, stopDemo := context.WithCancel(ctx)
		demoDone := make(chan struct{})
		go func() {
			defer close(demoDone)
			runDemoSource(demoCtx, rt.URL(), *demoRoom, *demoFPS, token, log)
		}()
		defer func() { stopDemo(); <-demoDone }() // runs before the servers stop
	}
	fmt.Fprintf(devStdout, "roost dev: %d nodes and a router on 127.0.0.1, ring %s\n\n", *nodes, rt.ring.Placement().Version())
	fmt.Fprintf(devStdout, "  router  %s   (roost ctl talks to it by default)\n", rt.URL())
	for _, s := range servers[:len(servers)-1] {
		fmt.Fprintf(devStdout, "  node    %s   %s   tcp %s\n", s.URL(), s.ring.ID(), s.ring.Self().TCP)
	}
	bin := os.Args[0]
	if strings.Contains(bin, "go-build") { // go run: the binary is in a temporary folder
		bin = "go run ./cmd/roost"
	}
	demoHint := ""
	if *demoRoom != "" {
		demoHint = fmt.Sprintf("  %s ctl tail %s   # the demo source's stream, frame by frame\n", bin, *demoRoom)
	}
	fmt.Fprintf(devStdout, `
Try, in another terminal:
  %[1]s ctl tail lobby
  %[1]s ctl publish lobby '{"text":"hello"}'
  curl -sL %[2]s/v1/rooms/lobby     # follows the redirect to the owner
  %[1]s ctl status
%[3]s
Ctrl-C stops the cluster.
`, bin, rt.URL(), demoHint)
	<-ctx.Done()
	fmt.Fprintln(devStdout, "\nroost dev: stopping")
	return nil
}

func devMember(id, httpAddr, seed, authSecret, clusterSecret string) *member {
	m := memberFlags(flag.NewFlagSet("", flag.ContinueOnError), httpAddr)
	m.id, m.gossip, m.join, m.authHMAC, m.secret = id, "127.0.0.1:0", seed, authSecret, clusterSecret
	if err := m.load(); err != nil {
		panic(err) // an HS256 secret alone cannot fail to load
	}
	return m
}
