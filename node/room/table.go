package room

import (
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// tableShards spreads rooms over several maps so joins and lookups in busy rooms do not contend
// on one lock.
const tableShards = 64

// Table is a node's rooms by name.
type Table struct {
	shards [tableShards]tableShard
	count  atomic.Int64 // rooms in all shards; read without taking any shard lock
}

type tableShard struct {
	mu sync.RWMutex
	m  map[string]*Room
}

// NewTable makes an empty table.
func NewTable() *Table {
	t := &Table{}
	for i := range t.shards {
		t.shards[i].m = map[string]*Room{}
	}
	return t
}

func (t *Table) shard(name string) *tableShard {
	return &t.shards[xxhash.Sum64String(name)%tableShards]
}

// Get returns the room called name, or nil.
func (t *Table) Get(name string) *Room {
	s := t.shard(name)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[name]
}

// GetOrCreate returns the room, making it with create if absent; create may refuse with an
// error. create runs under the shard's lock: it must not call the table except Len.
func (t *Table) GetOrCreate(name string, create func() (*Room, error)) (*Room, error) {
	if r := t.Get(name); r != nil {
		return r, nil
	}
	s := t.shard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.m[name]; r != nil {
		return r, nil
	}
	r, err := create()
	if err != nil {
		return nil, err
	}
	s.m[name] = r
	t.count.Add(1)
	return r, nil
}

// Remove deletes the room if it is still the one in the table.
func (t *Table) Remove(r *Room) {
	s := t.shard(r.name)
	s.mu.Lock()
	if s.m[r.name] == r {
		delete(s.m, r.name)
		t.count.Add(-1)
	}
	s.mu.Unlock()
}

// All returns every room, in no order.
func (t *Table) All() []*Room {
	var out []*Room
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		for _, r := range s.m {
			out = append(out, r)
		}
		s.mu.RUnlock()
	}
	return out
}

// Len is the number of rooms. It takes no lock, so GetOrCreate's create may call it.
func (t *Table) Len() int { return int(t.count.Load()) }
