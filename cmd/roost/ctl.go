package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/auth"
	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/protocol"
)

const ctlUsage = `Usage: roost ctl COMMAND [flags]

  resolve ROOM                  print the owner of ROOM (follows the redirect)
  tail ROOM [--since N]         join ROOM and print every message as a JSON line
  publish ROOM JSON [--id ID] [--http]
                                publish one message and print its ack (--http: through the
                                server API, POST /v1/rooms/ROOM/messages, holding no WebSocket)
  history ROOM [--since N] [--epoch E] [--limit L]
                                print what ROOM retains after seq N (GET /v1/rooms/ROOM/messages)
  stream ROOM [FILE|-]          be a TCP stream source: send FILE (or stdin) as frames
  status [--json]               the cluster: members, roles, ring version, rooms per node
  token --sub U --rooms 'a,b*' [--pub] [--ttl 1h]
                                mint an HS256 client token with --auth-hmac-secret
                                (env ROOST_AUTH_HMAC_SECRET), for trying things out

Flags of every command:
  --addr URL     any node or router (default http://127.0.0.1:8080, env ROOST_ADDR)
  --token T      a client token, when the cluster has auth on (env ROOST_TOKEN)
  --timeout D    how long a one-shot command may take (default 10s)
`

// ctlOut is where ctl prints; a variable so tests can capture it.
var ctlOut io.Writer = os.Stdout

type ctlFlags struct {
	addr, token, tlsCA string
	timeout            time.Duration
}

// withTLS sets up o to trust --tls-ca, when one is given.
func (c *ctlFlags) withTLS(o *client.Options) (*client.Options, error) {
	cfg, err := clientTLS(c.tlsCA)
	if err != nil || cfg == nil {
		return o, err
	}
	o.Dialer = &websocket.Dialer{Proxy: http.ProxyFromEnvironment, TLSClientConfig: cfg}
	return o, nil
}

// httpClient trusts --tls-ca, when one is given.
func (c *ctlFlags) httpClient() (*http.Client, error) {
	cfg, err := clientTLS(c.tlsCA)
	if err != nil || cfg == nil {
		return http.DefaultClient, err
	}
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: cfg}}, nil
}

func newCtlFlags(name string) (*flag.FlagSet, *ctlFlags) {
	fs := flag.NewFlagSet("roost ctl "+name, flag.ContinueOnError)
	c := &ctlFlags{}
	fs.StringVar(&c.addr, "addr", "http://127.0.0.1:8080", "any node or router of the cluster")
	fs.StringVar(&c.token, "token", "", "client token, when the cluster has auth on")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM file of CAs to trust, besides the system's, for https:// and wss:// members")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "how long a one-shot command may take")
	return fs, c
}

// parseMixed parses flags that may come before, between or after the positional arguments
// ("roost ctl tail lobby --since 3"), and returns the positionals.
func parseMixed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func runCtl(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stderr, ctlUsage)
		return flag.ErrHelp
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "resolve":
		return ctlResolve(ctx, rest)
	case "tail":
		return ctlTail(ctx, rest)
	case "publish":
		return ctlPublish(ctx, rest)
	case "status":
		return ctlStatus(ctx, rest)
	case "history":
		return ctlHistory(ctx, rest)
	case "stream":
		return ctlStream(ctx, rest)
	case "token":
		return ctlToken(rest)
	default:
		fmt.Fprint(os.Stderr, ctlUsage)
		return fmt.Errorf("unknown ctl command %q", cmd)
	}
}

func ctlResolve(ctx context.Context, args []string) error {
	fs, c := newCtlFlags("resolve")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: roost ctl resolve ROOM")
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	hc, err := c.httpClient()
	if err != nil {
		return err
	}
	o, err := client.Resolve(ctx, c.addr, pos[0], &client.ResolveOptions{Token: c.token, HTTPClient: hc})
	if err != nil {
		return err
	}
	return json.NewEncoder(ctlOut).Encode(o)
}

