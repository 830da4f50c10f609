package test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/roost-dev/roost/client"
)

// TestKillNineIsDetected kills a node process with SIGKILL and measures how long the survivors
// keep it in their ring (until both report it dead) and until a room it owned is served again
// by its new owner. ROOST_KILL_TRIALS sets the number of trials (default 1; each starts a fresh
// cluster of 3 processes).
func TestKillNineIsDetected(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	trials := 1
	if v, err := strconv.Atoi(os.Getenv("ROOST_KILL_TRIALS")); err == nil && v > 0 {
		trials = v
	}
	var dead, served []time.Duration
	for trial := range trials {
		t.Run(fmt.Sprint("trial", trial), func(t *testing.T) {
			ps := startProcCluster(t, 3)
			victim, survivors := ps[2], ps[:2]
			// A room the victim owns.
			room := ""
			for i := range 1000 {
				r := fmt.Sprint("kill-", i)
				if o, err := survivors[0].ownerFrom(t.Context(), r); err == nil && o.Node == victim.id {
					room = r
					break
				}
			}
			if room == "" {
				t.Fatal("no room on the victim")
			}
			start := time.Now()
			victim.signal(syscall.SIGKILL)
			<-victim.exited
			eventually(t, 15*time.Second, "both survivors declare the victim dead", func() bool {
				return survivors[0].nodeState(victim.id) == "dead" && survivors[1].nodeState(victim.id) == "dead"
			})
			d := time.Since(start)
			eventually(t, 15*time.Second, "the victim's room served again", func() bool {
				c, err := client.Dial(t.Context(), survivors[0].url(), room, &client.Options{DisableReconnect: true, HandshakeTimeout: time.Second})
				if err != nil {
					return false
				}
				defer c.Close()
				return c.Welcome().Node != victim.id
			})
			s := time.Since(start)
			dead, served = append(dead, d), append(served, s)
			t.Logf("kill -9: dead on both survivors after %s, room served again after %s", d.Round(time.Millisecond), s.Round(time.Millisecond))
		})
	}
	if len(dead) > 1 {
		slices.Sort(dead)
		slices.Sort(served)
		q := func(ds []time.Duration, p float64) time.Duration {
			return ds[int(p*float64(len(ds)-1))].Round(time.Millisecond)
		}
		t.Logf("%d trials: dead p50 %s p99 %s max %s; served p50 %s p99 %s", len(dead),
			q(dead, .5), q(dead, .99), dead[len(dead)-1].Round(time.Millisecond), q(served, .5), q(served, .99))
	}
}

// TestSigtermShutsDownCleanly: SIGTERM makes a node leave the gossip (the others list it as
// "left", not "dead") and exit 0.
func TestSigtermShutsDownCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	ps := startProcCluster(t, 2)
	ps[1].signal(syscall.SIGTERM)
	select {
	case <-ps[1].exited:
	case <-time.After(15 * time.Second):
		t.Fatal("node did not exit within 15s of SIGTERM")
	}
	if code := ps[1].cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM\n%s", code, ps[1].log)
	}
	eventually(t, 5*time.Second, "the survivor lists it as left", func() bool { return ps[0].nodeState(ps[1].id) == "left" })
}
