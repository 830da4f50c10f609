package room

import (
	"sync/atomic"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/limit"
)

// entry is one sequenced message. It is immutable once made and shared by the history and every
// subscriber queue, so a message is encoded once however many receive it.
//
// Its memory is counted in the node's budget while anything holds it: the room's history or a
// connection's queue. hold and drop count the holders; the first hold charges the budget and
// the last drop releases it, so a message is counted once however many queues it waits in, and
// for as long as a slow connection pins it after the history let it go.
type entry struct {
	seq    uint64
	binary bool
	frame  []byte                                    // the wire frame: JSON text, or 8-byte seq + payload
	pm     atomic.Pointer[websocket.PreparedMessage] // small frames only: framed once for every receiver (prepared)
	refs   atomic.Int32                              // holders: the history, queues
	budget *limit.Budget                             // what the entry is counted in; set by its first holder
}

// preparedMax is the largest frame framed once as a prepared message. A prepared message keeps a
// framed copy of the payload beside the frame (gorilla copies it into a buffer that grows by
// doubling: up to twice the payload again); for larger frames, framing per receiver costs a
// header and gorilla writes the payload from the frame itself, so the message costs its size once.
const preparedMax = 8 << 10

// entryOverhead is what an entry costs beyond its frame: the struct, and a prepared message's
// struct and map for small frames.
const entryOverhead = 384

func newEntry(seq uint64, binary bool, frame []byte) *entry {
	return &entry{seq: seq, binary: binary, frame: frame}
}

// prepared is the entry framed once for every receiver, made at its first delivery (nil for a
// frame larger than preparedMax). Most entries of a replica's copy, and of a history that
// arrived in a hand-off, are never delivered: framing them when they are made would cost a copy
// of each message and most of a replica's CPU.
func (e *entry) prepared() *websocket.PreparedMessage {
	if len(e.frame) > preparedMax {
		return nil
	}
	if pm := e.pm.Load(); pm != nil {
		return pm
	}
	mt := websocket.TextMessage
	if e.binary {
		mt = websocket.BinaryMessage
	}
	pm, err := websocket.NewPreparedMessage(mt, e.frame)
	if err != nil {
		panic(err) // only fails for invalid message types
	}
	if e.pm.CompareAndSwap(nil, pm) {
		return pm
	}
	return e.pm.Load() // another writer framed it first
}

func (e *entry) size() int { return len(e.frame) }

// cost is the memory the entry holds, as the budget and send queues count it.
func (e *entry) cost() int {
	c := cap(e.frame) + entryOverhead
	if len(e.frame) <= preparedMax {
		c += 2 * len(e.frame) // the prepared copy (once delivered), in a buffer grown by doubling
	}
	return c
}

// hold counts a holder in; the first charges b.
func (e *entry) hold(b *limit.Budget) {
	if e.refs.Add(1) == 1 {
		e.budget = b
		b.Charge(e.cost())
	}
}

// drop counts a holder out; the last releases what the first charged.
func (e *entry) drop() {
	if e.refs.Add(-1) == 0 {
		e.budget.Release(e.cost())
	}
}

// pinnedOnly reports whether h is the entry's only holder: dropping it frees its memory.
func (e *entry) pinnedOnly() bool { return e.refs.Load() == 1 }

// history keeps the newest messages of a room within a count and a byte bound. Seqs in it are
// contiguous, so finding where to resume is arithmetic. Its entries are counted in budget.
type history struct {
	maxCount, maxBytes int
	budget             *limit.Budget
	entries            []*entry
	bytes              int
}

func (h *history) add(e *entry) {
	e.hold(h.budget)
	h.entries = append(h.entries, e)
	h.bytes += e.size()
	for len(h.entries) > h.maxCount || (h.bytes > h.maxBytes && len(h.entries) > 1) {
		h.bytes -= h.entries[0].size()
		h.entries[0].drop()
		h.entries[0] = nil // let the dropped entry go before the array is reallocated
		h.entries = h.entries[1:]
	}
}

// growth is how much memory adding a message of frame size bytes (costing cost) would add to
// what the budget counts: its cost less that of the messages it pushes out that nothing else
// holds. A room whose history is full grows by nothing, so it never has to refuse for its own
// sake; one with a slow subscriber pinning what it pushes out does grow.
func (h *history) growth(size, cost int) int {
	count, bytes := len(h.entries)+1, h.bytes+size
	for _, old := range h.entries {
		if !(count > h.maxCount || (bytes > h.maxBytes && count > 1)) {
			break
		}
		count, bytes = count-1, bytes-old.size()
		if old.pinnedOnly() {
			cost -= old.cost()
		}
	}
	return cost
}

// clear drops every entry, for a room that is gone.
func (h *history) clear() {
	for i, e := range h.entries {
		e.drop()
		h.entries[i] = nil
	}
	h.entries, h.bytes = nil, 0
}

// first is the oldest retained seq, or 0 when nothing is retained.
func (h *history) first() uint64 {
	if len(h.entries) == 0 {
		return 0
	}
	return h.entries[0].seq
}

// between returns the retained entries with since < seq <= upTo.
func (h *history) between(since, upTo uint64) []*entry {
	out := h.after(since)
	for len(out) > 0 && out[len(out)-1].seq > upTo {
		out = out[:len(out)-1]
	}
	return out
}

// after returns the retained entries with seq > since.
func (h *history) after(since uint64) []*entry {
	if len(h.entries) == 0 {
		return nil
	}
	first := h.entries[0].seq
	if since+1 <= first {
		return h.entries
	}
	i := since + 1 - first
	if i >= uint64(len(h.entries)) {
		return nil
	}
	return h.entries[i:]
}
