package peer

import (
	"container/heap"
	"sync"
)

// nonces remembers the nonces of calls accepted, to refuse replays, in bounded memory. A
// signature is only ever valid within MaxClockSkew of its timestamp, so a nonce is forgotten once
// its timestamp has left that window. Beyond max entries, the oldest is forgotten early and the
// floor rises to its timestamp: every call signed at or before the floor is refused from then on,
// so a forgotten nonce can never be accepted again. The floor starts at the receiver's start.
type nonces struct {
	mu    sync.Mutex
	max   int
	floor int64 // unix ms: calls signed at or before it are refused
	seen  map[string]struct{}
	byAge nonceHeap
}

type nonceEntry struct {
	ms    int64
	nonce string
}

type nonceHeap []nonceEntry

func (h nonceHeap) Len() int           { return len(h) }
func (h nonceHeap) Less(i, j int) bool { return h[i].ms < h[j].ms }
func (h nonceHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *nonceHeap) Push(x any)        { *h = append(*h, x.(nonceEntry)) }
func (h *nonceHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// newNonces remembers up to max nonces and refuses calls signed before start (unix ms).
func newNonces(max int, start int64) *nonces {
	return &nonces{max: max, floor: start - 1, seen: map[string]struct{}{}}
}

// add records nonce, signed at ms, and reports whether it is new and signed after the floor.
// oldest (unix ms) is the earliest timestamp still within the clock-skew window.
func (n *nonces) add(nonce string, ms, oldest int64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for len(n.byAge) > 0 && n.byAge[0].ms < oldest { // out of the window: refused by age anyway
		delete(n.seen, heap.Pop(&n.byAge).(nonceEntry).nonce)
	}
	if ms <= n.floor {
		return false
	}
	if _, ok := n.seen[nonce]; ok {
		return false
	}
	for len(n.byAge) >= n.max {
		e := heap.Pop(&n.byAge).(nonceEntry)
		delete(n.seen, e.nonce)
		n.floor = max(n.floor, e.ms)
	}
	if ms <= n.floor {
		return false
	}
	n.seen[nonce] = struct{}{}
	heap.Push(&n.byAge, nonceEntry{ms, nonce})
	return true
}

// len is how many nonces are remembered.
func (n *nonces) len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.byAge)
}
