package ring

import (
	"testing"
	"time"
)

// TestEstimate100 is the placement half of the README's estimate for 100 nodes × 1,000,000 rooms:
// the rooms that move on a join (100→101) and a loss (100→99) against the ideal 1/N, the share
// that moves between nodes present on both sides, the busiest node against the mean, and the
// rebuild time each member pays per change. Run with ROOST_TUNE=1 (it takes a few seconds).
func TestEstimate100(t *testing.T) {
	if !tuning() {
		t.Skip("set ROOST_TUNE=1 to compute the 100-node placement estimate")
	}
	rs := rooms(1_000_000)
	cfg := DefaultPlacementConfig()
	base := NewPlacement(nodes(100), cfg)
	start := time.Now()
	for range 10 {
		NewPlacement(nodes(101), cfg)
	}
	rebuild := time.Since(start) / 10
	t.Logf("100 nodes: rebuild (101 nodes) %s, busiest node %.3f× the mean", rebuild.Round(10*time.Microsecond), maxLoad(base, rs))
	for _, c := range []struct {
		name string
		to   []Member
	}{
		{"join 100→101", nodes(101)},
		{"loss 100→99 (n100 gone)", nodes(99)},
		{"loss 100→99 (n50 gone)", append(nodes(100)[:49:49], nodes(100)[50:]...)},
	} {
		p := NewPlacement(c.to, cfg)
		frac, between := moved(base, p, rs)
		ideal := 1 / float64(max(len(c.to), 100))
		t.Logf("%s: %.0f rooms move (%.3f%%, %.2f× the ideal 1/N), %.0f of them between nodes on both sides; busiest node %.3f× the mean",
			c.name, frac*float64(len(rs)), 100*frac, frac/ideal, between*float64(len(rs)), maxLoad(p, rs))
	}
}
