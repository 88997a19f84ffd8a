#!/usr/bin/env bash
# skipped.sh LOG...: the last lines of a test run. Names every test the
# verbose go test logs say failed (so a long log's failure is not lost
# above the summary), then every test that was skipped with the reason it
# gave, so an "ok" never hides tests that did not run.
set -uo pipefail
# go test -v streams a test's log as it runs, so a skip's reason comes
# just before its result line (after it in older Go releases):
#     skipper_test.go:123: reason
#     --- SKIP: TestName (0.00s)
grep -ah -- '--- FAIL: ' "$@" 2>/dev/null | sed 's/^[[:space:]]*--- FAIL: /  failed: /'
out=$(awk '
	function reason(l) { sub(/^[[:space:]]*[^:[:space:]]+:[0-9]+: /, "", l); return l }
	/^[[:space:]]+[^:[:space:]]+_test\.go:[0-9]+: / { last = $0; next }
	/^[[:space:]]*--- SKIP: / {
		name = $3; r = last
		if (r == "" && (getline nxt) > 0 && nxt ~ /^[[:space:]]+[^:[:space:]]+_test\.go:[0-9]+: /) r = nxt
		print name " (" reason(r) ")"; last = ""; next
	}
	/^(=== RUN|--- )/ { last = "" }
' "$@" 2>/dev/null)
# A test skipped in one run and passed in another (the allocation tests,
# which skip under the race detector and run again without it) ran.
passed=$(grep -ah -- '--- PASS: ' "$@" 2>/dev/null | awk '{print $3}' | sort -u)
if [ -n "$out" ] && [ -n "$passed" ]; then
	out=$(printf '%s\n' "$out" | awk 'NR == FNR { ok[$1] = 1; next } !($1 in ok)' <(printf '%s\n' "$passed") -)
fi
n=$(printf '%s' "$out" | grep -c . || true)
if [ "$n" = 0 ]; then
	echo "all tests ran: 0 tests skipped"
else
	echo "$out" | sed 's/^/  skipped: /'
	echo "$n tests skipped: $(echo "$out" | tr '\n' ';' | sed 's/;$//;s/;/; /g')"
fi
