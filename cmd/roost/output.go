package main

import "os"

// Where dev and ctl print; variables so tests can capture them.
var (
	devStdout = os.Stdout
	devStderr = os.Stderr
)
