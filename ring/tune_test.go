package ring

import (
	"fmt"
	"os"
	"testing"
	"time"
)

func tuning() bool { return os.Getenv("ROOST_TUNE") != "" }

// TestTuneDefaults compares candidate placement configs over several sets of node names: rooms
// moved on 3→4, 4→3 and 8→9 nodes as a multiple of the ideal 1/N, the share moved between
// survivors, the worst node's load against the mean, and rebuild time. Run with ROOST_TUNE=1.
func TestTuneDefaults(t *testing.T) {
	if !tuning() {
		t.Skip("set ROOST_TUNE=1 to compare placement configs")
	}
	rs := rooms(50_000)
	named := func(prefix string, n int) []Member {
		ms := nodes(n)
		for i := range ms {
			ms[i].ID = fmt.Sprintf("%s-%d", prefix, i)
		}
		return ms
	}
	prefixes := []string{"n", "roost", "node-abc", "10.0.0", "pod"}
	for _, parts := range []int{271, 1021, 2039, 4093} {
		for _, reps := range []int{64, 160, 400} {
			for _, load := range []float64{1.1, 1.25} {
				cfg := PlacementConfig{Partitions: parts, Replicas: reps, Load: load}
				line := fmt.Sprintf("parts=%4d reps=%3d load=%.2f:", parts, reps, load)
				for _, c := range []struct{ from, to int }{{3, 4}, {4, 3}, {8, 9}} {
					var f, bw, worst float64
					for _, pre := range prefixes {
						a, b := NewPlacement(named(pre, c.from), cfg), NewPlacement(named(pre, c.to), cfg)
						ff, bb := moved(a, b, rs)
						f += ff / float64(len(prefixes))
						bw = max(bw, bb)
						worst = max(worst, maxLoad(b, rs))
					}
					line += fmt.Sprintf(" | %d→%d %.2fx surv≤%.3f maxload %.2f", c.from, c.to, f*float64(max(c.from, c.to)), bw, worst)
				}
				start := time.Now()
				for range 20 {
					NewPlacement(named("n", 9), cfg)
				}
				line += fmt.Sprintf(" | rebuild(9) %s", time.Since(start)/20)
				t.Log(line)
			}
		}
	}
}

func maxLoad(p *Placement, rs []string) float64 {
	count := map[string]int{}
	for _, r := range rs {
		o, _ := p.Owner(r)
		count[o.ID]++
	}
	worst := 0
	for _, c := range count {
		worst = max(worst, c)
	}
	return float64(worst) * float64(len(p.nodes)) / float64(len(rs))
}
