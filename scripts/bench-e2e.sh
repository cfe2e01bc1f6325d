#!/usr/bin/env bash
# End-to-end throughput of the Echo server against the raw-echo baseline:
# `leaklab load` (closed loop, 4 connections, 1 KiB payload) against
# `leaklab serve --raw-echo` and `leaklab serve`, alternating over a few
# rounds so that both see the same machine, then the median ratio rpc/raw.
# The target is a ratio of at least 0.70 (the codec and the pool may cost up
# to 30% of the raw round trip).
#
# Usage: scripts/bench-e2e.sh [rounds] [duration]   (defaults: 3 5s)
# Extra server flags go in SERVE_FLAGS, e.g. SERVE_FLAGS="--decode nocopy".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=${1:-3}
duration=${2:-5s}
conns=4
payload=1024
target_ratio=0.70

command -v python3 >/dev/null || { echo "bench-e2e: python3 missing (used to find free ports)" >&2; exit 1; }

(cd "$root" && cargo build --release -q -p harness)
bin=$root/target/release/leaklab

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# start NAME PORT FLAGS...: runs `leaklab serve` on PORT in the background and
# waits until it accepts. Called in this shell (not in `$(...)`), so that the
# trap knows the pid and no pipe waits on the server's output.
start() {
  local name=$1 port=$2
  shift 2
  "$bin" serve --listen "127.0.0.1:$port" --admin "127.0.0.1:$(free_port)" "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return
    sleep 0.05
  done
  echo "bench-e2e: $name server did not start; its log:" >&2
  cat "$work/$name.log" >&2
  exit 1
}

# load PORT: one closed-loop run; prints "rps errors".
load() {
  local json rps errors
  json=$("$bin" load --target "127.0.0.1:$1" --conns "$conns" --payload "$payload" --rps 0 \
    --duration "$duration" --json)
  rps=$(sed -n 's/.*"rps":\([0-9.eE+-]*\).*/\1/p' <<<"$json")
  errors=$(sed -n 's/.*"errors":\([0-9]*\).*/\1/p' <<<"$json")
  [ -n "$rps" ] || { echo "bench-e2e: unexpected load output: $json" >&2; exit 1; }
  echo "$rps $errors"
}

raw_port=$(free_port)
rpc_port=$(free_port)
start raw "$raw_port" --raw-echo
# shellcheck disable=SC2086
start rpc "$rpc_port" ${SERVE_FLAGS:-}

echo "leaklab load --conns $conns --payload $payload --rps 0 --duration $duration; serve flags: ${SERVE_FLAGS:-(defaults)}"
printf '%-6s %14s %14s %8s\n' round "raw req/s" "rpc req/s" rpc/raw
ratios=()
for round in $(seq "$rounds"); do
  raw_out=$(load "$raw_port")
  rpc_out=$(load "$rpc_port")
  read -r raw raw_errors <<<"$raw_out"
  read -r rpc rpc_errors <<<"$rpc_out"
  ratio=$(awk -v a="$rpc" -v b="$raw" 'BEGIN { printf "%.3f", a / b }')
  ratios+=("$ratio")
  note=""
  if [ "$raw_errors" != 0 ] || [ "$rpc_errors" != 0 ]; then note="  (errors: raw $raw_errors, rpc $rpc_errors)"; fi
  printf '%-6s %14.0f %14.0f %8s%s\n' "$round" "$raw" "$rpc" "$ratio" "$note"
done

median=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
verdict=$(awk -v m="$median" -v t="$target_ratio" 'BEGIN { print (m >= t) ? "meets" : "BELOW" }')
echo "median rpc/raw: $median ($verdict the target of $target_ratio)"
