package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/roost-dev/roost/protocol"
)

// maxResolveHops bounds the redirects Resolve follows. One is normal (any member to the owner);
// more happen only while members disagree about the ring.
const maxResolveHops = 5

// ResolveOptions configures Resolve. A nil *ResolveOptions means the defaults.
type ResolveOptions struct {
	// Token is sent as "Authorization: Bearer" (placement needs none in roost itself, but a
	// gateway in front of it may).
	Token string
	// Header holds extra request headers.
	Header http.Header
	// HTTPClient makes the requests. Nil: http.DefaultClient. Resolve follows redirects itself,
	// so the client's CheckRedirect is not used.
	HTTPClient *http.Client
	// Timeout bounds the whole resolve, redirects included, when ctx has no deadline. Default
	// 10s.
	Timeout time.Duration
}

// Resolve asks the cluster at base which node owns room: it requests base/v1/rooms/{room} and
// follows the 307 redirects (at most 5) to the owner, which answers with its coordinates. base is
// any node or router: "http://host:port", "https://…", "ws://…" or a bare "host:port".
//
// A refusal (a bad room name, no node in the ring yet, ...) is returned as an *HTTPError carrying
// the server's code, e.g. protocol.CodeBadRoom.
func Resolve(ctx context.Context, base, room string, opts *ResolveOptions) (protocol.Owner, error) {
	var o ResolveOptions
	if opts != nil {
		o = *opts
	}
	b, err := parseBase(base)
	if err != nil {
		return protocol.Owner{}, err
	}
	if room == "" {
		return protocol.Owner{}, fmt.Errorf("roost: resolve: %w: the room name is empty", protocol.ErrBadRoom)
	}
	if _, ok := ctx.Deadline(); !ok {
		timeout := o.Timeout
		if timeout <= 0 {
			timeout = 10 * time.Second
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	hc := http.Client{}
	if o.HTTPClient != nil {
		hc = *o.HTTPClient
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	u := roomURL(b, room, "")
	for hop := 0; ; hop++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return protocol.Owner{}, fmt.Errorf("roost: resolve room %q: %w", room, err)
		}
		for k, vs := range o.Header {
			req.Header[k] = vs
		}
		req.Header.Set("Accept", "application/json")
		if o.Token != "" {
			req.Header.Set("Authorization", "Bearer "+o.Token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return protocol.Owner{}, fmt.Errorf("roost: resolve room %q at %s: %w", room, u.Redacted(), err)
		}
		switch {
		case isRedirect(resp.StatusCode):
			drain(resp)
			if hop == maxResolveHops {
				return protocol.Owner{}, fmt.Errorf("roost: resolve room %q: more than %d redirects, last to %s; the cluster may still be converging, try again",
					room, maxResolveHops, u.Redacted())
			}
			next, err := follow(u, resp.Header.Get("Location"), o.Token != "")
			if err != nil {
				return protocol.Owner{}, fmt.Errorf("roost: resolve room %q: %w", room, err)
			}
			u = next
		case resp.StatusCode == http.StatusOK:
			var owner protocol.Owner
			err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&owner)
			drain(resp)
			if err != nil {
				return protocol.Owner{}, fmt.Errorf("roost: resolve room %q: unreadable answer from %s: %w", room, u.Redacted(), err)
			}
			return owner, nil
		default:
			e := httpError(u.Redacted(), resp)
			drain(resp)
			return protocol.Owner{}, e
		}
	}
}

func isRedirect(status int) bool {
	switch status {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// drain reads a little of what is left of the body, so the connection can be reused, and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// parseBase reads a base address: http(s):// or ws(s):// with a host and an optional path
// prefix, or a bare host:port (taken as http://). It is returned in its http(s) form.
func parseBase(base string) (*url.URL, error) {
	s := strings.TrimSpace(base)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("roost: base address %q: %w", base, err)
	}
	switch u.Scheme {
	case "http", "https":
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	default:
		return nil, fmt.Errorf("roost: base address %q: scheme must be http, https, ws or wss", base)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("roost: base address %q has no host; use e.g. http://127.0.0.1:8080", base)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("roost: base address %q: a base address has no query or fragment", base)
	}
	if strings.Contains(u.Path, "/v1/") {
		return nil, fmt.Errorf("roost: base address %q: pass the address of a node or router (scheme://host:port), not a URL of its API", base)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// roomURL is base/v1/rooms/{room}{suffix}, in base's http(s) form.
func roomURL(base *url.URL, room, suffix string) *url.URL {
	u := *base
	u.Path = base.Path + "/v1/rooms/" + room + suffix
	u.RawPath = base.Path + "/v1/rooms/" + url.PathEscape(room) + suffix
	return &u
}

// wsForm turns an http(s) URL into its ws(s) twin.
func wsForm(u *url.URL) *url.URL {
	w := *u
	switch w.Scheme {
	case "http":
		w.Scheme = "ws"
	case "https":
		w.Scheme = "wss"
	}
	return &w
}

// follow resolves a redirect's Location against the URL that answered it, keeping the scheme
// family (http or ws) of cur.
func follow(cur *url.URL, location string, secret bool) (*url.URL, error) {
	if location == "" {
		return nil, errors.New("redirect without a Location")
	}
	loc, err := url.Parse(location)
	if err != nil {
		return nil, fmt.Errorf("redirect to a bad Location %q: %w", location, err)
	}
	next := cur.ResolveReference(loc)
	var secure bool
	switch next.Scheme {
	case "http", "ws":
	case "https", "wss":
		secure = true
	default:
		return nil, fmt.Errorf("redirect to %q: unsupported scheme", location)
	}
	wasSecure := cur.Scheme == "https" || cur.Scheme == "wss"
	if secret && wasSecure && !secure {
		return nil, fmt.Errorf("refusing to follow a redirect from %s to plain %s with a token", cur.Redacted(), next.Redacted())
	}
	next.Scheme = "http"
	if secure {
		next.Scheme = "https"
	}
	if cur.Scheme == "ws" || cur.Scheme == "wss" {
		next = wsForm(next)
	}
	return next, nil
}
