// Package test holds roost's black-box tests: whole clusters on loopback, in one process
// (internal/testcluster) and, for chaos tests, as processes of the built binary (internal/proc,
// wrapped with the tests' defaults in process_test.go). They talk to the cluster only as users
// do: HTTP, WebSocket and TCP, through the client library.
package test
