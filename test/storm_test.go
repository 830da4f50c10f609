package test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/proc"
)

// TestStormBecomesARamp: a node and a router that each let 1 handshake be in progress at a time
// (--max-handshakes 1; with 4, CI once saw 400 clients at once never overlap past 4), and 400 Go
// clients that all connect at the same moment, half directly and half through the router, as
// after a node died and its clients all come back. The members refuse what is past the bound
// with 503 overloaded and Retry-After, and the clients come back after the wait with jitter:
// every client gets its welcome (no refusal is lost), and the refusals happened (the bound held).
func TestStormBecomesARamp(t *testing.T) {
	const clients = 400
	bound := []string{"--max-handshakes", "1"}
	n1 := startProc(t, "node", "n1", "", bound...)
	r1 := startProc(t, "router", "r1", n1.Gossip, bound...)
	proc.WaitRingT(t, []*proc.Proc{n1, r1}, 1)

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var (
		mu     sync.Mutex
		took   []time.Duration
		failed []error
		conns  []*client.Conn
	)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		base := n1.URL()
		if i%2 == 1 {
			base = r1.URL()
		}
		wg.Go(func() {
			<-start
			t0 := time.Now()
			c, err := client.Dial(ctx, base, fmt.Sprintf("storm-%d", i%10), nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, err)
				return
			}
			took = append(took, time.Since(t0))
			conns = append(conns, c)
		})
	}
	close(start)
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of %d clients got no welcome; the first: %v", len(failed), clients, failed[0])
	}
	refused := 0.0
	for _, p := range []*proc.Proc{n1, r1} {
		v, err := metricValue(p, "roost_refused_total", "reason", "handshakes")
		if err != nil {
			t.Fatal(err)
		}
		refused += v
	}
	slices.Sort(took)
	t.Logf("%d clients at once, 1 handshake in progress at most per member: %.0f handshakes refused and retried; welcomed after p50 %s, p90 %s, all %s",
		clients, refused, took[clients/2].Round(time.Millisecond), took[clients*9/10].Round(time.Millisecond), took[clients-1].Round(time.Millisecond))
	if refused == 0 {
		t.Error("no handshake was refused: 400 at once never overlapped, so the bound is not what let them in")
	}
}
