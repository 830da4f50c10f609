package testcluster

import (
	"net/http"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestClusterLifecycle: a cluster of two nodes and a router serves, takes a third node, loses one
// to a drain and one to a stop, and agrees on the ring after each; nothing is left running.
func TestClusterLifecycle(t *testing.T) {
	c := New(t, Config{Nodes: 2, Routers: 1})
	if len(c.Nodes()) != 2 || len(c.Routers()) != 1 || c.Member("r1").Router == nil || c.Member("n1").Node == nil {
		t.Fatalf("members %+v", c.Members())
	}
	resp, err := http.Get(c.Member("r1").URL() + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("router /readyz: %v %v", resp, err)
	}
	resp.Body.Close()
	n3 := c.AddNode("n3")
	if n3.TCP == "" {
		t.Fatal("a node without TCP ingest")
	}
	c.WaitConverged(3)
	c.Drain(c.Member("n1"))
	c.WaitConverged(2)
	c.Stop(n3)
	c.Stop(n3) // again: nothing
	c.WaitConverged(1)
	if c.Member("n1") != nil || c.Member("n3") != nil || len(c.Members()) != 2 {
		t.Fatalf("members after drain and stop: %+v", c.Members())
	}
}
