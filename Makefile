# cortexd build, test and release targets. `make help` lists them.
GO            ?= go
BIN           ?= bin/cortexd
PKG           := github.com/cortexgrid/cortexd
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS       := -s -w -X main.version=$(VERSION)
PROTOC_GEN_GO := v1.36.12
STATICCHECK   := v0.8.2
GOBIN         ?= $(shell $(GO) env GOPATH)/bin
IMAGE         ?= cortexd:latest
NODES         ?= 3
BENCHTIME     ?= 2s

.PHONY: help build test test-short bench bench-daemon scale lint proto proto-check run image clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## static binaries in bin/: cortexd and cortexd-shim, the light starter of command skills (CGO_ENABLED=0)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/cortexd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(dir $(BIN))cortexd-shim ./cmd/cortexd-shim

test: ## vet, then every test with the race detector (what CI runs)
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

test-short: ## quick tests without the race detector
	$(GO) test -short -count=1 ./...

bench: ## benchmarks with their in-run baselines (set BENCHTIME to change)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./pkg/grid/ ./pkg/skill/ ./pkg/reputation/ ./pkg/store/ ./pkg/workflow/ ./test/

bench-daemon: ## the task path through two cortexd processes as the daemon runs it, local run as baseline
	$(GO) test -run '^$$' -bench Daemon -benchtime 2000x ./test/

SCALE_NODES    ?= 200
SCALE_DURATION ?= 5m
scale: ## the scale harness: SCALE_NODES nodes in one process under load and 10%/min churn for SCALE_DURATION, checked against issue 15's goals
	$(GO) test -run 'TestScale$$' -count=1 -timeout 90m -v ./test/ -args -scale.nodes $(SCALE_NODES) -scale.duration $(SCALE_DURATION) -scale.strict

lint: ## gofmt, go vet and staticcheck $(STATICCHECK) (installed into GOBIN if missing)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@test -x $(GOBIN)/staticcheck && $(GOBIN)/staticcheck -version | grep -q '$(STATICCHECK:v%=%)' || GOBIN=$(GOBIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK)
	$(GOBIN)/staticcheck ./...

proto: ## regenerate pkg/wire/cortexv1 from proto/ (needs protoc; installs protoc-gen-go $(PROTOC_GEN_GO))
	GOBIN=$(GOBIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO)
	PATH=$(GOBIN):$$PATH protoc --go_out=. --go_opt=module=$(PKG) -I proto proto/cortex/v1/*.proto

proto-check: proto ## fail if the committed generated code is stale
	@git diff --exit-code -- pkg/wire/cortexv1 || { echo "generated code is stale: run 'make proto' and commit"; exit 1; }

# run builds $(BIN) (as build does) and execs it, so that on Ctrl-C make
# waits for cortexd itself, which drains and exits 0, and says nothing.
# (Under `go run`, the go command exits 1 on SIGINT and make reports it.)
run: ## build bin/cortexd and run a local grid of $(NODES) nodes on loopback you can submit tasks to (Ctrl-C stops it)
	@CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/cortexd
	@exec $(BIN) devnet --nodes $(NODES)

# The image is FROM scratch, so no base image is pulled: the static binary,
# /etc/passwd and an empty /data are staged in build/image/ (see Dockerfile).
image: ## container image $(IMAGE) FROM scratch (no registry needed)
	rm -rf build/image && mkdir -p build/image/data
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o build/image/cortexd ./cmd/cortexd
	printf 'cortexd:x:10001:10001:cortexd:/data:/sbin/nologin\n' > build/image/passwd
	printf 'cortexd:x:10001:\n' > build/image/group
	docker build -t $(IMAGE) .

clean: ## remove build output
	rm -rf bin build .devnet
