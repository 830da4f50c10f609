// Package proc runs roost's binaries as real processes on loopback: the chaos tests in test/
// (kill -9, SIGSTOP, a drain by SIGTERM, TLS) and the benchmark suite (cmd/roost-bench) start
// their nodes and routers through it.
//
// It picks free ports, starts the process again on new ones when another process took a port
// first, collects the process's output, waits until it serves, signals it, and reads its
// GET /v1/cluster. Start is for any caller; StartT is for tests: it fails the test when the
// process does not come up, kills the process when the test ends (passed or not) and prints its
// output when the test failed. Roost builds cmd/roost once per test binary.
//
//	n1 := proc.StartT(t, proc.Spec{Binary: proc.Roost(t), Role: "node", ID: "n1"})
//	n2 := proc.StartT(t, proc.Spec{Binary: proc.Roost(t), Role: "node", ID: "n2", Join: n1.Gossip})
//	proc.WaitRingT(t, []*proc.Proc{n1, n2}, 2)
//	n1.Signal(syscall.SIGKILL)
package proc
