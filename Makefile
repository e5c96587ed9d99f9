# ember: make demo runs the main job, make test runs the tests (see README).
SHELL := /bin/bash
GO ?= go
BIN := bin
export CGO_ENABLED := 0
# Test binaries are static (CGO_ENABLED=0) so that the nested lab can run
# them inside its L1 VM.
# -p 1: one package at a time, so at most one nested-lab QEMU runs (two
# TCG QEMUs on two cores made L1 freezes more likely; docs/testing.md).
TESTFLAGS ?= -count=1 -timeout 45m -p 1
# Packages also run under the race detector (it needs cgo). Those that boot
# the nested lab or re-exec themselves are left out: the race runtime is not
# static.
RACE_PKGS := ./vmm ./vmm/kvm ./vmm/memory ./vmm/bus ./vmm/api ./vmm/devices/... \
	./internal/testguest/... ./internal/vmmproc ./internal/vmmcmd ./internal/atomicfile ./internal/eventfd \
	./guest/... ./pool

.PHONY: all setup kernel build test test-race vet demo bench clean

all: build

setup:
	./scripts/setup.sh

# The guest kernel, built from Debian's linux-source-6.1 and cached under
# ~/.cache/ember/kernel/<config hash> (minutes the first time, instant after).
kernel: setup
	images/kernel/build.sh

build:
	$(GO) build -o $(BIN)/ember ./cmd/ember
	$(GO) build -o $(BIN)/ember-vmm ./cmd/ember-vmm
	$(GO) build -o $(BIN)/ember-agent ./cmd/ember-agent
	$(GO) build -o $(BIN)/containerd-shim-ember-v2 ./cmd/containerd-shim-ember-v2

vet:
	$(GO) vet ./...

# go test -v, so that the TestNative* tests that ran inside the nested lab
# show up (without -v a lab package reports "[no tests to run]" for the host
# side); the full log goes to out/test.log, the terminal gets every test's
# result line and each package's summary.
test: setup kernel vet
	@mkdir -p out
	set -o pipefail; $(GO) test -v $(TESTFLAGS) ./... 2>&1 | tee out/test.log | \
		grep --line-buffered -E '^(ok|FAIL|panic:|--- (PASS|FAIL|SKIP)|labtest: (nested lab|L1 froze|gave up)|lab: (no word|L1 answers))|^\s+--- (FAIL|SKIP)'
	@echo "tests: $$(grep -cE '^\s*--- PASS' out/test.log) passed, $$(grep -cE '^\s*--- FAIL' out/test.log) failed, $$(grep -cE '^\s*--- SKIP' out/test.log) skipped"
	$(MAKE) test-race

test-race:
	CGO_ENABLED=1 $(GO) test -race -count=1 $(RACE_PKGS)

demo: setup build kernel
	./scripts/demo.sh

bench: build
	$(BIN)/ember bench core
	$(BIN)/ember bench pool
	$(GO) run ./benchmarks/ctr/cmd -runs 20 -sources boot,restore,pool

clean:
	rm -rf $(BIN)
