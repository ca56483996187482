# sockmesh — build, run and test. `make run` starts a local node; `make test` runs everything
# CI runs (it installs what it needs: npm packages for the conformance suite).
SHELL := /bin/bash
GO    ?= go
BIN   := $(CURDIR)/bin/sockmesh
export SOCKMESH_BIN := $(BIN)

.PHONY: all build run test vet unit fuzz fuzz-long integration goclient chaos-short chaos conformance bench bench-centrifugo bench-go scale storm proto lint clean

all: build

REVISION := $(shell git rev-parse --short HEAD 2>/dev/null)$(shell git diff --quiet 2>/dev/null || echo -modified)

build:
	$(GO) build -ldflags "-X main.revision=$(REVISION)" -o $(BIN) ./cmd/sockmesh

run: build
	./scripts/run-cluster.sh

test: vet build unit fuzz integration goclient chaos-short conformance
	@echo "make test: all passed"

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	@# Production is Linux; development builds must work elsewhere (docs/operations.md, "Systems").
	GOOS=darwin GOARCH=arm64 $(GO) build ./...
	GOOS=freebsd $(GO) build ./...

# Every package but the process-level suites under integration/ (they have their own target).
unit:
	$(GO) test -race -count=1 -timeout 300s $$($(GO) list ./... | grep -v /integration)

# A few seconds of coverage-guided fuzzing per target; the corpus in testdata/ is replayed by `unit`.
# Budgets are counts of executions (about 2-4 s each here), not durations: with a duration, Go
# 1.26's fuzzing coordinator can fail a target with a bare "context deadline exceeded" when
# the time runs out while a worker is busy (golang/go#75804, fixed in Go 1.27), as it did to
# FuzzRepairReceiver once in a clean-clone `make test`.
FUZZ_SHORT := wsframe:FuzzParse:20000 wsframe:FuzzCloseGuard:20000 scproto:FuzzDecode:150000 access:FuzzAuthVerify:12000 scproto:FuzzScanner:120000 mesh:FuzzZMTPGuard:15000 mesh:FuzzRepairReceiver:12000 mesh:FuzzOpenEnvelope:8000 mesh:FuzzLocalInterest:8000 node:FuzzSplitPosition:10000 node:FuzzServeFetch:5000 httpapi:FuzzRequestBodies:2000 client:FuzzRetryAfter:8000
fuzz:
	@for t in $(FUZZ_SHORT); do pkg=$${t%%:*}; rest=$${t#*:}; fn=$${rest%%:*}; n=$${rest#*:}; \
		$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$${n}x -fuzzminimizetime=100x ./$$pkg || exit 1; done

# Every fuzz target for longer (FUZZTIME each, default 2 minutes): what a short run cannot reach.
FUZZTIME ?= 2m
FUZZ_TARGETS := wsframe:FuzzParse wsframe:FuzzCloseGuard scproto:FuzzDecode access:FuzzAuthVerify scproto:FuzzScanner mesh:FuzzZMTPGuard mesh:FuzzOpenEnvelope mesh:FuzzRepairReceiver mesh:FuzzLocalInterest node:FuzzSplitPosition node:FuzzDecodePosition node:FuzzFetchReply node:FuzzServeFetch httpapi:FuzzRequestBodies client:FuzzRetryAfter
fuzz-long:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; echo "== $$fn ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) ./$$pkg || exit 1; done

# Multi-process tests of the real binary (the chaos suite has its own target: make chaos).
integration: build
	$(GO) test -count=1 -timeout 600s ./integration/ ./integration/harness/...

# sacOO7/socketcluster-client-go, a third-party Go SocketCluster client, unmodified, in a
# module of its own (its old dependencies never enter sockmesh's): integration/goclient.
goclient: build
	cd integration/goclient && $(GO) vet ./... && $(GO) test -count=1 -timeout 120s ./...

conformance: build
	cd integration/jsclient && npm ci --no-audit --no-fund --loglevel=error && npm test

# The short chaos profile (kill -9 under load, a proven 5 s network partition between network
# namespaces); needs root and iptables (installed when missing), skips with a message otherwise.
chaos-short: build
	@command -v iptables >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { apt-get install -y -qq iptables >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq iptables >/dev/null 2>&1) || echo "could not install iptables: partition tests will skip"; }
	cd integration/jsclient && npm ci --no-audit --no-fund --loglevel=error
	$(GO) test -count=1 -timeout 300s ./integration/chaos/...

# The full chaos suite (about 4 minutes): kill, restart, freeze, partitions, rolling restart,
# churn, slow consumers; prints the table and writes docs/chaos.md.
chaos: build
	./scripts/chaos.sh

# Load tests with `sockmesh bench` against one node, a 3-node cluster and socketcluster-server 20;
# writes docs/benchmarks.md. QUICK=1 for a one-minute smoke run.
bench: build
	./scripts/bench.sh

# How far it scales (docs/scaling.md): clusters of 4-32 real nodes (one network namespace each
# as root, else loopback) and 100,000 connections on one node; about 20 minutes; writes
# docs/scale/*.json and draws the plots (tools/scaleplot, a module of its own). Not in make test.
scale: build
	@command -v iptables >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { apt-get install -y -qq iptables >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq iptables >/dev/null 2>&1) || echo "could not install iptables: clusters run on loopback"; }
	set -o pipefail; SOCKMESH_SCALE=1 $(GO) test -count=1 -timeout 40m -v -run 'TestClusterSizes|TestConnections' ./integration/scale/ 2>&1 | grep --line-buffered -v 'level=' | tee bin/scale.log
	cd tools/scaleplot && $(GO) run . ../../docs/scale

# A recovery storm (docs/recovery.md): 10,000 clients of a node that dies resubscribe on a
# survivor at once, with and without recovery; prints the survivor's other clients' p99.
# Each case in a process of its own: 10,000 clients set up right after the other case's took
# minutes instead of seconds.
storm: build
	for c in plain recovering; do \
		SOCKMESH_STORM=1 STORM_CASE=$$c $(GO) test -count=1 -timeout 20m -v -run TestRecoveryStorm ./integration/storm/ 2>&1 | grep --line-buffered -E 'RESULT|--- |^ok|FAIL|storm_test' || exit 1; \
	done

# sockmesh and Centrifugo side by side (installs Centrifugo from the Go module proxy if missing).
bench-centrifugo: build
	./scripts/bench-centrifugo.sh

bench-go:
	$(GO) test -run='^$$' -bench=. -benchmem ./node/ ./wsfront/ ./mesh/

BUF := $(GO) run github.com/bufbuild/buf/cmd/buf@v1.75.0

# Regenerate the node-to-node envelopes (generated Go is committed) and lint them.
proto:
	$(BUF) lint
	$(BUF) generate --template proto/buf.gen.yaml

clean:
	rm -rf bin integration/jsclient/node_modules
