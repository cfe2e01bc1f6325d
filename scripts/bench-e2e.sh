#!/usr/bin/env bash
# Server CPU per Echo call, end to end over loopback: `leaklab load` (closed
# loop) against `leaklab serve --raw-echo` (the baseline: no codec, no pool)
# and three RPC servers (copy decoding; `--decode nocopy`; nocopy with
# `--nocopy-write`), for each payload and connection count of the table.
#
# What counts is the server's own CPU (utime + stime from /proc/PID/stat)
# over the calls it answered, which is steadier than requests per second on a
# shared machine. Every round runs every cell once, servers in rotating
# order, so that all columns see the same machine; the table shows medians
# over rounds: microseconds per call for raw echo, ratios to raw echo (taken
# within each round) for the others. The profiler is off in the measured
# servers (`--profile-rate 0`); allocations per call come from a separate
# short run per cell with every allocation recorded (`--profile-rate 1`,
# alloc_objects of /debug/pprof/allocs, read with `go tool pprof`).
#
# Targets: RPC ≤ 1.2× raw echo in every cell; nocopy + NoCopy write at
# 256 KiB ≤ 1.1×; ≤ 0.1 allocations per call on the nocopy paths.
#
# Usage: ROUNDS=5 DURATION=3s scripts/bench-e2e.sh
#   ROUNDS    rounds (default 5)
#   DURATION  one load run (default 2s); a run is ROWS x 4 x ROUNDS x DURATION
#             plus ROWS x 3 x 1 s of allocation counting (~4 min by default)
#   ROWS      "payload:conns ..." (default "1024:4 1024:64 16384:4 16384:64 262144:4")
#   ALLOCS    0 skips the allocation runs
#   LEAKLAB   a leaklab binary to measure instead of building this checkout
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=${ROUNDS:-5}
duration=${DURATION:-2s}
rows=${ROWS:-"1024:4 1024:64 16384:4 16384:64 262144:4"}
allocs=${ALLOCS:-1}

command -v python3 >/dev/null || { echo "bench-e2e: python3 missing (used to find free ports)" >&2; exit 1; }
if [ "$allocs" != 0 ] && ! command -v go >/dev/null; then
  echo "bench-e2e: go missing (go tool pprof reads allocation counts); ALLOCS=0 skips them" >&2
  allocs=0
fi

# shellcheck source=scripts/echo-servers.sh
. "$here/echo-servers.sh"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

declare -A port pid admin

# start NAME RATE FLAGS...: runs `leaklab serve` in the background and waits
# until it accepts. Called in this shell (not in `$(...)`), so that the trap
# knows the pid and no pipe waits on the server's output.
start() {
  local name=$1 rate=$2
  shift 2
  port[$name]=$(free_port)
  admin[$name]=$(free_port)
  "$bin" serve --listen "127.0.0.1:${port[$name]}" --admin "127.0.0.1:${admin[$name]}" --profile-rate "$rate" "$@" \
    >"$work/$name.log" 2>&1 &
  pid[$name]=$!
  pids+=($!)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/${port[$name]}") 2>/dev/null && return
    sleep 0.05
  done
  echo "bench-e2e: $name server did not start; its log:" >&2
  cat "$work/$name.log" >&2
  exit 1
}

# Server CPU time in clock ticks (utime + stime).
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

# load PORT PAYLOAD CONNS DURATION: one closed-loop run; prints "calls errors".
load() {
  local json ok errors
  json=$("$bin" load --target "127.0.0.1:$1" --conns "$3" --payload "$2" --rps 0 --duration "$4" --json)
  ok=$(sed -n 's/.*"ok":\([0-9]*\).*/\1/p' <<<"$json")
  errors=$(sed -n 's/.*"errors":\([0-9]*\).*/\1/p' <<<"$json")
  [ -n "$ok" ] || { echo "bench-e2e: unexpected load output: $json" >&2; exit 1; }
  echo "$ok $errors"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

hz=$(getconf CLK_TCK)
for n in "${names[@]}"; do
  # shellcheck disable=SC2086
  start "$n" 0 ${flags[$n]}
done

echo "server CPU per Echo call (closed loop, profiler off), $rounds rounds of $duration per cell, medians"
# Results: $work/us.NAME.ROW (µs per call, one line per round).
total_errors=0
for round in $(seq "$rounds"); do
  r=0
  for row in $rows; do
    payload=${row%:*}
    conns=${row#*:}
    # Rotate the order of the servers from round to round.
    for k in 0 1 2 3; do
      n=${names[$(((k + round + r) % 4))]}
      before=$(cpu_ticks "${pid[$n]}")
      read -r ok errors <<<"$(load "${port[$n]}" "$payload" "$conns" "$duration")"
      after=$(cpu_ticks "${pid[$n]}")
      total_errors=$((total_errors + errors))
      awk -v t=$((after - before)) -v hz="$hz" -v ok="$ok" 'BEGIN { printf "%.3f\n", t / hz * 1e6 / (ok > 0 ? ok : 1) }' \
        >>"$work/us.$n.$row"
    done
    r=$((r + 1))
  done
  echo "  round $round of $rounds done" >&2
done

# Allocations per call: a server per RPC column with every allocation
# recorded, warmed up, then counted over a short run.
alloc_objects() {
  local f=$work/allocs.pb.gz
  curl -sf -o "$f" "http://127.0.0.1:$1/debug/pprof/allocs" || { echo nan; return; }
  go tool pprof -sample_index=alloc_objects -raw "$f" 2>/dev/null |
    awk '/^Samples:/ { s = 1; next } /^Locations/ { s = 0 } s && /^ *[0-9]+( +[0-9]+)+:/ { n += $1 } END { print n + 0 }'
}
declare -A apc
if [ "$allocs" != 0 ]; then
  for n in copy nocopy ncw; do
    # shellcheck disable=SC2086
    start "a$n" 1 ${flags[$n]}
    for row in $rows; do
      payload=${row%:*}
      conns=${row#*:}
      load "${port[a$n]}" "$payload" "$conns" 300ms >/dev/null
      a0=$(alloc_objects "${admin[a$n]}")
      read -r ok _ <<<"$(load "${port[a$n]}" "$payload" "$conns" 1s)"
      a1=$(alloc_objects "${admin[a$n]}")
      apc[$n.$row]=$(awk -v a="$a0" -v b="$a1" -v ok="$ok" 'BEGIN { if (a == "nan" || b == "nan" || ok == 0) print "?"; else printf "%.3f", (b - a) / ok }')
    done
    kill "${pid[a$n]}" 2>/dev/null || true
  done
fi

printf '\n| payload, connections | %s | %s | %s | %s |\n' "${titles[@]}"
printf '|---|---|---|---|---|\n'
for row in $rows; do
  payload=${row%:*}
  conns=${row#*:}
  size=$(size_label "$payload")
  raw=$(median <"$work/us.raw.$row")
  line="| $size, $conns | $(printf '%.1f' "$raw") µs |"
  for n in copy nocopy ncw; do
    ratio=$(paste -d' ' "$work/us.$n.$row" "$work/us.raw.$row" | awk '{ printf "%.4f\n", $1 / $2 }' | median)
    cell=$(printf '%.2f×' "$ratio")
    if [ -n "${apc[$n.$row]:-}" ]; then cell="$cell (${apc[$n.$row]} allocs)"; fi
    line="$line $cell |"
  done
  echo "$line"
done
echo
echo "ratios: median over rounds of (server CPU per call) / (raw echo's in the same round); allocs: per call, profiler recording every allocation"
[ "$total_errors" = 0 ] || echo "bench-e2e: $total_errors calls failed" >&2
