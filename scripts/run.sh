#!/usr/bin/env bash
# Starts a local sheepdog-go cluster on loopback (NODES sheeps, default 3,
# on ports PORT, PORT+1, ...), formats it with min(3, NODES) copies,
# creates the VDI "demo", exports every VDI over NBD from the first sheep
# and waits; Ctrl-C stops the sheeps and keeps the data for the next run.
set -euo pipefail
dir=${1:-/tmp/sheepdog-run}
port=${2:-7000}
nodes=${NODES:-3}
nbd=${NBD:-127.0.0.1:10809}
bin=$(cd "$(dirname "$0")/.." && pwd)/bin
mkdir -p "$dir"
pids=()
stop() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	echo; echo "sheeps stopped; data kept in $dir"
}
trap stop EXIT INT TERM
for i in $(seq 0 $((nodes - 1))); do
	args=(-f -b 127.0.0.1 -p $((port + i)) -z "$i")
	if [ "$i" -eq 0 ]; then args+=(--nbd "$nbd"); else args+=(--nbd none --join "127.0.0.1:$port"); fi
	"$bin/sheep" "${args[@]}" "$dir/node$i" 2>>"$dir/node$i.err" &
	pids+=($!)
	for _ in $(seq 100); do
		"$bin/collie" node list -p $((port + i)) >/dev/null 2>&1 && break
		sleep 0.1
	done
done
collie() { "$bin/collie" "$@" -p "$port"; }
for _ in $(seq 100); do
	[ "$(collie node list -r 2>/dev/null | wc -l)" -ge "$nodes" ] && break
	sleep 0.1
done
if ! collie cluster info 2>/dev/null | grep -q running; then
	copies=$((nodes < 3 ? nodes : 3))
	collie cluster format --copies=$copies
fi
for _ in $(seq 100); do collie cluster info 2>/dev/null | grep -q running && break; sleep 0.2; done
collie vdi list -r | grep -q '^= demo ' || collie vdi create demo 1G
echo
collie cluster info
collie node list
collie vdi list
cat <<MSG

$nodes sheep(s) serve on 127.0.0.1:$port..$((port + nodes - 1)) (stores under $dir).
NBD: every VDI is an export on $nbd. Try:
  echo hello | $bin/collie vdi write demo 0 6 -p $port
  $bin/collie vdi read demo 0 6 -p $port
  nbdinfo --list nbd://$nbd
  qemu-io -f raw -c 'read -v 0 16' nbd://$nbd/demo
  $bin/collie vdi snapshot -s first demo -p $port && $bin/collie vdi list -p $port
Ctrl-C stops them.
MSG
wait
