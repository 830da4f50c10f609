package test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/roost-dev/roost/internal/proc"
)

// TestBenchRuns drives `roost bench --quick` as a user would: every row comes out as a JSON line
// and in the table, and the fan-out runs lose, double and reorder nothing on either server.
func TestBenchRuns(t *testing.T) {
	proc.Binary(t, "roost-bench") // roost bench runs the roost-bench next to it
	out, err := exec.Command(proc.Roost(t), "bench", "--quick", "--duration", "1s", "--soak", "3s",
		"--workloads", "fanout,quiet,handshake,serverapi,idle,storm,failure,soak,handoff,placement,rebalance").CombinedOutput()
	if err != nil {
		t.Fatalf("roost bench: %v\n%s", err, out)
	}
	rows := 0
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var row struct {
			Workload, Metric string
			Roost, Baseline  float64
			Detail           json.RawMessage
		}
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("not JSON: %q: %v", line, err)
		}
		var servers map[string]struct { // the fan-out rows' detail: one result per server
			Deliveries                  int64
			Lost, Duplicated, Reordered int64
		}
		if strings.HasPrefix(row.Workload, "fan-out") && row.Metric == "deliveries/s" {
			if err := json.Unmarshal(row.Detail, &servers); err != nil || len(servers) != 2 {
				t.Fatalf("%s: detail %s: %v", row.Workload, row.Detail, err)
			}
		}
		rows++
		if row.Roost <= 0 && row.Metric != "false dead verdicts" {
			t.Errorf("%s %s: roost %v", row.Workload, row.Metric, row.Roost)
		}
		for server, r := range servers {
			if r.Deliveries == 0 || r.Lost != 0 || r.Duplicated != 0 || r.Reordered != 0 {
				t.Errorf("%s on %s: %+v", row.Workload, server, r)
			}
		}
	}
	// 2 shapes × 4 fan-out metrics, 3 quiet rooms, 2 handshake (a new room, the leg present),
	// 3 server API, 4 idle, 2 storm, 2 × 4 failure and 2 × 2 soak (new and old detection
	// defaults), 2 hand-off, 2 placement, 3 rebalance
	if rows != 41 {
		t.Fatalf("%d JSON rows, want 41:\n%s", rows, out)
	}
	if !strings.Contains(string(out), `"lost":0,`) || strings.Contains(string(out), `"reset":1`) {
		t.Fatalf("the hand-off lost or reset rooms:\n%s", out)
	}
	if !strings.Contains(string(out), "fan-out 1×100") || !strings.Contains(string(out), "rebalance 8→9") || !strings.Contains(string(out), "soak 3s") ||
		!strings.Contains(string(out), ", fast (") {
		t.Fatalf("table incomplete:\n%s", out)
	}
}
