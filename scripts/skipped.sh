#!/usr/bin/env bash
# skipped.sh LOG...: the last line of a test run. Lists every test the
# verbose go test logs say was skipped, with the reason it gave, so an
# "ok" never hides tests that did not run.
set -uo pipefail
# A skip looks like:
#     --- SKIP: TestName (0.00s)
#         file_test.go:123: reason
out=$(awk '
	/^[[:space:]]*--- SKIP: / { name = $3; getline r; sub(/^[[:space:]]*[^:]*:[0-9]+: /, "", r); print name " (" r ")"; n++ }
' "$@" 2>/dev/null)
n=$(printf '%s' "$out" | grep -c . || true)
if [ "$n" = 0 ]; then
	echo "all tests ran: 0 tests skipped"
else
	echo "$out" | sed 's/^/  skipped: /'
	echo "$n tests skipped: $(echo "$out" | tr '\n' ';' | sed 's/;$//;s/;/; /g')"
fi
