# taskd — `make run` to try it, `make test` to test it. Needs Go; the Python and Perl
# worker tests also need python3 and perl (.ci/run installs them).

GO      ?= go
BIN     := bin
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build run test check clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/taskd ./cmd/taskctl
	$(GO) build -o $(BIN)/echo-worker ./examples/echo
	$(GO) build -o $(BIN)/passwd-worker ./examples/passwd
	$(GO) build -o $(BIN)/minimal-worker ./internal/bench/minimal

# Runs taskd in the foreground on its default socket (no root needed); Ctrl-C stops it.
run: build
	$(BIN)/taskd -c configs/taskd.yaml

# Fuzz targets run their seed corpora as part of go test.
test: build
	$(GO) test -race -count=1 ./...

# Side-by-side benchmark: taskd against the same echo worker driven directly over its pipes,
# printed as a Markdown table (progress on stderr); under 3 minutes on 2 cores. For a quick
# smoke run: make bench BENCHFLAGS="-d 200ms -runs 1". See go run ./cmd/taskd-bench -h.
.PHONY: bench
bench: build
	$(GO) build -o $(BIN)/taskd-bench ./cmd/taskd-bench
	$(BIN)/taskd-bench -bin $(BIN) $(BENCHFLAGS)

# Chaos soak: the real taskd (static binaries in bin/) with Go, Python and raw workers under
# callers and chaos for $(SOAK) (default 60s; SOAK=5m make soak), then a table and a line
# "SOAK PASS ..." or "SOAK FAIL ..."; non-zero exit on failure. make test runs a 20s version.
# More flags (-callers, -seed, -dir): SOAKFLAGS; see go run ./cmd/taskd-soak -h.
SOAK ?= 60s
.PHONY: soak
soak:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/taskd ./cmd/taskd-soak
	$(BIN)/taskd-soak -bin $(BIN) -d $(SOAK) $(SOAKFLAGS)

# The Debian package, bin/taskd_VERSION_ARCH.deb: static binaries, the systemd unit, the
# example config in /etc/taskd, the docs. Needs dpkg-deb; see deploy/deb/build.sh.
.PHONY: deb
deb:
	VERSION=$(VERSION) GO=$(GO) deploy/deb/build.sh $(BIN)

check:
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files need formatting (run gofmt -w .):"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }

clean:
	rm -rf $(BIN) coverage.out coverage.html
