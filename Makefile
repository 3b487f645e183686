# sbc — edge SIP security proxy / session border controller.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build run demo test test-short bench bench-compare lint generate example-certs clean

build: ## build bin/sbc
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/sbc ./cmd/sbc

run: build ## run the SBC on the shipped example policy
	./bin/sbc run -config sbc.example.toml

demo: build ## place a few calls through the SBC on loopback and print what happened
	./bin/sbc demo

test: ## every test, with the race detector (root-only tests skip unless run as root); the forks' own tests too
	$(GO) test -race -count=1 -timeout 20m ./...
	cd third_party/sipgo && $(GO) test -race -count=1 -timeout 5m -skip '^TestTransportLayerClientConnection(Reuse|NoReuse)$$' ./sip/ ./timing/
	cd third_party/srtp && $(GO) test -race -count=1 -timeout 5m ./...

test-short: ## unit tests only
	$(GO) test -short -count=1 ./...

bench: build ## micro-benchmarks, then the SIPp max-CPS bisection (see BENCHMARKS.md)
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) run ./bench/cmd/maxcps -sbc ./bin/sbc -duration 20s

COMPARE_FLAGS ?=
bench-compare: build ## sbc vs Kamailio side by side, alternating trials in a network namespace (root; BENCHMARKS.md)
	$(GO) run ./bench/cmd/compare -sbc ./bin/sbc $(COMPARE_FLAGS)

lint: ## gofmt, go vet, staticcheck, unparam (the last two are go tools pinned in go.mod)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	$(GO) tool unparam ./...

generate: ## rebuild the XDP and kfwd (TC) objects and their Go bindings (needs clang, llvm, libbpf-dev)
	$(GO) generate ./ebpf ./srtp/kfwd

example-certs: ## write a test CA and sbc, carrier and backend certificates to examples/certs (loopback tests only)
	$(GO) run ./internal/certgen/mkcerts -out examples/certs

clean:
	rm -rf bin
