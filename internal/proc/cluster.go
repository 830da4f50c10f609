package proc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/roost-dev/roost/protocol"
)

// Cluster reads the process's GET /v1/cluster.
func (p *Proc) Cluster() (protocol.Cluster, error) {
	var c protocol.Cluster
	resp, err := p.client.Get(p.URL() + "/v1/cluster")
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("%s/v1/cluster: %s", p.URL(), resp.Status)
	}
	return c, json.NewDecoder(resp.Body).Decode(&c)
}

// State is the state the process reports for member id: "alive", "dead", …, "" when it does not
// list id, "unreachable" when it does not answer.
func (p *Proc) State(id string) string {
	c, err := p.Cluster()
	if err != nil {
		return "unreachable"
	}
	for _, m := range c.Members {
		if m.ID == id {
			return m.State
		}
	}
	return ""
}

// Agree reports whether every process answers and they all place the same nodes nodes under one
// ring version.
func Agree(ps []*Proc, nodes int) bool {
	var ring string
	for _, p := range ps {
		c, err := p.Cluster()
		if err != nil || len(c.Rooms) != nodes || (ring != "" && c.Ring != ring) {
			return false
		}
		ring = c.Ring
	}
	return true
}

// WaitRing waits up to timeout until Agree(ps, nodes).
func WaitRing(ctx context.Context, ps []*Proc, nodes int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !Agree(ps, nodes) {
		if time.Now().After(deadline) {
			return fmt.Errorf("the processes did not agree on a ring of %d nodes within %s", nodes, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
