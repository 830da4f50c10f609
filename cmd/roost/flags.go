package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/limit"
	"github.com/roost-dev/roost/node"
	"github.com/roost-dev/roost/node/webhook"
	"github.com/roost-dev/roost/ring"
)

// parse parses args into fs, then fills every flag not given on the command line from its
// ROOST_<FLAG_IN_UPPER_SNAKE> environment variable.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, e)
			}
		}
	})
	return err
}

func envName(flagName string) string {
	return "ROOST_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// member holds the flags every cluster member has.
type member struct {
	id, gossip, advertise, http, join, secret, secretFile string
	secretAccept                                          string
	authHMAC, authHMACFile, authPublicKey, authJWKS       string
	logFormat, logLevel                                   string
	tlsCert, tlsKey, tlsCA, origins, trusted              string
	pprof                                                 string
	maxAddrConns, maxHandshakes                           int
	shutdown, handshake                                   time.Duration
	ring                                                  ring.Config

	// Built by load from the flags above.
	auth           *auth.Verifier
	certs          *certFiles  // nil: plain HTTP
	clientTLS      *tls.Config // for dialing https:// and wss:// members
	allowedOrigins auth.Origins
	trustedProxies []netip.Prefix
}

func memberFlags(fs *flag.FlagSet, httpDefault string) *member {
	host, _ := os.Hostname()
	m := &member{ring: ring.DefaultConfig()}
	fs.StringVar(&m.id, "id", host, "unique name of this member in the cluster")
	fs.StringVar(&m.gossip, "gossip", "0.0.0.0:7946", "host:port for gossip, TCP and UDP (port 0 picks one)")
	fs.StringVar(&m.advertise, "advertise", "", "host:port others reach this member's gossip on (NAT, Kubernetes); default: the bind address or a private IP")
	fs.StringVar(&m.http, "http", httpDefault, "host:port of the HTTP and WebSocket listener (port 0 picks one)")
	fs.StringVar(&m.join, "join", "", "comma-separated seeds to join: host:port or DNS names (which may resolve to several addresses)")
	fs.StringVar(&m.secret, "cluster-secret", "", "shared secret of the cluster: encrypts gossip, signs node-to-node calls (every member needs the same one)")
	fs.StringVar(&m.secretFile, "cluster-secret-file", "", "file holding the cluster secret (instead of --cluster-secret)")
	fs.StringVar(&m.secretAccept, "cluster-secret-accept", "", "another cluster secret whose gossip and calls are accepted, never sent with: for rotating the secret without downtime")
	fs.StringVar(&m.authHMAC, "auth-hmac-secret", "", "client auth: HS256 secret tokens are signed with")
	fs.StringVar(&m.authHMACFile, "auth-hmac-secret-file", "", "client auth: file holding the HS256 secret")
	fs.StringVar(&m.authPublicKey, "auth-public-key", "", "client auth: PEM file of the RSA or EC public key (RS256, ES256)")
	fs.StringVar(&m.authJWKS, "auth-jwks", "", "client auth: JWKS file (RS256, ES256; keys picked by kid)")
	fs.StringVar(&m.tlsCert, "tls-cert", "", "PEM certificate (chain) file: serve HTTP and WebSocket over TLS (re-read on SIGHUP)")
	fs.StringVar(&m.tlsKey, "tls-key", "", "PEM private key file of --tls-cert (re-read on SIGHUP)")
	fs.StringVar(&m.tlsCA, "tls-ca", "", "PEM file of CAs to trust, besides the system's, when dialing members that serve TLS")
	fs.StringVar(&m.origins, "allowed-origins", "", "comma-separated browser origins that may open WebSockets (https://app.example.com, https://*.example.com); empty: any")
	fs.StringVar(&m.trusted, "trusted-proxies", "", "comma-separated addresses or CIDRs of load balancers whose X-Forwarded-For names the client (cluster members are trusted anyway)")
	fs.IntVar(&m.maxAddrConns, "max-addr-conns", 1000, "connections one client address may hold open (more: 429)")
	fs.IntVar(&m.maxHandshakes, "max-handshakes", 1024, "WebSocket handshakes in progress at once (more: 503 overloaded with Retry-After, which clients retry with jitter); 0: no bound")
	fs.StringVar(&m.pprof, "pprof", "", "host:port of a separate listener serving Go's /debug/pprof profiles (keep it on loopback); empty: off")
	fs.StringVar(&m.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&m.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&m.handshake, "handshake-timeout", 10*time.Second, "longest a client may take to send its HTTP request headers (a slowloris guard); idle keep-alive connections close after 6x")
	fs.DurationVar(&m.shutdown, "shutdown-timeout", 10*time.Second, "how long a clean shutdown may take on SIGTERM/SIGINT")
	r := &m.ring
	fs.IntVar(&r.Placement.Partitions, "partitions", r.Placement.Partitions, "hash partitions rooms fall into (same on every member)")
	fs.IntVar(&r.Placement.Replicas, "replicas", r.Placement.Replicas, "points per node on the hash circle (same on every member)")
	fs.Float64Var(&r.Placement.Load, "load", r.Placement.Load, "bounded-load factor: a node holds at most this times the mean (same on every member)")
	fs.DurationVar(&r.ProbeInterval, "probe-interval", r.ProbeInterval, "memberlist: how often each member probes another")
	fs.DurationVar(&r.ProbeTimeout, "probe-timeout", r.ProbeTimeout, "memberlist: how long a probe waits for its ack")
	fs.IntVar(&r.SuspicionMult, "suspicion-mult", r.SuspicionMult, "memberlist: a suspect is declared dead after this many probe intervals (×log10 N)")
	fs.IntVar(&r.SuspicionMaxMult, "suspicion-max-mult", r.SuspicionMaxMult, "memberlist: a suspicion starts this many times longer and shrinks as members confirm it (few members: longer)")
	fs.DurationVar(&r.GossipInterval, "gossip-interval", r.GossipInterval, "memberlist: how often state is gossiped")
	fs.DurationVar(&r.Debounce, "ring-debounce", r.Debounce, "quiet period that ends a burst of membership events before placement is rebuilt")
	return m
}

// ringConfig completes the ring config from the flags, for a member whose HTTP (and TCP) listeners
// are already open.
func (m *member) ringConfig(role ring.Role, httpAddr, tcpAddr string, log *slog.Logger) ring.Config {
	c := m.ring
	c.ID, c.Role, c.Gossip, c.Advertise, c.HTTP, c.TCP, c.Logger = m.id, role, m.gossip, m.advertise, httpAddr, tcpAddr, log
	c.Join = splitList(m.join)
	c.TLS = m.certs != nil
	if m.secret != "" {
		c.SecretKey = ring.KeyFromSecret(m.secret)
	}
	if m.secretAccept != "" {
		c.AcceptKeys = [][]byte{ring.KeyFromSecret(m.secretAccept)}
	}
	return c
}

// load reads the secret files and builds the token verifier; call it once flags are parsed.
func (m *member) load() error {
	read := func(flagName, path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", flagName, err)
		}
		return b, nil
	}
	if m.secretFile != "" {
		if m.secret != "" {
			return errors.New("give --cluster-secret or --cluster-secret-file, not both")
		}
		b, err := read("cluster-secret-file", m.secretFile)
		if err != nil {
			return err
		}
		if m.secret = strings.TrimSpace(string(b)); m.secret == "" {
			return fmt.Errorf("--cluster-secret-file %s is empty", m.secretFile)
		}
	}
	if m.secretAccept != "" && m.secret == "" {
		return errors.New("--cluster-secret-accept needs --cluster-secret (the secret this member sends with)")
	}
	var cfg auth.Config
	cfg.HMACSecret = []byte(m.authHMAC)
	if m.authHMACFile != "" {
		if m.authHMAC != "" {
			return errors.New("give --auth-hmac-secret or --auth-hmac-secret-file, not both")
		}
		b, err := read("auth-hmac-secret-file", m.authHMACFile)
		if err != nil {
			return err
		}
		if cfg.HMACSecret = bytes.TrimSpace(b); len(cfg.HMACSecret) == 0 {
			return fmt.Errorf("--auth-hmac-secret-file %s is empty", m.authHMACFile)
		}
	}
	var err error
	if m.authPublicKey != "" {
		if cfg.PublicKeyPEM, err = read("auth-public-key", m.authPublicKey); err != nil {
			return err
		}
	}
	if m.authJWKS != "" {
		if cfg.JWKS, err = read("auth-jwks", m.authJWKS); err != nil {
			return err
		}
	}
	if m.auth, err = auth.NewVerifier(cfg); err != nil {
		return err
	}
	if m.tlsCert != "" || m.tlsKey != "" {
		if m.certs, err = loadCertFiles(m.tlsCert, m.tlsKey); err != nil {
			return err
		}
	}
	if m.clientTLS, err = clientTLS(m.tlsCA); err != nil {
		return err
	}
	if m.allowedOrigins, err = auth.ParseOrigins(splitList(m.origins)); err != nil {
		return fmt.Errorf("--allowed-origins: %w", err)
	}
	if m.trustedProxies, err = limit.ParsePrefixes(splitList(m.trusted)); err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	if m.maxAddrConns <= 0 {
		return fmt.Errorf("--max-addr-conns must be positive, got %d", m.maxAddrConns)
	}
	if m.maxHandshakes < 0 {
		return fmt.Errorf("--max-handshakes must not be negative, got %d", m.maxHandshakes)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (m *member) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(m.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", m.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch m.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", m.logFormat)
}

func nodeFlags(fs *flag.FlagSet) *node.Config {
	c := node.DefaultConfig()
	fs.Int64Var(&c.MaxFrame, "max-frame", c.MaxFrame, "largest WebSocket message a client may send, bytes (larger: close 1009)")
	fs.IntVar(&c.HistoryCount, "history", c.HistoryCount, "messages each room keeps for resume")
	fs.IntVar(&c.HistoryBytes, "history-bytes", c.HistoryBytes, "bytes each room keeps for resume")
	fs.IntVar(&c.DedupeIDs, "dedupe-ids", c.DedupeIDs, "recent publish ids each room remembers to ack retries once")
	fs.IntVar(&c.DedupeClientIDs, "dedupe-client-ids", c.DedupeClientIDs, "and, for each of a room's 256 latest publishers, its own latest ids (0: the room's window only)")
	fs.IntVar(&c.SendQueue, "send-queue", c.SendQueue, "frames that may wait for one connection before it is dropped with 4008")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "longest a write to one client may take")
	fs.DurationVar(&c.PingInterval, "ping-interval", c.PingInterval, "how often idle connections are pinged (silent for 2.5x: closed)")
	fs.DurationVar(&c.RoomIdle, "room-idle", c.RoomIdle, "how long an empty room is kept before it is reclaimed")
	fs.IntVar(&c.MaxRooms, "max-rooms", c.MaxRooms, "rooms one node holds at most (more: 429)")
	fs.IntVar(&c.MaxRoomConns, "max-room-conns", c.MaxRoomConns, "connections one room holds at most (more: 429)")
	fs.IntVar(&c.PresenceAnnounceMax, "presence-announce-max", c.PresenceAnnounceMax, "room size up to which presence is sent as join/leave events")
	fs.DurationVar(&c.PresenceInterval, "presence-interval", c.PresenceInterval, "period of presence summaries in larger rooms")
	fs.DurationVar(&c.HandoffTimeout, "handoff-timeout", c.HandoffTimeout, "bound on one hand-off call to a room's new owner")
	fs.DurationVar(&c.HandoffHold, "handoff-hold", c.HandoffHold, "how long a publish waits while its room is handed off")
	fs.DurationVar(&c.ArriveTimeout, "arrive-timeout", c.ArriveTimeout, "how long a gained room waits for a silent previous owner before starting afresh")
	fs.DurationVar(&c.FenceWait, "fence-wait", c.FenceWait, "how long a hand-off receiver waits for its ring to name it the owner")
	fs.DurationVar(&c.StaleAfter, "stale-after", c.StaleAfter, "a node paused this long asks its peers whether its rooms were taken over, and drops them if so (keep it below the failure-detection time: probe interval × (1 + suspicion mult))")
	fs.DurationVar(&c.Quarantine, "quarantine", c.Quarantine, "after such a pause, how long the node creates no room")
	fs.IntVar(&c.RoomReplicas, "room-replicas", c.RoomReplicas, "nodes besides its owner that keep each room (its heirs); a message is acked once they hold it, so a crash loses nothing acknowledged (0: off)")
	fs.DurationVar(&c.ReplicaTimeout, "replica-timeout", c.ReplicaTimeout, "how long a replica that stopped answering holds back its rooms' acks before they go on without it")
	fs.DurationVar(&c.MinorityHold, "minority-hold", c.MinorityHold, "a node that loses touch with most of the cluster at once takes no writes for up to this long (0: off, both sides of a partition write)")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", c.HeartbeatInterval, "how often a node calls every other node to know it still reaches them (unheard for 4 intervals: out of reach)")
	fs.IntVar(&c.IngestMaxFrame, "ingest-max-frame", c.IngestMaxFrame, "largest frame a TCP stream source may send, bytes")
	fs.IntVar(&c.MaxRoomSources, "max-room-sources", c.MaxRoomSources, "TCP stream sources one room takes at most")
	fs.DurationVar(&c.IngestHandshake, "ingest-handshake-timeout", c.IngestHandshake, "how long a stream source may take to send its handshake")
	fs.DurationVar(&c.IngestIdle, "ingest-idle-timeout", c.IngestIdle, "a stream source silent this long is closed")
	fs.IntVar(&c.IngestRate, "ingest-rate", c.IngestRate, "payload bytes per second one stream source may send; a faster one is slowed down")
	fs.Float64Var(&c.PublishRate, "publish-rate", c.PublishRate, "messages per second one connection may publish (more: error frame rate_limited)")
	fs.IntVar(&c.PublishBurst, "publish-burst", c.PublishBurst, "publishes one connection may send at once before --publish-rate applies")
	fs.Float64Var(&c.RoomCreateRate, "room-create-rate", c.RoomCreateRate, "rooms one client address (IPv6: its /64) may have created per second on a node (more: 429); 0: off")
	fs.IntVar(&c.RoomCreateBurst, "room-create-burst", c.RoomCreateBurst, "rooms one client address may create at once before --room-create-rate applies")
	fs.Var((*mebibytes)(&c.MaxMemory), "max-memory-mib", "MiB of memory above which the node opens no new room (429); 0: off; default 80% of the container's or machine's memory")
	fs.IntVar(&c.SendQueueBytes, "send-queue-bytes", c.SendQueueBytes, "bytes of messages that may wait for one connection before it is dropped with 4008 (a message of at most 8 KiB counts about 3x its size)")
	fs.IntVar(&c.EdgeSendQueue, "edge-send-queue", c.EdgeSendQueue, "frames that may wait for one router's edge leg (all its clients in a room) before it is dropped with 4008 and re-attached")
	fs.IntVar(&c.EdgeSendQueueBytes, "edge-send-queue-bytes", c.EdgeSendQueueBytes, "bytes of frames that may wait for one router's edge leg before it is dropped with 4008 and re-attached")
	fs.Var((*mebibytes)(&c.MemoryBudget), "memory-budget-mib", "MiB the node may keep for clients (history, queued messages, remembered ids, rooms handed over); past it publishes are refused with 'overloaded'; default 0: half of --max-memory-mib")
	fs.Var(&apiKeys{keys: &c.APIKeys}, "api-key", "server API: a key trusted backends send as Authorization: Bearer, for every room (comma-separated for several; at least 16 bytes)")
	fs.Var(&apiKeys{keys: &c.APIKeys, file: true}, "api-key-file", "server API: file of keys (one a line) accepted like --api-key")
	fs.Float64Var(&c.APIPublishRate, "api-publish-rate", c.APIPublishRate, "server API publishes per second one client address may make (more: 429); 0: off")
	fs.IntVar(&c.APIPublishBurst, "api-publish-burst", c.APIPublishBurst, "server API publishes one client address may make at once before --api-publish-rate applies")
	fs.DurationVar(&c.APITimeout, "api-timeout", c.APITimeout, "how long a server API publish waits for its message to be committed (replicated) before answering 503")
	fs.IntVar(&c.APIHistoryMax, "api-history-max", c.APIHistoryMax, "largest limit of GET /v1/rooms/{room}/messages (default limit 100)")
	fs.IntVar(&c.APIPresenceMax, "api-presence-max", c.APIPresenceMax, "client ids GET /v1/rooms/{room}/presence lists at most (its count is exact)")
	fs.StringVar(&c.WebhookURL, "webhook-url", "", "webhooks: URL every room's owner POSTs its events to (signed JSON batches, at least once); empty: off")
	fs.Var(&webhookSecret{dst: &c.WebhookSecret}, "webhook-secret", "webhooks: secret of the X-Roost-Signature HMAC-SHA256 of every body")
	fs.Var(&webhookSecret{dst: &c.WebhookSecret, file: true}, "webhook-secret-file", "webhooks: file holding the secret (instead of --webhook-secret)")
	fs.Var(&webhookEvents{&c.WebhookEvents}, "webhook-events", "webhooks: comma-separated event types sent: room.occupied, room.vacated, member.join, member.leave, message")
	fs.IntVar(&c.WebhookMaxBytes, "webhook-max-bytes", c.WebhookMaxBytes, "webhooks: bytes of undelivered events each room keeps; past it (a receiver down for long) the oldest are dropped, counted and logged")
	fs.IntVar(&c.WebhookBatch, "webhook-batch", c.WebhookBatch, "webhooks: events per POST at most")
	fs.IntVar(&c.WebhookBatchBytes, "webhook-batch-bytes", c.WebhookBatchBytes, "webhooks: bytes of events per POST at most (a larger single event goes alone)")
	fs.DurationVar(&c.WebhookTimeout, "webhook-timeout", c.WebhookTimeout, "webhooks: longest one POST may take (longer: failed, retried)")
	fs.DurationVar(&c.WebhookBackoffMin, "webhook-backoff-min", c.WebhookBackoffMin, "webhooks: delay before the first retry of a failed batch (doubled per failure, jittered)")
	fs.DurationVar(&c.WebhookBackoffMax, "webhook-backoff-max", c.WebhookBackoffMax, "webhooks: longest delay between retries")
	fs.IntVar(&c.WebhookConcurrency, "webhook-concurrency", c.WebhookConcurrency, "webhooks: rooms whose batches are posted at once")
	fs.DurationVar(&c.WebhookGrace, "webhook-grace", c.WebhookGrace, "webhooks: how long a room that moved here waits for its members to reconnect before they leave")
	return &c
}

