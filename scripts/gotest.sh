#!/usr/bin/env bash
# gotest.sh LOG go test -v ARGS...: runs the tests, keeps the verbose log in
# LOG and shows only what matters (failures, package results, test output
# that is not a RUN/PASS line). The summary target reads the logs back.
# grep -a: a test that logs raw bytes must not turn the rest of the run
# into "binary file matches" and hide the failures after it.
set -uo pipefail
log=$1
shift
"$@" 2>&1 | tee "$log" | grep -aEv '^(=== (RUN|PAUSE|CONT|NAME)|\s*--- PASS)'
exit "${PIPESTATUS[0]}"
