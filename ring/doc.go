// Package ring is roost's membership and placement: who is in the cluster, and which node owns
// each room.
//
// Membership is gossiped with hashicorp/memberlist (SWIM with Lifeguard): every node and router is
// a member and advertises its role, HTTP and TCP addresses and state in its metadata. Placement is
// a partitioned, bounded-load consistent hash (buraksezer/consistent, with xxhash) over the members
// whose role is "node" and that are not draining. Routers are members but never own rooms.
//
// Placement is an immutable snapshot. Bursts of membership events are coalesced, a new snapshot is
// built off to the side and swapped in atomically, so Owner never blocks and never takes a lock.
// Subscribers are told about every new placement version.
//
//	r, err := ring.New(cfg)             // joins cfg.Join, starts gossip
//	defer r.Close()
//	owner, ok := r.Placement().Owner("lobby")
//	changes, stop := r.Subscribe()      // the newest *Placement after each change
//	defer stop()
//
// The placement logic itself (NewPlacement) needs no network and is what the tests of moved-room
// fractions and join-order independence exercise.
package ring
