package room

import "github.com/gorilla/websocket"

// entry is one sequenced message. It is immutable once made and shared by the history and every
// subscriber queue, so a message is encoded once however many receive it.
type entry struct {
	seq    uint64
	binary bool
	frame  []byte // the wire frame: JSON text, or 8-byte seq + payload
	pm     *websocket.PreparedMessage
}

func newEntry(seq uint64, binary bool, frame []byte) *entry {
	mt := websocket.TextMessage
	if binary {
		mt = websocket.BinaryMessage
	}
	pm, err := websocket.NewPreparedMessage(mt, frame)
	if err != nil {
		panic(err) // only fails for invalid message types
	}
	return &entry{seq: seq, binary: binary, frame: frame, pm: pm}
}

func (e *entry) size() int { return len(e.frame) }

// history keeps the newest messages of a room within a count and a byte bound. Seqs in it are
// contiguous, so finding where to resume is arithmetic.
type history struct {
	maxCount, maxBytes int
	entries            []*entry
	bytes              int
}

func (h *history) add(e *entry) {
	h.entries = append(h.entries, e)
	h.bytes += e.size()
	for len(h.entries) > h.maxCount || (h.bytes > h.maxBytes && len(h.entries) > 1) {
		h.bytes -= h.entries[0].size()
		h.entries[0] = nil // let the dropped entry go before the array is reallocated
		h.entries = h.entries[1:]
	}
}

// first is the oldest retained seq, or 0 when nothing is retained.
func (h *history) first() uint64 {
	if len(h.entries) == 0 {
		return 0
	}
	return h.entries[0].seq
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

// dedupe remembers the seq of the newest publish ids, oldest forgotten first.
type dedupe struct {
	max   int
	seqs  map[string]uint64
	order []string
}

func (d *dedupe) lookup(id string) (uint64, bool) {
	seq, ok := d.seqs[id]
	return seq, ok
}

func (d *dedupe) remember(id string, seq uint64) {
	if d.seqs == nil {
		d.seqs = make(map[string]uint64)
	}
	d.seqs[id] = seq
	d.order = append(d.order, id)
	if len(d.order) > d.max {
		delete(d.seqs, d.order[0])
		d.order[0] = ""
		d.order = d.order[1:]
	}
}
