package room

// Evict closes c alone as f says (after what is queued to it, when f.Flush), as Close does for
// every connection: a connection whose publish the room refused as moved is sent to the owner,
// whether or not the room then thaws here, so its client does not wait for a close that never
// comes (issue 22, finding 7).
func (r *Room) Evict(c *Conn, f Farewell) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.subs[c]; ok {
		r.dropSub(c)
	}
	c.close(f, r.epoch)
}
