#!/usr/bin/env bash
# Starts a one-node sheepdog-go cluster on loopback, formats it, creates a
# demo VDI and waits; Ctrl-C stops the sheep and leaves the data in place.
set -euo pipefail
dir=${1:-/tmp/sheepdog-run}
port=${2:-7000}
bin=$(cd "$(dirname "$0")/.." && pwd)/bin
mkdir -p "$dir"
"$bin/sheep" -f -b 127.0.0.1 -p "$port" "$dir/node0" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; echo; echo "sheep stopped; data kept in $dir"' EXIT INT TERM
for _ in $(seq 50); do
	"$bin/collie" node list -p "$port" >/dev/null 2>&1 && break
	sleep 0.1
done
collie() { "$bin/collie" "$@" -p "$port"; }
if ! collie cluster info 2>/dev/null | grep -q running; then
	collie cluster format --copies=1
fi
collie vdi list -r | grep -q '^= demo ' || collie vdi create demo 1G
echo
collie cluster info
collie node list
collie vdi list
cat <<MSG

A sheep serves on 127.0.0.1:$port (store: $dir/node0). Try:
  echo hello | $bin/collie vdi write demo 0 6 -p $port
  $bin/collie vdi read demo 0 6 -p $port
  $bin/collie vdi create web 20G -p $port && $bin/collie vdi list -p $port
Ctrl-C stops it.
MSG
wait $pid
