package handoff

import (
	"fmt"
	"testing"
)

func TestChunksBoundRoomsAndBytes(t *testing.T) {
	var rooms []int // each room's history bytes
	add := func(count, size int) {
		for range count {
			rooms = append(rooms, size)
		}
	}
	add(600, 10)         // small rooms: cut by count
	add(3, chunkBytes)   // each fills the byte bound: one per call
	add(1, 3*chunkBytes) // larger than the bound: still sent, alone
	add(5, 1)
	got := chunks(rooms, func(size int) int { return size })
	var sizes []int
	total := 0
	for _, c := range got {
		sizes = append(sizes, len(c))
		total += len(c)
		bytes := 0
		for _, size := range c {
			bytes += size
		}
		if len(c) > chunkRooms || (len(c) > 1 && bytes > chunkBytes) {
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
