//go:build race

package test

// raceEnabled: the tests run under the race detector.
const raceEnabled = true
