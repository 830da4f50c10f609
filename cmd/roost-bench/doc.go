// Command roost-bench is roost's benchmark suite: a load generator that runs roost nodes and
// routers as processes on loopback, measures them beside a minimal broadcast server (its own
// `roost-bench baseline`) and prints a table and a JSON line per row. It lives apart from the
// server so that the binary users deploy holds only the server; `roost bench` runs it.
//
//	make build && bin/roost-bench --quick
package main
