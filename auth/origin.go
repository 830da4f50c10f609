package auth

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Origins decides which browser origins may open a WebSocket (--allowed-origins). A browser
// sends the page's origin on every upgrade and a page cannot forge it, so the check keeps other
// sites' pages from using a visitor's cookies or network position to connect. Clients that are
// not browsers send no Origin and are not affected. The zero value allows every origin.
type Origins struct {
	exact    map[string]bool
	suffixes []string // "https://*.example.com" is kept as scheme "https://" and suffix ".example.com"
	schemes  []string
	any      bool
}

// ParseOrigins reads a list of origins: "https://app.example.com", "https://*.example.com" (any
// subdomain), or "*" (any). An empty list allows every origin.
func ParseOrigins(list []string) (Origins, error) {
	o := Origins{exact: map[string]bool{}, any: len(list) == 0}
	for _, s := range list {
		s = strings.ToLower(strings.TrimRight(strings.TrimSpace(s), "/"))
		if s == "*" {
			o.any = true
			continue
		}
		u, err := url.Parse(strings.Replace(s, "*.", "wildcard.", 1))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			return Origins{}, fmt.Errorf("allowed origin %q: want scheme://host[:port], like https://app.example.com or https://*.example.com", s)
		}
		if scheme, rest, ok := strings.Cut(s, "://*."); ok {
			o.schemes = append(o.schemes, scheme+"://")
			o.suffixes = append(o.suffixes, "."+rest)
			continue
		}
		o.exact[s] = true
	}
	return o, nil
}

// Allow reports whether r may upgrade: it has no Origin (not a browser), or one on the list.
func (o Origins) Allow(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || o.any || o.exact == nil {
		return true
	}
	origin = strings.ToLower(origin)
	if o.exact[origin] {
		return true
	}
	for i, suffix := range o.suffixes {
		if rest, ok := strings.CutPrefix(origin, o.schemes[i]); ok && strings.HasSuffix(rest, suffix) && len(rest) > len(suffix) {
			return true
		}
	}
	return false
}
