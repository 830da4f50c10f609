package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// The in-process cluster is internal/testcluster; the processes, internal/proc (process_test.go).

// followRedirects does what curl -L does and reports every URL visited and the final body.
func followRedirects(ctx context.Context, start string) (hops []string, status int, body []byte, err error) {
	noFollow := &http.Client{Transport: quickHTTP.Transport, // trusts testCA
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	u := start
	for range 10 {
		hops = append(hops, u)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := noFollow.Do(req)
		if err != nil {
			return hops, 0, nil, err
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusTemporaryRedirect {
			return hops, resp.StatusCode, body, nil
		}
		u = resp.Header.Get("Location")
		if !strings.HasPrefix(u, "http") {
			return hops, resp.StatusCode, body, fmt.Errorf("relative Location %q", u)
		}
	}
	return hops, 0, nil, fmt.Errorf("redirect loop: %v", hops)
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}
