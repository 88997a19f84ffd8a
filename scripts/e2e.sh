#!/usr/bin/env bash
# e2e.sh LOGS PARALLEL LONG GO: the end-to-end tests (./tests) in two lanes
# of one test binary, started together. The long lane runs the tests
# matching the regexp LONG one at a time; the other runs every other test,
# PARALLEL-1 of the parallel(t) ones at a time. go test starts a package's
# parallel tests in no fixed order, so a test of 1-3 minutes could begin
# last and hold the end of the run; in a lane of its own it begins first.
# Logs: LOGS-e2e.log and LOGS-e2e-long.log. SHEEPDOG_SERIAL=1 runs the
# lanes one after the other (everything one at a time).
#
# The lanes are two processes: SHEEPDOG_PORT_LANE gives each its own
# share of the loopback ports (tests/harness_test.go), and the network
# namespace tests name their links and subnets by process id.
set -uo pipefail
logs=$1 par=$2 long=$3 go=$4
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$logs-e2e.test
trap 'rm -f "$bin"' EXIT
(cd "$here" && "$go" test -c -o "$bin" ./tests) || exit 1
cd "$here/tests" || exit 1
run() { # LOG LANE ARGS...
	local log=$1 lane=$2
	shift 2
	SHEEPDOG_PORT_LANE=$lane/2 "$here/scripts/gotest.sh" "$log" "$bin" -test.v -test.count=1 -test.timeout 30m "$@"
}
run "$logs-e2e-long.log" 0 -test.parallel 1 -test.run "$long" &
lpid=$!
[ -n "${SHEEPDOG_SERIAL:-}" ] && { wait $lpid; lrc=$?; lpid=; }
run "$logs-e2e.log" 1 -test.parallel $((par > 1 ? par - 1 : 1)) -test.skip "$long"
rc=$?
[ -n "$lpid" ] && { wait $lpid; lrc=$?; }
[ $rc = 0 ] && [ $lrc = 0 ]
