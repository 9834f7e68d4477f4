# vipd — see README.md. Targets that touch namespaces need root.
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build tools test unit e2e demo bench lint clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/vipd ./cmd/vipd
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/vipctl ./cmd/vipctl

# Test tools: a real etcd 3.7 built from the module proxy, the client probe,
# and the demo driver. They run only inside namespaces the testbed creates.
tools:
	$(GO) build -o $(BIN)/etcd ./e2e/cmd/etcd
	$(GO) build -o $(BIN)/vipd-probe ./e2e/cmd/vipd-probe
	$(GO) build -o $(BIN)/vipd-demo ./e2e/cmd/vipd-demo

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /e2e)

# Namespace tier: real vipd, etcd and HAProxy in network namespaces (root).
e2e: build tools
	$(GO) test -count=1 -timeout 15m -v ./e2e/... 

# Everything CI runs.
test: lint unit e2e

demo: build tools
	$(BIN)/vipd-demo --bin $(BIN)

clean:
	rm -rf $(BIN)

# .deb and .rpm in $(BIN)/dist, built with nfpm's Go API from
# packaging/nfpm.yaml (packaging/cmd/mkpkg; nfpm never links into vipd).
.PHONY: package
package: build
	$(GO) run ./packaging/cmd/mkpkg --version "$(VERSION)" --bin $(BIN) --out $(BIN)/dist
