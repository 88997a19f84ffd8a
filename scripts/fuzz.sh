#!/usr/bin/env bash
# fuzz.sh GO FUZZTIME PKG...: runs every func FuzzX in the _test.go files
# of each PKG for FUZZTIME (a count: 20000x). Each package's test binary
# is built once, with the fuzzing instrumentation, and run once per target
# from the package's dir (its testdata/fuzz corpus), with go test's own
# cache of interesting inputs; a `go test -fuzz` per target linked the
# binary again every time, most of the phase.
#
# A target that fails without writing a crasher to testdata/fuzz (the
# fuzzing engine itself gave up) is run once more; a real finding fails at
# once, with its output.
set -uo pipefail
go=$1 fuzztime=$2
shift 2
bins=$(mktemp -d)
trap 'rm -rf "$bins"' EXIT
cache=$("$go" env GOCACHE)/fuzz
for p in "$@"; do
	targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$p"/*_test.go | cut -d' ' -f2)
	[ -n "$targets" ] || continue
	bin=$bins/$(echo "$p" | tr / _).test
	if ! "$go" test -c -fuzz=. -o "$bin" "./$p"; then
		echo "fuzz: building $p failed"
		exit 1
	fi
	dir=$cache/$("$go" list "./$p")
	for f in $targets; do
		echo "fuzz $p $f ($fuzztime)"
		for try in 1 2; do
			if (cd "$p" && "$bin" -test.run='^$' -test.fuzz="^$f\$" -test.fuzztime="$fuzztime" \
				-test.parallel=1 -test.fuzzcachedir="$dir") >"/tmp/fuzz-$f.log" 2>&1; then
				break
			fi
			tail -20 "/tmp/fuzz-$f.log"
			if [ $try = 2 ] || ls "$p/testdata/fuzz/$f/"* >/dev/null 2>&1; then exit 1; fi
			echo "retrying $f"
		done
	done
done
