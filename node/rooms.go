package node

import (
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// roomShards spreads rooms over several maps so joins and lookups in busy rooms do not contend on
// one lock.
const roomShards = 64

// rooms is the node's room table.
type rooms struct {
	shards [roomShards]roomShard
	count  atomic.Int64 // rooms in all shards; read without taking any shard lock
}

type roomShard struct {
	mu sync.RWMutex
	m  map[string]*Room
}

func newRooms() *rooms {
	t := &rooms{}
	for i := range t.shards {
		t.shards[i].m = map[string]*Room{}
	}
	return t
}

func (t *rooms) shard(name string) *roomShard {
	return &t.shards[xxhash.Sum64String(name)%roomShards]
}

func (t *rooms) get(name string) *Room {
	s := t.shard(name)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[name]
}

// getOrCreate returns the room, making it with create if absent; create may refuse with an error.
func (t *rooms) getOrCreate(name string, create func() (*Room, error)) (*Room, error) {
	if r := t.get(name); r != nil {
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

// remove deletes the room if it is still the one in the table.
func (t *rooms) remove(r *Room) {
	s := t.shard(r.name)
	s.mu.Lock()
	if s.m[r.name] == r {
		delete(s.m, r.name)
		t.count.Add(-1)
	}
	s.mu.Unlock()
}

// all returns every room, in no order.
func (t *rooms) all() []*Room {
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

// len is the number of rooms. It takes no lock, so create callbacks of getOrCreate may call it.
func (t *rooms) len() int { return int(t.count.Load()) }
