package limit

import (
	"errors"
	"sync/atomic"
)

// ErrOverloaded: a Budget (or the process's memory) has no room for more bytes. Callers refuse
// the request that would have added them (429, error frame or ERR line `overloaded`); nothing
// already accepted is dropped.
var ErrOverloaded = errors.New("over its memory budget")

// CodeOverloaded is the code a refusal for memory carries on the wire: the JSON error of a 429,
// an error frame, a TCP ERR line. (An extension of the API's codes: limit_reached is for limits
// a client can read, like --max-rooms; overloaded says the member is short of memory now.)
const CodeOverloaded = "overloaded"

// Budget is one byte budget shared by everything a member keeps on behalf of clients: room
// history, messages waiting in send queues, remembered publish ids, rooms received in hand-offs,
// a router's unacked publishes. Each keeper Reserves what it is about to keep (refused when the
// budget is spent) or Charges what it must keep anyway (already accepted), and Releases it when
// it lets go. It also refuses while the process as a whole is over its Memory limit, whatever
// the count says, as the count cannot see everything (buffers in flight, the collector's slack).
// It is safe for concurrent use; the zero value and a nil *Budget refuse nothing.
type Budget struct {
	limit  int64
	used   atomic.Int64
	memory *Memory // may be nil
}

// NewBudget returns a budget of limit bytes (0: unbounded) that also refuses while memory, if
// not nil, is over its limit.
func NewBudget(limit uint64, memory *Memory) *Budget {
	return &Budget{limit: int64(min(limit, 1<<62)), memory: memory}
}

// Reserve takes n bytes from the budget, or reports ErrOverloaded and takes nothing when they
// do not fit (or the process is over its memory limit). n <= 0 always fits.
func (b *Budget) Reserve(n int) error {
	if b == nil || n <= 0 {
		return nil
	}
	if b.memory.Over() {
		return ErrOverloaded
	}
	if b.limit == 0 {
		b.used.Add(int64(n))
		return nil
	}
	for {
		u := b.used.Load()
		if u+int64(n) > b.limit {
			return ErrOverloaded
		}
		if b.used.CompareAndSwap(u, u+int64(n)) {
			return nil
		}
	}
}

// Fits reports whether n more bytes fit (and the process is within its memory limit), without
// taking them: for a keeper that Charges what it keeps as it keeps it. Checks and charges from
// several goroutines may overshoot the limit by what they check at once, never by more.
func (b *Budget) Fits(n int) bool {
	if b == nil || n <= 0 {
		return true
	}
	if b.memory.Over() {
		return false
	}
	return b.limit == 0 || b.used.Load()+int64(n) <= b.limit
}

// Charge takes n bytes whether or not they fit: for what is kept already (a message sequenced,
// a room accepted), so the budget stays a true count.
func (b *Budget) Charge(n int) {
	if b != nil && n != 0 {
		b.used.Add(int64(n))
	}
}

// Release gives back n bytes taken by Reserve or Charge.
func (b *Budget) Release(n int) {
	if b != nil && n != 0 {
		b.used.Add(-int64(n))
	}
}

// Full reports whether the budget is spent (or the process over its memory limit): what Reserve
// of one more byte would answer.
func (b *Budget) Full() bool {
	if b == nil {
		return false
	}
	return b.memory.Over() || (b.limit > 0 && b.used.Load() >= b.limit)
}

// Used is the bytes taken now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Limit is the budget's size in bytes; 0: unbounded.
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// DefaultBudget is the share of a memory limit given to what a member keeps for clients: half of
// it, as the Go collector lets the heap grow to about twice what is live before it collects
// (GOGC=100) and the rest of the process (stacks, socket buffers, the runtime) needs its share.
// 0 (no memory limit) gives 0 (unbounded).
func DefaultBudget(memoryLimit uint64) uint64 { return memoryLimit / 2 }
