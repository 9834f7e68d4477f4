# vipd — see README.md. Targets that touch namespaces need root.
# `sudo make` resets PATH to sudo's secure_path, which lacks
# /usr/local/go/bin where Go's release tarball installs: use that Go when
# none is on PATH.
ifeq ($(origin GO),undefined)
GO := $(or $(shell command -v go 2>/dev/null),$(wildcard /usr/local/go/bin/go),go)
endif
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build tools test unit e2e demo bench bench-smoke lint clean deps deps-demo

# Debian packages the tests and benchmarks need (deps) or the demo needs
# (deps-demo): .ci/deps installs the missing ones as root with apt-get,
# starting no service, or names them and the command in one line. The
# list is in .ci/deps only.
deps:
	@.ci/deps all
deps-demo:
	@.ci/deps demo

# Static (CGO_ENABLED=0): the .deb/.rpm then run on any glibc or musl
# without declaring a libc dependency, and an idle vipd maps no shared
# libraries (1.2 MB less idle RSS). -trimpath: no build paths in the binary.
# grpcnotrace: gRPC without golang.org/x/net/trace, whose /debug/requests
# pages vipd never serves (it has no DefaultServeMux listener); its
# html/template calls methods by reflection, which keeps every exported
# method of every type in the binary. Without it the binary's text and
# rodata shrink by 4 MB and an idle vipd's RSS by about as much.
BUILDFLAGS := -trimpath -tags grpcnotrace
build:
	CGO_ENABLED=0 $(GO) build $(BUILDFLAGS) -ldflags "$(LDFLAGS)" -o $(BIN)/vipd ./cmd/vipd
	CGO_ENABLED=0 $(GO) build $(BUILDFLAGS) -ldflags "$(LDFLAGS)" -o $(BIN)/vipctl ./cmd/vipctl

# Test tools: a real etcd 3.7 built from the module proxy, the client probe,
# and the demo driver. They run only inside namespaces the testbed creates.
tools:
	$(GO) build -o $(BIN)/etcd ./e2e/cmd/etcd
	$(GO) build -o $(BIN)/vipd-probe ./e2e/cmd/vipd-probe
	$(GO) build -o $(BIN)/vipd-demo ./e2e/cmd/vipd-demo
	# The same vipd under another version: the e2e tier upgrades a node to it in place.
	CGO_ENABLED=0 $(GO) build $(BUILDFLAGS) -ldflags "-X main.version=$(VERSION)-next" -o $(BIN)/vipd-next ./cmd/vipd

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -parallel 4 $$($(GO) list ./... | grep -v /e2e)

# Namespace tier: real vipd, etcd and HAProxy in network namespaces (root).
e2e: deps build tools
	$(GO) test -count=1 -timeout 15m -v ./e2e/... 

# Everything CI runs.
test: deps lint unit e2e

# The seed scenario, live (root). DEMO_FLAGS: --stay keeps the testbed up
# after the steps until Enter (vipctl status against it), --keep keeps the
# configs and logs, --hold D shows each steady state for D.
DEMO_FLAGS ?=
demo: deps-demo build tools
	$(BIN)/vipd-demo --bin $(BIN) $(DEMO_FLAGS)

# Benchmarks (root; namespaces): keepalived vs vipd failover, idle footprint,
# vipd at 10/100/1000 groups. Writes bench/RESULTS.md. Timings are reported,
# never asserted. BENCH_N runs per cell; BENCH_FLAGS for more (see
# `$(BIN)/vipd-bench -h`), e.g. BENCH_FLAGS=--impls=keepalived,keepalived-tuned,vipd.
BENCH_N     ?= 10
BENCH_FLAGS ?=
bench: deps build tools
	$(GO) build -o $(BIN)/vipd-bench ./bench
	$(BIN)/vipd-bench --bin $(BIN) --n $(BENCH_N) --out bench/RESULTS.md $(BENCH_FLAGS)

# CI smoke of the benchmarks: N=1, short windows, 10 groups; < 2 minutes.
# Exercises every scenario and both daemons; never fails on timing.
bench-smoke: deps build tools
	$(GO) build -o $(BIN)/vipd-bench ./bench
	$(BIN)/vipd-bench --bin $(BIN) --n 1 --cut 5s --settle 500ms --idle 1s --scale 10 --steady 1s --perf=false --impls keepalived,keepalived-track,vipd,vipd-seed --out $(BIN)/bench-smoke.md

clean:
	rm -rf $(BIN)

# .deb and .rpm in $(BIN)/dist, built with nfpm's Go API from
# packaging/nfpm.yaml (packaging/cmd/mkpkg; nfpm never links into vipd).
.PHONY: package
package: build
	$(GO) run ./packaging/cmd/mkpkg --version "$(VERSION)" --bin $(BIN) --out $(BIN)/dist
