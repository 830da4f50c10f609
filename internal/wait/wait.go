// Package wait is the one way roost's tests wait on a condition: poll it with a deadline, never
// sleep a fixed time, and say what was awaited when it does not come.
//
//	wait.Eventually(t, 5*time.Second, "the router sees the node", rt.Ready)
//
// It imports nothing of roost, so every package's tests can use it (ring's included).
package wait

import (
	"testing"
	"time"
)

// Interval is how often Eventually asks again.
const Interval = 10 * time.Millisecond

// Eventually polls cond every Interval until it holds, and fails tb (Fatalf) naming what it
// waited for and how long when it does not hold within timeout.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %s: %s", timeout, what)
		}
		time.Sleep(Interval)
	}
}