// webhookSecret is a flag.Value of the webhook secret, given as is or, with file set, in a file.
type webhookSecret struct {
	dst  *[]byte
	file bool
}

func (w *webhookSecret) String() string { return "" } // never print a secret

func (w *webhookSecret) Set(s string) error {
	if len(*w.dst) > 0 {
		return errors.New("give --webhook-secret or --webhook-secret-file, not both")
	}
	v := []byte(s)
	if w.file {
		b, err := os.ReadFile(s)
		if err != nil {
			return err
		}
		v = bytes.TrimSpace(b)
	}
	if len(v) == 0 {
		return errors.New("the webhook secret is empty")
	}
	*w.dst = v
	return nil
}

// webhookEvents is a flag.Value of --webhook-events.
type webhookEvents struct{ dst *map[string]bool }

func (w *webhookEvents) String() string {
	if w.dst == nil {
		return ""
	}
	var out []string
	for _, t := range []string{"room.occupied", "room.vacated", "member.join", "member.leave", "message"} {
		if (*w.dst)[t] {
			out = append(out, t)
		}
	}
	return strings.Join(out, ",")
}

func (w *webhookEvents) Set(s string) error {
	types, err := webhook.ParseTypes(s)
	if err != nil {
		return err
	}
	*w.dst = types
	return nil
}

