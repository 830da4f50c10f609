package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/internal/testcluster"
	"github.com/roost-dev/roost/protocol"
)

// The chaos harness: the real roost binary, run as processes on loopback by internal/proc.

func TestMain(m *testing.M) {
	code := m.Run()
	proc.RemoveBuilt()
	os.Exit(code)
}

// startProc starts a node or router process with the tests' defaults (warnings only, room for
// every client on 127.0.0.1) and kills it when the test ends, whatever happens.
func startProc(t *testing.T, role, id, join string, extra ...string) *proc.Proc {
	t.Helper()
	args := append([]string{"--log-level", "warn", "--max-addr-conns", strconv.Itoa(testcluster.LoopbackConns)}, extra...)
	return proc.StartT(t, proc.Spec{Binary: proc.Roost(t), Role: role, ID: id, Join: join, Args: args, HTTP: quickHTTP})
}

// scrape reads and parses the /metrics of the member at base.
func scrape(base string) (map[string]*dto.MetricFamily, error) {
	resp, err := quickHTTP.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

var quickHTTP = &http.Client{Timeout: 2 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// ownerFrom asks p who owns room (one hop: the Location of a redirect, or p itself).
func ownerFrom(ctx context.Context, p *proc.Proc, room string) (protocol.Owner, error) {
	hops, status, body, err := followRedirects(ctx, p.URL()+"/v1/rooms/"+room)
	if err != nil {
		return protocol.Owner{}, err
	}
	if status != 200 {
		return protocol.Owner{}, fmt.Errorf("%v: %d %s", hops, status, body)
	}
	var o protocol.Owner
	return o, json.Unmarshal(body, &o)
}

// startProcCluster starts n node processes and waits until they agree on a ring of n nodes.
func startProcCluster(t *testing.T, n int) []*proc.Proc {
	t.Helper()
	ps := startNodes(t, n)
	proc.WaitRingT(t, ps, n)
	return ps
}

// startNodes starts n node processes, n1 to nN, each with the extra flags; n1 joins nobody and
// the others join n1. It does not wait for them to agree on a ring.
func startNodes(t *testing.T, n int, extra ...string) []*proc.Proc {
	t.Helper()
	var ps []*proc.Proc
	for i := 1; i <= n; i++ {
		join := ""
		if i > 1 {
			join = ps[0].Gossip
		}
		ps = append(ps, startProc(t, "node", fmt.Sprintf("n%d", i), join, extra...))
	}
	return ps
}

// startProcClusterWithRouter starts n node processes (with the extra flags) and a router, r1,
// and waits until all of them agree on a ring of n nodes.
func startProcClusterWithRouter(t *testing.T, n int, extra ...string) ([]*proc.Proc, *proc.Proc) {
	t.Helper()
	nodes := startNodes(t, n, extra...)
	rt := startProc(t, "router", "r1", nodes[0].Gossip)
	proc.WaitRingT(t, append(nodes, rt), n)
	return nodes, rt
}
