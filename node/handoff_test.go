package node

import (
	"fmt"
	"testing"
)

func TestHandoffChunksBoundRoomsAndBytes(t *testing.T) {
	var rooms []*Room
	add := func(count, size int) {
		for range count {
			r := &Room{name: fmt.Sprintf("r%d", len(rooms))}
			r.hist.bytes = size
			rooms = append(rooms, r)
		}
	}
	add(600, 10)                // small rooms: cut by count
	add(3, handoffChunkBytes)   // each fills the byte bound: one per call
	add(1, 3*handoffChunkBytes) // larger than the bound: still sent, alone
	add(5, 1)
	got := chunks(rooms)
	var sizes []int
	total := 0
	for _, c := range got {
		sizes = append(sizes, len(c))
		total += len(c)
		bytes := 0
		for _, r := range c {
			bytes += r.hist.bytes
		}
		if len(c) > handoffChunk || (len(c) > 1 && bytes > handoffChunkBytes) {
			t.Fatalf("chunk of %d rooms, %d bytes is over the bounds", len(c), bytes)
		}
	}
	if total != len(rooms) {
		t.Fatalf("chunks hold %d rooms, want %d", total, len(rooms))
	}
	want := fmt.Sprint([]int{64, 64, 64, 64, 64, 64, 64, 64, 64, 24, 1, 1, 1, 1, 5})
	if fmt.Sprint(sizes) != want {
		t.Fatalf("chunk sizes %v, want %s", sizes, want)
	}
}
