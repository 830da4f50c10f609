package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/internal/peer"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/node"
	"github.com/roost-dev/roost/ring"
	"github.com/roost-dev/roost/router"
)

// server is one running member: its gossip, its HTTP listener and what serves it.
type server struct {
	drain   func(context.Context) error // hands rooms off before leaving (nodes); nil for routers
	log     *slog.Logger
	ring    *ring.Ring
	http    *http.Server
	httpLn  net.Listener
	tcpAddr string
	closeFn func() error // closes the node or router
	certs   *certFiles   // the TLS certificate, reloaded on SIGHUP; nil for plain HTTP
	served  chan error
	pprof   *http.Server // --pprof; nil when off
}

// startNode opens the listeners, joins the cluster and serves a node.
func startNode(m *member, cfg node.Config, tcp string, log *slog.Logger) (*server, error) {
	httpLn, err := net.Listen("tcp", m.http)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w", m.http, err)
	}
	tcpLn, err := net.Listen("tcp", tcp)
	if err != nil {
		httpLn.Close()
		return nil, fmt.Errorf("--tcp %s: %w", tcp, err)
	}
	pprofLn, err := listenPprof(m)
	if err != nil {
		httpLn.Close()
		tcpLn.Close()
		return nil, err
	}
	r, err := ring.New(m.ringConfig(ring.RoleNode, httpLn.Addr().String(), tcpLn.Addr().String(), log))
	if err != nil {
		httpLn.Close()
		tcpLn.Close()
		closeIf(pprofLn)
		return nil, err
	}
	cfg.Logger, cfg.Auth, cfg.Origins, cfg.PeerTLS = log, m.auth, m.allowedOrigins, m.clientTLS
	cfg.MaxAddrConns, cfg.MaxHandshakes, cfg.TrustedProxies = m.maxAddrConns, m.maxHandshakes, m.trustedProxies
	if m.secret != "" {
		cfg.PeerKey = peer.Key(m.secret)
	}
	if m.secretAccept != "" {
		cfg.PeerAcceptKeys = [][]byte{peer.Key(m.secretAccept)}
	}
	limit.SoftLimit(cfg.MaxMemory) // the collector works harder near --max-memory-mib
	n, err := node.New(cfg, r)
	if err != nil {
		r.Close()
		httpLn.Close()
		tcpLn.Close()
		closeIf(pprofLn)
		return nil, err
	}
	go func() {
		if err := n.ServeTCP(tcpLn); err != nil {
			log.Error("stream ingest stopped", "err", err)
		}
	}()
	s := serve(log, m, r, httpLn, pprofLn, n.Handler(), n.Close)
	s.drain = n.Drain
	return s, nil
}

// startRouter opens the listener, joins the cluster and serves a router.
func startRouter(m *member, cfg router.Config, log *slog.Logger) (*server, error) {
	httpLn, err := net.Listen("tcp", m.http)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w", m.http, err)
	}
	pprofLn, err := listenPprof(m)
	if err != nil {
		httpLn.Close()
		return nil, err
	}
	r, err := ring.New(m.ringConfig(ring.RoleRouter, httpLn.Addr().String(), "", log))
	if err != nil {
		httpLn.Close()
		closeIf(pprofLn)
		return nil, err
	}
	cfg.Logger, cfg.Auth, cfg.Origins, cfg.DialTLS = log, m.auth, m.allowedOrigins, m.clientTLS
	cfg.MaxAddrConns, cfg.MaxHandshakes, cfg.TrustedProxies = m.maxAddrConns, m.maxHandshakes, m.trustedProxies
	if m.secret != "" {
		cfg.PeerKey = peer.Key(m.secret) // edge legs are signed like node-to-node calls
	}
	limit.SoftLimit(cfg.MaxMemory)
	rt, err := router.New(cfg, r)
	if err != nil {
		r.Close()
		httpLn.Close()
		closeIf(pprofLn)
		return nil, err
	}
	return serve(log, m, r, httpLn, pprofLn, rt.Handler(), rt.Close), nil
}

