# sheepdog-go: `make run` starts a local cluster, `make test` runs every test.
GO      ?= go
export PATH := /usr/local/go/bin:$(PATH)
BIN     := bin
RUN_DIR ?= /tmp/sheepdog-run
PORT    ?= 7000
# A count, not a duration: a duration -fuzztime races the coordinator's
# deadline against busy workers and fails with "context deadline exceeded"
# and no finding (golang/go#75804, unfixed in Go 1.26).
FUZZTIME ?= 50000x

.PHONY: build test unit e2e fuzz run bench vet clean

build:
	$(GO) build -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...

# Unit tests (with the race detector on the concurrent packages), the
# decoders' fuzz targets for a few seconds each, then the end-to-end tests.
test: build vet unit fuzz e2e

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /tests)

# A target that fails without writing a crasher to testdata/fuzz (the
# fuzzing engine itself gave up) is run once more; a real finding fails at
# once, with its output.
fuzz:
	@for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' core/proto/*_test.go | cut -d' ' -f2); do \
		echo "fuzz $$f ($(FUZZTIME))"; \
		for try in 1 2; do \
			if $(GO) test ./core/proto -run='^$$' -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME) -parallel=1 >/tmp/fuzz-$$f.log 2>&1; then break; fi; \
			tail -20 /tmp/fuzz-$$f.log; \
			if [ $$try = 2 ] || ls core/proto/testdata/fuzz/$$f/* >/dev/null 2>&1; then exit 1; fi; \
			echo "retrying $$f"; \
		done; \
	done

e2e:
	$(GO) test -count=1 -timeout 14m ./tests/

# A one-node cluster on loopback with a demo VDI; Ctrl-C stops it.
run: build
	@scripts/run.sh $(RUN_DIR) $(PORT)

# Every benchmark measures once, however many iterations it is asked for
# (BenchmarkNBD: about 4 minutes on a quiet machine).
bench: build
	$(GO) test -run='^$$' -bench=. -benchtime=1x -timeout 30m ./tests/

clean:
	rm -rf $(BIN)