// tailLine is how tail prints one event.
type tailLine struct {
	Type    string          `json:"type"`
	Seq     uint64          `json:"seq,omitempty"`
	Client  string          `json:"client,omitempty"`
	ID      string          `json:"id,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Size    *int            `json:"size,omitempty"`   // binary
	Base64  string          `json:"base64,omitempty"` // binary, the payload
	Event   string          `json:"event,omitempty"`  // presence
	Clients []string        `json:"clients,omitempty"`
	Joined  []string        `json:"joined,omitempty"`
	Left    []string        `json:"left,omitempty"`
	Count   *int            `json:"count,omitempty"`
	From    uint64          `json:"from,omitempty"`
	To      uint64          `json:"to,omitempty"`
	Epoch   string          `json:"epoch,omitempty"`
	Node    string          `json:"node,omitempty"`
	Error   string          `json:"error,omitempty"`
}

func ctlTail(ctx context.Context, args []string) error {
	fs, c := newCtlFlags("tail")
	since := fs.Int64("since", -1, "resume after this seq (0: everything the room still retains); default: live only")
	epoch := fs.String("epoch", "", "the epoch --since belongs to")
	presence := fs.Bool("presence", false, "also print presence events")
	count := fs.Int("count", 0, "exit after this many messages (0: run until interrupted)")
	binary := fs.Bool("binary", false, "print binary payloads in full (base64); by default only their size")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: roost ctl tail ROOM [--since N]")
	}
	opts, err := c.withTLS(&client.Options{Token: c.token, Presence: *presence, Epoch: *epoch})
	if err != nil {
		return err
	}
	if *since >= 0 {
		s := uint64(*since)
		opts.Since = &s
	}
	dctx, cancel := context.WithTimeout(ctx, c.timeout)
	conn, err := client.Dial(dctx, c.addr, pos[0], opts)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close()
	w := conn.Welcome()
	fmt.Fprintf(os.Stderr, "tailing %s on %s (epoch %s, latest seq %d, %d in the room); Ctrl-C to stop\n", w.Room, w.Node, w.Epoch, w.Seq, w.Count)
	enc := json.NewEncoder(ctlOut)
	messages := 0
	for {
		ev, err := conn.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		l := tailLine{Type: string(ev.Type), Seq: ev.Seq, Client: ev.Client, ID: ev.ID, Data: ev.Data, Event: ev.Presence,
			Clients: ev.Clients, Joined: ev.Joined, Left: ev.Left, From: ev.From, To: ev.To, Epoch: ev.Epoch}
		switch ev.Type {
		case client.EventBinary:
			n := len(ev.Payload)
			l.Size = &n
			if *binary {
				l.Base64 = base64.StdEncoding.EncodeToString(ev.Payload)
			}
		case client.EventPresence:
			l.Count = &ev.Count
		case client.EventReconnected:
			l.Node, l.Epoch = ev.Welcome.Node, ev.Welcome.Epoch
			if ev.Err != nil {
				l.Error = ev.Err.Error()
			}
		case client.EventError:
			l.Error = ev.Err.Error()
		}
		if err := enc.Encode(l); err != nil {
			return err
		}
		if ev.Type == client.EventMessage || ev.Type == client.EventBinary {
			messages++
			if *count > 0 && messages >= *count {
				return nil
			}
		}
	}
}

func ctlPublish(ctx context.Context, args []string) error {
	fs, c := newCtlFlags("publish")
	id := fs.String("id", "", "publish id (default: a random one); repeating an id the room remembers is acked, not delivered again")
	overHTTP := fs.Bool("http", false, "publish through the server API (POST /v1/rooms/ROOM/messages) rather than a WebSocket")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New(`usage: roost ctl publish ROOM JSON   (e.g. '{"text":"hi"}' or '"a string"')`)
	}
	if !json.Valid([]byte(pos[1])) {
		return fmt.Errorf("the message %q is not valid JSON; quote strings, e.g. '\"hello\"'", pos[1])
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if *id == "" {
		*id = client.NewID()
	}
	if *overHTTP {
		body, _ := json.Marshal(map[string]any{"id": *id, "data": json.RawMessage(pos[1])})
		return c.serverAPI(ctx, http.MethodPost, pos[0], "messages", "", body)
	}
	opts, err := c.withTLS(&client.Options{Token: c.token, Discard: true})
	if err != nil {
		return err
	}
	conn, err := client.Dial(ctx, c.addr, pos[0], opts)
	if err != nil {
		return err
	}
	defer conn.Close()
	seq, err := conn.PublishID(ctx, *id, json.RawMessage(pos[1]))
	if err != nil {
		return err
	}
	return json.NewEncoder(ctlOut).Encode(protocol.Ack{Type: protocol.TypeAck, ID: *id, Seq: seq})
}

func ctlHistory(ctx context.Context, args []string) error {
	fs, c := newCtlFlags("history")
	since := fs.String("since", "", "print the messages after this seq (default: all the room retains)")
	epoch := fs.String("epoch", "", "the epoch since belongs to (a gap or reset is printed as the server says)")
	limit := fs.String("limit", "", "at most this many messages (server default 100, max --api-history-max)")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: roost ctl history ROOM [--since N] [--epoch E] [--limit L]")
	}
	q := url.Values{}
	for k, v := range map[string]string{"since": *since, "epoch": *epoch, "limit": *limit} {
		if v != "" {
			q.Set(k, v)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.serverAPI(ctx, http.MethodGet, pos[0], "messages", q.Encode(), nil)
}

// serverAPI makes one server API request about room (following redirects, method and body
// kept) and prints its JSON answer; a refusal is an error with the server's sentence.
func (c *ctlFlags) serverAPI(ctx context.Context, method, room, what, query string, body []byte) error {
	if err := protocol.ValidRoom(room); err != nil {
		return err
	}
	u := strings.TrimRight(c.addr, "/") + "/v1/rooms/" + room + "/" + what
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc, err := c.httpClient()
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e protocol.Error
		if json.Unmarshal(out, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %d %s (%s)", method, u, resp.StatusCode, e.Error, e.Code)
		}
		return fmt.Errorf("%s %s: %s", method, u, resp.Status)
	}
	_, err = ctlOut.Write(append(bytes.TrimSpace(out), '\n'))
	return err
}

func ctlStatus(ctx context.Context, args []string) error {
	fs, c := newCtlFlags("status")
	asJSON := fs.Bool("json", false, "print the raw JSON of GET /v1/cluster")
	if _, err := parseMixed(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	base := strings.TrimSuffix(c.addr, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/cluster", nil)
	if err != nil {
		return err
	}
	hc, err := c.httpClient()
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("is a roost node or router at %s? %w", c.addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v1/cluster: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if *asJSON {
		_, err := ctlOut.Write(body)
		return err
	}
	var cl protocol.Cluster
	if err := json.Unmarshal(body, &cl); err != nil {
		return fmt.Errorf("GET /v1/cluster: %w", err)
	}
	fmt.Fprintf(ctlOut, "ring %s, %d partitions, asked %s\n\n", cl.Ring, cl.Partitions, cl.Self)
	tw := tabwriter.NewWriter(ctlOut, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tROLE\tSTATE\tHTTP\tTCP\tROOMS\tCONNS")
	for _, m := range cl.Members {
		tcp, rooms := m.TCP, fmt.Sprint(m.Rooms)
		if tcp == "" {
			tcp = "-"
		}
		if m.Role != "node" {
			rooms = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", m.ID, m.Role, m.State, m.HTTP, tcp, rooms, m.Conns)
	}
	return tw.Flush()
}

func ctlStream(ctx context.Context, args []string) error {
	fs, c := newCtlFlags("stream")
	frameSize := fs.Int("frame-size", 64<<10, "bytes per frame (at most the node's --ingest-max-frame)")
	source := fs.String("source", "", "this source's name in the room, so that after a crash of the room's owner it resends exactly what the room does not hold (default: a name of its own for this run)")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return errors.New("usage: roost ctl stream ROOM [FILE|-] [--frame-size N] [--source NAME]")
	}
	if *frameSize < 1 || *frameSize > 1<<30 {
		return fmt.Errorf("--frame-size %d: use 1 byte to 1 GiB", *frameSize)
	}
	in := io.Reader(os.Stdin)
	if len(pos) == 2 && pos[1] != "-" {
		f, err := os.Open(pos[1])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	hc, err := c.httpClient()
	if err != nil {
		return err
	}
	if *source == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		*source = "ctl-" + hex.EncodeToString(b[:])
	}
	src, err := client.OpenStream(ctx, c.addr, pos[0], &client.StreamOptions{Token: c.token, MaxFrame: *frameSize, DialTimeout: c.timeout,
		HTTPClient: hc, Source: *source})
	if err != nil {
		return err
	}
	defer src.Close()
	start, lastPrint := time.Now(), time.Now()
	progress := func(final bool) {
		secs := time.Since(start).Seconds()
		end := "\r"
		if final {
			end = "\n"
		}
		fmt.Fprintf(os.Stderr, "streamed %d frames, %d bytes, %.1f MB/s, %d moves%s",
			src.Frames(), src.Bytes(), float64(src.Bytes())/1e6/max(secs, 1e-9), src.Moves(), end)
	}
	buf := make([]byte, *frameSize)
	for {
		n, err := io.ReadFull(in, buf)
		if n > 0 {
			if serr := src.Send(ctx, buf[:n]); serr != nil {
				progress(true)
				return serr
			}
		}
		if time.Since(lastPrint) > time.Second {
			progress(false)
			lastPrint = time.Now()
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			ferr := src.Finish(ctx) // wait until the owner took in every frame
			progress(true)
			return ferr
		}
		if err != nil {
			progress(true)
			return err
		}
		if ctx.Err() != nil {
			progress(true)
			return nil
		}
	}
}

func ctlToken(args []string) error {
	fs := flag.NewFlagSet("roost ctl token", flag.ContinueOnError)
	secret := fs.String("auth-hmac-secret", "", "the cluster's HS256 secret")
	secretFile := fs.String("auth-hmac-secret-file", "", "file holding the HS256 secret")
	sub := fs.String("sub", "", "who the token is for (becomes the client's presence identity)")
	rooms := fs.String("rooms", "", "comma-separated rooms: exact names or prefixes ending in *")
	pub := fs.Bool("pub", false, "may publish (and stream); without it the token only reads")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("roost ctl token takes only flags, not %q", fs.Args())
	}
	key := []byte(*secret)
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("--auth-hmac-secret-file: %w", err)
		}
		key = bytes.TrimSpace(b)
	}
	if *sub == "" || *rooms == "" {
		return errors.New("usage: roost ctl token --sub U --rooms 'a,b*' [--pub] [--ttl 1h] (with --auth-hmac-secret or ROOST_AUTH_HMAC_SECRET)")
	}
	tok, err := auth.Mint(key, *sub, splitList(*rooms), *pub, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(ctlOut, tok)
	return nil
}