// listenPprof opens the --pprof listener; nil when the flag is empty.
func listenPprof(m *member) (net.Listener, error) {
	if m.pprof == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", m.pprof)
	if err != nil {
		return nil, fmt.Errorf("--pprof %s: %w", m.pprof, err)
	}
	return ln, nil
}

func closeIf(ln net.Listener) {
	if ln != nil {
		ln.Close()
	}
}

func serve(log *slog.Logger, m *member, r *ring.Ring, ln, pprofLn net.Listener, h http.Handler, closeFn func() error) *server {
	log = log.With("node", r.ID()) // the member's own lines, like every line of its node or router
	s := &server{log: log, ring: r, httpLn: ln, closeFn: closeFn, served: make(chan error, 1), certs: m.certs,
		http: &http.Server{Handler: h, ReadHeaderTimeout: m.handshake, IdleTimeout: 6 * m.handshake,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}}
	if m.certs != nil {
		ln = tls.NewListener(ln, m.certs.serverConfig())
	}
	go func() { s.served <- s.http.Serve(ln) }()
	if pprofLn != nil {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		s.pprof = &http.Server{Handler: mux, ReadHeaderTimeout: m.handshake}
		go func() { _ = s.pprof.Serve(pprofLn) }() // ends with Shutdown in shutdown
		log.Info("serving profiles", "pprof", "http://"+pprofLn.Addr().String()+"/debug/pprof/")
	}
	log.Info("serving", "http", r.Self().HTTPURL(), "listen", ln.Addr().String(), "role", r.Self().Role)
	return s
}

// URL is the member's advertised base URL.
func (s *server) URL() string { return s.ring.Self().HTTPURL() }

// shutdown drains a node (its rooms move to their owners on the ring without it, within
// drainTimeout), leaves the gossip, then closes client connections and the listener, within ctx.
func (s *server) shutdown(ctx context.Context, drainTimeout time.Duration) error {
	var errs []error
	if s.drain != nil && drainTimeout > 0 {
		dctx, cancel := context.WithTimeout(ctx, drainTimeout)
		if err := s.drain(dctx); err != nil {
			// Rooms not handed off start afresh elsewhere, their state lost: the exit code says
			// so, after the rest of the shutdown (issue 22).
			s.log.Error("drain incomplete", "err", err)
			errs = append(errs, err)
		}
		cancel()
	}
	leave := 2 * time.Second
	if d, ok := ctx.Deadline(); ok {
		leave = min(leave, time.Until(d)/2)
	}
	errs = append(errs, s.ring.Leave(leave))
	errs = append(errs, s.closeFn())
	errs = append(errs, s.http.Shutdown(ctx))
	if s.pprof != nil {
		errs = append(errs, s.pprof.Close()) // a running CPU profile need not finish
	}
	errs = append(errs, s.ring.Close())
	if err := <-s.served; !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// runMember serves until ctx ends (a signal), then shuts down: drain within drainTimeout (nodes),
// the rest within timeout.
func runMember(ctx context.Context, s *server, drainTimeout, timeout time.Duration) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err := <-s.served:
			s.served <- err
			s.log.Error("HTTP server stopped", "err", err)
			break wait
		case <-hup:
			if s.certs == nil {
				s.log.Info("SIGHUP: no --tls-cert to reload")
				continue
			}
			if err := s.certs.reload(); err != nil {
				s.log.Error("SIGHUP: TLS certificate not reloaded; serving the previous one", "err", err)
				continue
			}
			s.log.Info("SIGHUP: TLS certificate reloaded", "cert", s.certs.cert)
		}
	}
	s.log.Info("shutting down", "timeout", timeout)
	sctx, cancel := context.WithTimeout(context.Background(), drainTimeout+timeout)
	defer cancel()
	err := s.shutdown(sctx, drainTimeout)
	s.log.Info("stopped", "err", err)
	return err
}

