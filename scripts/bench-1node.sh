#!/usr/bin/env bash
# Quick single-node NBD bench (2-3 minutes, not part of make bench): one
# sheep, copies=1, against nbdkit's file plugin on a file in the same dir,
# in the same run. Jobs (JOBS, default "fw rr"): fw = random 4 KiB writes
# at depth 32 on a VDI just created (and a file just truncated), rr =
# random 4 KiB reads at depth 32 of a filled 1 GiB device; also ow (random
# 4 KiB overwrites), sr (sequential 1 MiB reads at depth 8) and fs
# (sequential 1 MiB first writes at depth 8, like fw). Each line
# gives, for both targets, IOPS, the server's CPU time per request (user
# + system, from /proc: steadier than IOPS on a shared machine), and p50
# / p99 completion latency in ms, then the IOPS ratio and the load.
#
#   scripts/bench-1node.sh [ROUNDS=3] [SECONDS=3]
#   SHEEP_ARGS="--pprof 127.0.0.1:6060" HOLD=600 scripts/bench-1node.sh   # keep both up to profile
set -euo pipefail
rounds=${1:-3}; rt=${2:-3}
bin=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/bin}
dir=$(mktemp -d /tmp/bench-1node.XXXX)
port=$((20000 + RANDOM % 5000)); nbd=$((port + 1)); kport=$((port + 2)); kfport=$((port + 3))
jobs=${JOBS:-"fw rr"}
spid= kpid= kfpid=
cleanup() { kill $spid $kpid $kfpid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
"$bin/sheep" -f -b 127.0.0.1 -p $port -z 0 --nbd 127.0.0.1:$nbd ${SHEEP_ARGS:-} "$dir/sheep" 2>"$dir/sheep.err" &
spid=$!
col() { "$bin/collie" "$@" -p $port; }
for _ in $(seq 100); do col node list >/dev/null 2>&1 && break; sleep 0.1; done
col cluster format --copies=1 >/dev/null
for _ in $(seq 50); do col vdi create bench 1G 2>/dev/null && break; sleep 0.2; done
truncate -s 1G "$dir/kit.img" "$dir/kitf.img"
nbdkit --foreground --exit-with-parent --ipaddr 127.0.0.1 --port $kport file file="$dir/kit.img" & kpid=$!
nbdkit --foreground --exit-with-parent --ipaddr 127.0.0.1 --port $kfport file file="$dir/kitf.img" & kfpid=$!
suri=nbd://127.0.0.1:$nbd/bench kuri=nbd://127.0.0.1:$kport/
for _ in $(seq 50); do nbdinfo --size $kuri >/dev/null 2>&1 && break; sleep 0.1; done
for u in $suri $kuri; do fio --name=fill --ioengine=nbd --uri=$u --rw=write --bs=1M --iodepth=8 --size=1G >/dev/null; done
if [ -n "${HOLD:-}" ]; then
	echo "sheep pid $spid at $suri (port $port), nbdkit pid $kpid at $kuri; holding ${HOLD}s"
	sleep "$HOLD"; exit 0
fi
# run PID URI RW BS DEPTH FRESH: "IOPS us/req p50 p99" of one fio run.
run() {
	local args=(--name=j --ioengine=nbd --uri=$2 --rw=$3 --bs=$4 --iodepth=$5 --size=1G --runtime=$rt
		--randrepeat=0 --output-format=json) a b
	[ "$6" = 1 ] || args+=(--time_based)
	sync # no dirty pages of the run before: each server pays its own writeback
	a=$(awk '{print $14 + $15}' /proc/$1/stat)
	fio "${args[@]}" | sed -n '/^{/,$p' >"$dir/out.json"
	b=$(awk '{print $14 + $15}' /proc/$1/stat)
	python3 - "$3" "$dir/out.json" "$a" "$b" "$(getconf CLK_TCK)" <<'PY'
import json, sys
rw, path, a, b, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
s = json.load(open(path))["jobs"][0]["read" if "read" in rw else "write"]
p = s["clat_ns"].get("percentile", {})
print("%7.0f %6.1f %6.2f %7.2f" % (s["iops"], (b - a) / hz * 1e6 / max(s["total_ios"], 1),
      p.get("50.000000", 0) / 1e6, p.get("99.000000", 0) / 1e6))
PY
}
# first RW BS DEPTH: sets s and k to the runs of both servers on devices
# never written (a VDI just created, a file just truncated).
first() {
	n=$((n + 1)); col vdi create fresh$n 1G
	if [ $n -gt 1 ]; then col vdi delete fresh$((n - 1)); fi
	truncate -s 0 "$dir/kitf.img"; truncate -s 1G "$dir/kitf.img"
	s=$(run $spid nbd://127.0.0.1:$nbd/fresh$n "$@" 1)
	k=$(run $kfpid nbd://127.0.0.1:$kfport/ "$@" 1)
}
echo "round job | sheep: IOPS us/req p50 p99 | nbdkit: IOPS us/req p50 p99 | ratio | load"
n=0
for r in $(seq "$rounds"); do
	for j in $jobs; do
		case $j in
		fw) first randwrite 4k 32 ;;
		fs) first write 1M 8 ;;
		rr) s=$(run $spid $suri randread 4k 32 0); k=$(run $kpid $kuri randread 4k 32 0) ;;
		ow) s=$(run $spid $suri randwrite 4k 32 0); k=$(run $kpid $kuri randwrite 4k 32 0) ;;
		sr) s=$(run $spid $suri read 1M 8 0); k=$(run $kpid $kuri read 1M 8 0) ;;
		*) echo "unknown job $j" >&2; exit 2 ;;
		esac
		echo "$r $j | $s | $k | $(echo "$s $k" | awk '{printf "%.2fx", $1 / $5}') | $(cut -d' ' -f1-3 /proc/loadavg)"
	done
done
