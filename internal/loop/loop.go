// Package loop runs a member's periodic work, owned by a context.
package loop

import (
	"context"
	"time"
)

// Every calls f with each tick's time every d until ctx ends. A call that takes longer than d
// delays the next; ticks are not queued behind it.
func Every(ctx context.Context, d time.Duration, f func(now time.Time)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			// select picks at random when both are ready: a tick that raced the
			// cancel must not run f after the context has ended.
			if ctx.Err() != nil {
				return
			}
			f(now)
		}
	}
}

// Sleep waits for d, or until ctx ends: it returns ctx's error then, nil after d.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
