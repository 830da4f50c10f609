# roost: the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     ?= bin/roost
TIMEOUT ?= 15m

.PHONY: build run test vet fmt conformance clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/roost

# A local cluster: 3 nodes and a router on 127.0.0.1, router on :8080. Builds bin/roost first so
# a second terminal can use `bin/roost ctl`.
run: build
	$(BIN) dev

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

test: vet
	$(GO) test -race -count=1 -timeout $(TIMEOUT) ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

# The black-box contract check in ../shared (when present).
conformance:
	../shared/conformance/run.sh

clean:
	rm -rf bin
