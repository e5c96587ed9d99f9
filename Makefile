# ember: make demo runs the main job, make test runs the tests (see README).
SHELL := /bin/bash
GO ?= go
BIN := bin
export CGO_ENABLED := 0
# Test binaries are static (CGO_ENABLED=0) so that the nested lab can run
# them inside its L1 VM.
TESTFLAGS ?= -count=1 -timeout 40m
# Packages cheap enough to also run under the race detector (needs cgo).
RACE_PKGS := ./vmm/... ./internal/testguest/... ./internal/atomicfile/...

.PHONY: all setup build test test-race vet demo bench clean

all: build

setup:
	./scripts/setup.sh

build:
	$(GO) build -o $(BIN)/ember ./cmd/ember

vet:
	$(GO) vet ./...

test: setup vet
	$(GO) test $(TESTFLAGS) ./...
	$(MAKE) test-race

test-race:
	CGO_ENABLED=1 $(GO) test -race -count=1 $(RACE_PKGS)

demo: setup build
	./scripts/demo.sh

bench: build
	$(BIN)/ember bench core

clean:
	rm -rf $(BIN)
