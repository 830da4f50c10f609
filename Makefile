# roost: the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     ?= bin/roost
BENCH   ?= bin/roost-bench
TIMEOUT ?= 15m

# bash, for pipefail: the verbose targets below filter go test's output, and a failing test must
# still fail the target.
SHELL := /bin/bash

.PHONY: build run test test-js vet fmt conformance clean chaos stream bench

# The server, and beside it the benchmark suite (kept out of the server binary; `roost bench`
# runs it).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/roost
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BENCH) ./cmd/roost-bench

# A local cluster: 3 nodes and a router on 127.0.0.1, router on :8080. Builds bin/roost first so
# a second terminal can use `bin/roost ctl`.
run: build
	$(BIN) dev

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

# Every test with -race, then the stream test at its full size without it (see `stream`); the
# JavaScript client's tests first (test-js).
test: vet test-js
	$(GO) test -race -count=1 -timeout $(TIMEOUT) ./...
	ROOST_STREAM_FULL=1 $(GO) test -count=1 -timeout $(TIMEOUT) -run 'TestStreamFanOut' ./test

# The JavaScript client (sdk/js): its tests against a cluster of bin/roost processes, and the
# check that the demo page's bundle of it (router/web/roost-client.js) is up to date.
test-js: build
	cd sdk/js && npm ci --no-audit --no-fund && npm test

fmt:
	gofmt -w $$(git ls-files '*.go')

# The black-box contract check in ../shared (when present).
conformance:
	../shared/conformance/run.sh

clean:
	rm -rf bin

# The longer chaos soak: repeated kill -9 trials with real processes, the hand-off tests at full
# size, a 20 s partition and the fault suite (test/faults_test.go: 20 s of each fault) in network
# namespaces (as root; skipped with a line otherwise). Prints the measured figures (time to dead,
# to served, drain time, freeze per batch, heal time, the history checker's counts and overlap).
chaos:
	set -o pipefail; ROOST_KILL_TRIALS=20 ROOST_DRAIN_ROOMS=3000 ROOST_PARTITION_SECONDS=20 ROOST_FAULT_SECONDS=20 $(GO) test -count=1 -timeout 30m -v \
		-run 'KillNine|KillOwner|Stopped|UntilOne|DrainLive|PlannedChanges|JoinsRacing|PartitionHeals|TestFault|TestCrashLoses|TestReplicaCrash|TestTwoReplicas|TestOwnerCut|TestNamedSource|TestKillDuringADrain|TestKillWhileReseeding' ./test \
		| grep -E '^(---|ok|FAIL)|kill -9|trials|drained|acked|served again|partition|majority|history|one copy|dropped|swallowed|stalled|under-replicated|placed the rooms'

# The stream test at full size (no -race), verbose: 10,000 frames of 1 B to 256 KiB to 50
# subscribers, steady and through a drain of the owner. About 2 min and 1.2 GB of memory.
stream:
	set -o pipefail; ROOST_STREAM_FULL=1 $(GO) test -count=1 -timeout 20m -v -run 'TestStreamFanOut' ./test \
		| grep -E '^(---|ok|FAIL)|frames,'

# The benchmark suite: roost-bench (fan-out and the edge against a minimal gorilla broadcast
# server and direct connections in the same run, placement, rebalancing; a table and a JSON line
# per row), then the Go benchmarks: placement cost, and ingest -> fan-out against a minimal
# broadcast loop (x-baseline is roost's throughput over the baseline's). About 2 minutes.
bench: build
	$(BENCH) --roost $(BIN)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2000x ./node
	$(GO) test -run '^$$' -bench . -benchmem ./ring
