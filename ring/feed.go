package ring

import "sync"

// Feed tells its subscribers of each new placement. A subscriber holds only the newest one: a
// slow reader never holds up the sender, and never reads a placement older than one it was
// sent. The zero Feed is ready to use.
type Feed struct {
	mu   sync.Mutex
	subs map[chan *Placement]struct{}
}

// Subscribe returns a channel that receives each placement sent after the call (only the
// newest one, if the reader is slow) and a function that ends the subscription.
func (f *Feed) Subscribe() (<-chan *Placement, func()) {
	ch := make(chan *Placement, 1)
	f.mu.Lock()
	if f.subs == nil {
		f.subs = map[chan *Placement]struct{}{}
	}
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	return ch, func() {
		f.mu.Lock()
		delete(f.subs, ch)
		f.mu.Unlock()
	}
}

// Send gives p to every subscriber, in place of one it has not read yet.
func (f *Feed) Send(p *Placement) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.subs {
		select {
		case <-ch: // drop the stale one: subscribers want the newest
		default:
		}
		ch <- p
	}
}