func runNode(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("roost node", flag.ContinueOnError)
	m := memberFlags(fs, ":9000")
	cfg := nodeFlags(fs)
	tcp := fs.String("tcp", ":9100", "host:port of TCP stream ingest (port 0 picks one)")
	drain := fs.Duration("drain-timeout", 30*time.Second, "on SIGTERM, how long the node may take to hand its rooms off before it leaves (0: leave at once)")
	log, err := m.setUp(fs, args)
	if err != nil {
		return err
	}
	if err := checkNodeFlags(cfg); err != nil {
		return err
	}
	s, err := startNode(m, *cfg, *tcp, log)
	if err != nil {
		return err
	}
	return runMember(ctx, s, *drain, m.shutdown)
}

func runRouter(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("roost router", flag.ContinueOnError)
	m := memberFlags(fs, ":8080")
	cfg := routerFlags(fs)
	log, err := m.setUp(fs, args)
	if err != nil {
		return err
	}
	s, err := startRouter(m, *cfg, log)
	if err != nil {
		return err
	}
	return runMember(ctx, s, 0, m.shutdown)
}

func routerFlags(fs *flag.FlagSet) *router.Config {
	c := router.DefaultConfig()
	fs.Int64Var(&c.MaxFrame, "max-frame", c.MaxFrame, "largest WebSocket message a client may send through the router, bytes (larger: close 1009)")
	fs.DurationVar(&c.PingInterval, "ping-interval", c.PingInterval, "how often idle proxied connections are pinged")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "longest one write may take")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", c.DialTimeout, "longest a dial to the owner may take")
	fs.DurationVar(&c.APITimeout, "api-timeout", c.APITimeout, "how long a proxied server API request may take, the owner's answer included (keep it above the nodes' --api-timeout)")
	fs.DurationVar(&c.RedialTimeout, "redial-timeout", c.RedialTimeout, "how long to keep re-dialing a room's new owner after a move or an owner's loss before closing the client")
	fs.IntVar(&c.PendingBytes, "pending-bytes", c.PendingBytes, "bytes of one client's unacked publishes the router keeps to re-send after a move (more: error frame 'overloaded')")
	fs.IntVar(&c.DedupeIDs, "dedupe-ids", c.DedupeIDs, "the nodes' --dedupe-ids: after a broken owner leg, a publish is re-sent only while the room still remembers its id (older: error frame 'owner_unavailable')")
	fs.Var((*mebibytes)(&c.MaxMemory), "max-memory-mib", "MiB of memory above which the router keeps (so takes) no more publishes; 0: off; default 80% of the container's or machine's memory")
	fs.BoolVar(&c.Edge, "edge", c.Edge, "serve each room's clients over one connection (an edge leg) to its owner, fanning its frames out here; false: one owner connection per client")
	fs.IntVar(&c.SendQueue, "send-queue", c.SendQueue, "frames that may wait for one client of an edge leg before it alone is dropped with 4008")
	fs.IntVar(&c.SendQueueBytes, "send-queue-bytes", c.SendQueueBytes, "bytes of frames that may wait for one client of an edge leg before it alone is dropped with 4008")
	fs.Var((*mebibytes)(&c.MemoryBudget), "memory-budget-mib", "MiB all clients' unacked publishes may hold together (more: 'overloaded'); default 0: half of --max-memory-mib")
	return &c
}

// setUp parses a member's flags from args and loads what they name (secrets, keys,
// certificates), warning when the member runs open. It returns the member's logger.
func (m *member) setUp(fs *flag.FlagSet, args []string) (*slog.Logger, error) {
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	log, err := m.logger()
	if err != nil {
		return nil, err
	}
	if err := m.load(); err != nil {
		return nil, err
	}
	if err := m.checkSecrets(fs); err != nil {
		return nil, err
	}
	warnOpen(log.With("node", m.id), m)
	return log, nil
}

func warnOpen(log *slog.Logger, m *member) {
	if m.secret == "" {
		log.Warn("running open: no --cluster-secret, so gossip is unencrypted, node-to-node calls are unsigned, and anyone who reaches the gossip port can join")
	}
	if m.auth == nil {
		log.Warn("running open: no client auth (--auth-hmac-secret, --auth-public-key or --auth-jwks), so anyone who reaches this member may join and publish to any room")
	}
	if n := len(m.authHMAC); n > 0 && n < auth.MinSecret {
		log.Warn("the HS256 secret is short; use at least 32 random bytes", "bytes", n)
	}
}
