// Package testcluster runs a whole roost cluster inside a test: N nodes and M routers on
// 127.0.0.1, each with its ring (gossip), its node or router, its HTTP server and, for a node,
// its TCP ingest, all on ports the kernel picks. A test can add members, drain or stop one, and
// wait until the members agree on the ring; everything is torn down when the test ends, and
// New waits for every goroutine it started (the packages' tests check for leaks).
//
// It uses only the exported API of ring, node and router, like cmd/roost does, so a test
// through it tests what an operator runs. For real processes (kill -9, SIGSTOP) see
// internal/proc.
//
//	c := testcluster.New(t, testcluster.Config{Nodes: 3, Routers: 1})
//	owner := c.Member("n2")
//	c.Drain(owner)
//	c.WaitConverged(2)
package testcluster
