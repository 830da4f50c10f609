// Package test holds roost's black-box tests: whole clusters on loopback, in one process
// (cluster_test.go) and, for chaos tests, as processes of the built binary. They talk to the
// cluster only as users do: HTTP, WebSocket and TCP, through the client library.
package test