// apiKeys is a flag.Value adding server API keys: a comma-separated list, or with file set the
// lines of a file (blank lines and lines starting with # skipped).
type apiKeys struct {
	keys *[]string
	file bool
}

func (a *apiKeys) String() string {
	if a == nil || a.keys == nil || len(*a.keys) == 0 {
		return ""
	}
	return "(set)" // never print a key
}

func (a *apiKeys) Set(s string) error {
	list := splitList(s)
	if a.file {
		b, err := os.ReadFile(s)
		if err != nil {
			return err
		}
		list = nil
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				list = append(list, l)
			}
		}
		if len(list) == 0 {
			return fmt.Errorf("%s holds no key", s)
		}
	}
	for _, k := range list {
		if len(k) < 16 {
			return fmt.Errorf("an API key needs at least 16 bytes (%s), got %d", makeSecret, len(k))
		}
	}
	*a.keys = append(*a.keys, list...)
	return nil
}

// mebibytes is a flag.Value of a byte count given in MiB.
type mebibytes uint64

func (m *mebibytes) String() string { return strconv.FormatUint(uint64(*m)>>20, 10) }
func (m *mebibytes) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 44)
	if err != nil {
		return fmt.Errorf("want a whole number of MiB: %w", err)
	}
	*m = mebibytes(v << 20)
	return nil
}
