package loop

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestEveryRunsUntilTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var n atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		Every(ctx, time.Millisecond, func(time.Time) {
			if n.Add(1) == 5 {
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Every did not return after its context ended")
	}
	if got := n.Load(); got != 5 {
		t.Fatalf("%d calls, want 5 (none after the cancel)", got)
	}
}

func TestSleepEndsWithItsContext(t *testing.T) {
	if err := Sleep(t.Context(), time.Millisecond); err != nil {
		t.Fatalf("a sleep that ran its course: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(10*time.Millisecond, cancel)
	start := time.Now()
	if err := Sleep(ctx, time.Minute); err != context.Canceled {
		t.Fatalf("a sleep whose context ended: %v, want %v", err, context.Canceled)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("the sleep outlived its context by %s", waited)
	}
}
