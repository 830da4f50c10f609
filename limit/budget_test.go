package limit

import (
	"errors"
	"sync"
	"testing"
)

func TestBudget(t *testing.T) {
	b := NewBudget(100, nil)
	if err := b.Reserve(60); err != nil {
		t.Fatal(err)
	}
	if err := b.Reserve(50); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("60+50 of 100: %v, want ErrOverloaded", err)
	}
	if b.Used() != 60 || !b.Fits(40) || b.Fits(41) || b.Full() {
		t.Fatalf("used %d, fits 40 %v, fits 41 %v, full %v", b.Used(), b.Fits(40), b.Fits(41), b.Full())
	}
	b.Charge(50) // kept whatever the limit: the count stays true
	if b.Used() != 110 || !b.Full() || b.Fits(1) || !b.Fits(0) {
		t.Fatalf("after a charge past the limit: used %d, full %v", b.Used(), b.Full())
	}
	b.Release(110)
	if b.Used() != 0 {
		t.Fatalf("released all, used %d", b.Used())
	}

	// Reserve never lets concurrent takers past the limit.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if b.Reserve(7) == nil {
					b.Release(7)
				}
				_ = b.Reserve(3)
			}
		}()
	}
	wg.Wait()
	if b.Used() > 100 {
		t.Fatalf("concurrent reserves took %d of 100", b.Used())
	}

	var none *Budget // no budget: refuses nothing, counts nothing
	if none.Reserve(1<<40) != nil || !none.Fits(1<<40) || none.Full() || none.Used() != 0 {
		t.Fatal("a nil budget refused or counted")
	}
	none.Charge(1)
	none.Release(1)
	unbounded := NewBudget(0, nil)
	if unbounded.Reserve(1<<40) != nil || unbounded.Used() != 1<<40 || unbounded.Full() {
		t.Fatal("an unbounded budget refused, or did not count")
	}
}

// A budget refuses growth while the process is over its memory limit, whatever its own count.
func TestBudgetHeedsProcessMemory(t *testing.T) {
	b := NewBudget(1<<40, NewMemory(1)) // a process always holds more than a byte
	if b.Fits(1) || b.Reserve(1) == nil || !b.Full() {
		t.Fatal("a budget with room let growth through while the process is over its memory limit")
	}
	if DefaultBudget(1000) != 500 || DefaultBudget(0) != 0 {
		t.Fatal("DefaultBudget is half the memory limit, 0 for none")
	}
}
