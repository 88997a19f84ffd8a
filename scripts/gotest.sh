#!/usr/bin/env bash
# gotest.sh LOG go test -v ARGS...: runs the tests, keeps the verbose log in
# LOG and shows only what matters (failures, package results, test output
# that is not a RUN/PASS line). The summary target reads the logs back.
set -uo pipefail
log=$1
shift
"$@" 2>&1 | tee "$log" | grep -Ev '^(=== (RUN|PAUSE|CONT|NAME)|\s*--- PASS)'
exit "${PIPESTATUS[0]}"
