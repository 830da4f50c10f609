package room

import (
	"container/list"
	"slices"

	"github.com/roost-dev/roost/limit"
)

// idCost is what one remembered id costs beyond its bytes: its map entry and its places in the
// room's and its client's order.
const idCost = 128

// DedupeClients is how many of a room's most recent publishers keep their own last ids (see
// dedupe).
const DedupeClients = 256

// dedupe remembers the seq of recent publish ids, in two windows: the room's newest max ids, and
// each recent publisher's own newest perClient ids (for the DedupeClients publishers that
// published last). An id is forgotten once it has left both. The room's window alone forgets a
// quiet client's id after max publishes by anyone: in a busy room that is a fraction of a
// second, shorter than a reconnect, and the client's retry would be delivered twice (issue 22,
// finding 9). A retry comes from the client that sent the id first, so its own window keeps it.
// Lookups are by id alone, across clients, as the protocol says. What it remembers is counted in
// budget.
type dedupe struct {
	max, perClient int
	budget         *limit.Budget
	seqs           map[string]*idEntry
	order          []string                 // the room's window, oldest first
	clients        map[string]*list.Element // of recent; values are *clientIDs
	recent         list.List                // publishers, the latest first
}

type idEntry struct {
	seq           uint64
	client        string
	inRoom, inOwn bool // in the room's window; in its client's
}

type clientIDs struct {
	client string
	ids    []string // oldest first
}

func (d *dedupe) lookup(id string) (uint64, bool) {
	e, ok := d.seqs[id]
	if !ok {
		return 0, false
	}
	return e.seq, true
}

func idSize(id string) int { return len(id) + idCost }

// growth is how much remembering id (from client) adds: its cost, less the ids it pushes out of
// both windows.
func (d *dedupe) growth(client, id string) int {
	if id == "" {
		return 0
	}
	g := idSize(id)
	var roomOldest string
	if len(d.order) >= d.max {
		roomOldest = d.order[0]
		if e := d.seqs[roomOldest]; !e.inOwn {
			g -= idSize(roomOldest)
		}
	}
	if el, ok := d.clients[client]; ok && d.perClient > 0 {
		if c := el.Value.(*clientIDs); len(c.ids) >= d.perClient {
			if old := c.ids[0]; old != roomOldest && !d.seqs[old].inRoom {
				g -= idSize(old)
			}
		}
	}
	return g
}

func (d *dedupe) remember(client, id string, seq uint64) {
	if d.seqs == nil {
		d.seqs, d.clients = map[string]*idEntry{}, map[string]*list.Element{}
	}
	e := &idEntry{seq: seq, client: client, inRoom: true}
	d.seqs[id] = e
	d.budget.Charge(idSize(id))
	d.order = append(d.order, id)
	if len(d.order) > d.max {
		old := shift(&d.order)
		d.seqs[old].inRoom = false
		d.forgetIfGone(old)
	}
	if d.perClient <= 0 {
		return
	}
	el, ok := d.clients[client]
	if ok {
		d.recent.MoveToFront(el)
	} else {
		el = d.recent.PushFront(&clientIDs{client: client})
		d.clients[client] = el
		if d.recent.Len() > DedupeClients {
			d.dropClient(d.recent.Back())
		}
	}
	c := el.Value.(*clientIDs)
	c.ids = append(c.ids, id)
	e.inOwn = true
	if len(c.ids) > d.perClient {
		old := shift(&c.ids)
		d.seqs[old].inOwn = false
		d.forgetIfGone(old)
	}
}

// dropClient stops keeping a publisher's own window: its ids stay while the room's keeps them.
func (d *dedupe) dropClient(el *list.Element) {
	c := d.recent.Remove(el).(*clientIDs)
	delete(d.clients, c.client)
	for _, id := range c.ids {
		d.seqs[id].inOwn = false
		d.forgetIfGone(id)
	}
}

func (d *dedupe) forgetIfGone(id string) {
	if e := d.seqs[id]; e != nil && !e.inRoom && !e.inOwn {
		delete(d.seqs, id)
		d.budget.Release(idSize(id))
	}
}

// all is every remembered id with its seq and client, oldest first: remembered again in this
// order, they rebuild both windows as they are.
func (d *dedupe) all() []ID {
	out := make([]ID, 0, len(d.seqs))
	for id, e := range d.seqs {
		out = append(out, ID{ID: id, Seq: e.seq, Client: e.client})
	}
	slices.SortFunc(out, func(a, b ID) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	return out
}

// clear forgets every id, for a room that is gone.
func (d *dedupe) clear() {
	for id := range d.seqs {
		d.budget.Release(idSize(id))
	}
	d.seqs, d.order, d.clients = nil, nil, nil
	d.recent.Init()
}

// shift removes the first of ids and returns it (clearing its slot, so the string is not kept).
func shift(ids *[]string) string {
	old := (*ids)[0]
	(*ids)[0] = ""
	*ids = (*ids)[1:]
	return old
}
