# sheepdog-go: `make run` starts a local cluster, `make test` runs every test.
GO      ?= go
export PATH := /usr/local/go/bin:$(PATH)
SHELL   := /bin/bash
BIN     := bin
PREFIX  ?= /usr/local
DESTDIR ?=
LOGS    := /tmp/sheepdog-test-$(shell id -u)
RUN_DIR ?= /tmp/sheepdog-run
PORT    ?= 7000
# A count, not a duration: a duration -fuzztime races the coordinator's
# deadline against busy workers and fails with "context deadline exceeded"
# and no finding (golang/go#75804, unfixed in Go 1.26).
FUZZTIME ?= 20000x
# make test fuzzes each target for a smoke's worth (their seed corpora
# also run in the unit phase); make fuzz runs FUZZTIME.
TEST_FUZZTIME ?= 3000x
# End-to-end tests marked parallel(t) that run at once: they wait mostly
# on timers, so 4 overlap well on 2 cores.
E2E_PARALLEL ?= 4
# The longest end-to-end tests (1-3 minutes each under the suite's load)
# and the network namespace ones (30-60 s each, not parallel(t)) run one
# at a time in a lane of their own (scripts/e2e.sh), beside the others,
# which run E2E_PARALLEL - 1 at a time.
E2E_LONG ?= ^(TestErasureCoding|TestNBDNodeFailureDuringCopy|TestAlterCopy|TestObjectCacheSmall|TestClusterSnapshotSaveLoad|TestNetLab|TestPartition.*)$$

.PHONY: build test prereqs unit e2e e2e-key soak fuzz run bench bench-1node vet clean install conformance

build:
	$(GO) build -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...

# The tools the end-to-end tests drive first (installed when we are root
# with apt-get, else a message naming them), then unit tests (with the race
# detector on the concurrent packages), the decoders' fuzz targets, the
# end-to-end tests, and last a line naming every test that was skipped.
test: prereqs build vet
	@rm -f $(LOGS)-*.log
	@$(MAKE) --no-print-directory unit fuzz e2e FUZZTIME=$(TEST_FUZZTIME); rc=$$?; \
		scripts/skipped.sh $(LOGS)-unit.log $(LOGS)-pure.log $(LOGS)-alloc.log $(LOGS)-e2e.log $(LOGS)-e2e-long.log; exit $$rc

prereqs:
	@scripts/prereqs.sh

# Packages of pure functions (no goroutines, no shared state) run without
# the race detector, which finds nothing there and makes their
# whole-inode (12 MiB) checks take minutes.
PURE_PKGS ?= ./core/proto ./core/placement
# Allocation counts, which the race detector changes (those tests skip
# under -race): run again without it.
ALLOC_PKGS ?= ./core/gateway ./core/server ./internal/bufpool
ALLOC_TESTS ?= ^(TestLocalPathAllocations|TestWritePathAllocations|TestNoAllocs)$$

unit:
	@scripts/gotest.sh $(LOGS)-unit.log $(GO) test -v -race -count=1 \
		$$($(GO) list ./... | grep -v /tests | grep -vxF -f <($(GO) list $(PURE_PKGS)))
	@scripts/gotest.sh $(LOGS)-pure.log $(GO) test -v -count=1 $(PURE_PKGS)
	@scripts/gotest.sh $(LOGS)-alloc.log $(GO) test -v -count=1 -run '$(ALLOC_TESTS)' $(ALLOC_PKGS)

# Packages with fuzz targets of decoders of untrusted bytes: every
# func FuzzX in their _test.go files runs for FUZZTIME (scripts/fuzz.sh).
FUZZ_PKGS ?= core/proto core/cluster/replicated core/cluster/replicated/walmeta core/erasure nbd store

fuzz:
	@scripts/fuzz.sh $(GO) $(FUZZTIME) $(FUZZ_PKGS)

e2e:
	@scripts/e2e.sh $(LOGS) $(E2E_PARALLEL) '$(E2E_LONG)' $(GO)

# The cluster, recovery and QEMU suites again, every sheep started with
# one --cluster-key (not part of make test: it repeats those suites).
e2e-key: build
	@key=$$(mktemp); head -c 32 /dev/urandom > $$key; \
		SHEEPDOG_CLUSTER_KEY=$$key $(GO) test -count=1 -parallel $(E2E_PARALLEL) -timeout 30m -run '^Test(Cluster|Recovery|Qemu)' ./tests/; \
		rc=$$?; rm -f $$key; exit $$rc

# fio with verification on a 3-node cluster while nodes are killed and
# restarted and bad clients come and go (SOAK, default 10 minutes).
SOAK ?= 10m
soak: build
	SHEEPDOG_SOAK=$(SOAK) $(GO) test -tags soak -count=1 -v -timeout 60m -run '^TestSoak$$' ./tests/

# A one-node cluster on loopback with a demo VDI; Ctrl-C stops it.
run: build
	@scripts/run.sh $(RUN_DIR) $(PORT)

# Sheepdog 1.0's functional suite against our sheep and collie (not part of
# make test): SUITE is its tests/functional at sheepdog/sheepdog 3ebe5ea7;
# TESTS="001 002" runs only those; CONF_BIN=DIR runs it against the sheep,
# dog and sheepfs in DIR instead (e.g. the original, built by the user).
conformance: build
	@test -n "$(SUITE)" || { echo "make conformance SUITE=path/to/sheepdog/tests/functional"; exit 2; }
	@CONF_BIN=$(CONF_BIN) scripts/conformance.sh $(SUITE) $(TESTS)

# Every benchmark measures once, however many iterations it is asked for
# (BenchmarkNBD: about 4 minutes on a quiet machine).
bench: build
	$(GO) test -run='^$$' -bench=. -benchtime=1x -timeout 30m ./tests/

# One sheep (copies=1) against nbdkit, random 4 KiB first writes and reads,
# with the CPU time per request of each (a few minutes; ROUNDS, SECONDS).
bench-1node: build
	@scripts/bench-1node.sh $(or $(ROUNDS),3) $(or $(SECONDS),3)

# Binaries to $(PREFIX)/bin and the systemd units sheep@.service (instance:
# the store dir) and sheepfs@.service (instance: the mount point).
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/lib/systemd/system
	install -m 0755 $(BIN)/sheep $(BIN)/collie $(BIN)/sheepfs $(DESTDIR)$(PREFIX)/bin/
	for u in sheep@.service sheepfs@.service; do \
		sed 's|@BINDIR@|$(PREFIX)/bin|g' dist/systemd/$$u > $(DESTDIR)/lib/systemd/system/$$u; \
		chmod 0644 $(DESTDIR)/lib/systemd/system/$$u; \
	done

clean:
	rm -rf $(BIN)
