#!/usr/bin/env bash
# What a holder scan costs a serving process: `leaklab serve --holders
# --scenario request-field-hold` (the handler keeps every request's 64 KiB
# msg, so the heap grows by about 25 MiB/s at 400 calls/s) under an
# open-loop `leaklab load`, twice side by side: once left alone, once with
# /debug/pprof/holders taken every 2 s. Prints, per scan, the heap it saw
# (blocks, bytes in the scan's comment), the pause of the other threads,
# the scan and the whole request; then the load's latency with and without
# scans, and the server's peak RSS.
#
# Usage: scripts/bench-holders.sh [path/to/leaklab] [duration]   (default 12s)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${1:-$root/target/release/leaklab}
duration=${2:-12s}
[ -x "$bin" ] || { echo "bench-holders: $bin not built (cargo build --release -p harness)" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start() {
  local dir=$work/$1
  mkdir -p "$dir"
  "$bin" serve --holders --scenario request-field-hold --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
    --ready-file "$dir/ready.json" 2>"$dir/serve.log" &
  pids+=($!)
  echo $! >"$dir/pid"
  for _ in $(seq 400); do [ -s "$dir/ready.json" ] && break; sleep 0.05; done
  sed -n 's/.*"rpc":"\([0-9.]*:[0-9]*\)".*/\1/p' "$dir/ready.json" >"$dir/rpc"
  sed -n 's/.*"admin":"\([0-9.]*:[0-9]*\)".*/\1/p' "$dir/ready.json" >"$dir/admin"
}

run() {
  local mode=$1 dir=$work/$1
  start "$mode"
  "$bin" load --target "$(cat "$dir/rpc")" --conns 4 --rps 400 --payload 65536 --duration "$duration" --json \
    >"$dir/load.json" 2>/dev/null &
  local load=$!
  if [ "$mode" = scans ]; then
    sleep 2
    while kill -0 "$load" 2>/dev/null; do
      curl -s -D "$dir/h" -o "$dir/holders.pb.gz" "http://$(cat "$dir/admin")/debug/pprof/holders" || true
      awk -v IGNORECASE=1 '/^x-holders-(pause-us|scan-ms|total-ms|blocks):/ { gsub("\r", ""); printf "%s=%s ", $1, $2 } END { print "" }' "$dir/h" >>"$dir/scans"
      sleep 2
    done
  fi
  wait "$load"
  awk '/VmHWM/ { print $2 / 1024 }' "/proc/$(cat "$dir/pid")/status" >"$dir/hwm"
}

run alone
run scans
echo "scans (every 2 s, during the load):"
sed 's/^/  /' "$work/scans/scans"
field() { sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p" "$work/$1/load.json"; }
printf '\n%-8s %10s %10s %10s %10s %12s\n' mode "p50 ms" "p99 ms" "p999 ms" "max ms" "peak RSS MiB"
for m in alone scans; do
  printf '%-8s %10s %10s %10s %10s %12s\n' "$m" "$(field $m p50_ms)" "$(field $m p99_ms)" "$(field $m p999_ms)" \
    "$(field $m max_ms)" "$(cat "$work/$m/hwm")"
done
