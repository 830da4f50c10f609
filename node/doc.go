// Package node is the room owner. A node keeps the rooms the ring assigns it in memory — sequence
// numbers, a bounded history, remembered publish ids, presence — and serves their WebSocket
// clients: every message is sequenced once, encoded once and queued to every subscriber; a
// subscriber that falls behind its bounded queue is closed with 4008 and never slows the room.
//
// A node creates a room only when its own placement names it the owner; asked about any other
// room it redirects (307) to the owner. When the placement changes, rooms it no longer owns are
// closed with 4001 naming the new owner.
//
//	n, err := node.New(cfg, r) // r is the member's *ring.Ring
//	srv := &http.Server{Handler: n.Handler()}
//	...
//	n.Close()                  // closes every connection with 1001 and waits for them
package node
