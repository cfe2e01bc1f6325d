#!/usr/bin/env bash
# User-space instructions per Echo call, end to end over loopback: each
# server of scripts/bench-e2e.sh (raw echo; copy decoding; --decode nocopy;
# nocopy with --nocopy-write) runs under valgrind's callgrind while
# `leaklab load` (closed loop, not under valgrind) calls it. Counters are
# zeroed after a warm-up run and dumped after the measured one, so that
# start-up is not counted.
#
# Why: server CPU per call from /proc swings by ±0.1 of raw echo between
# runs on a shared 2-core machine, more than most changes to the RPC path
# move it. An instruction count does not depend on what else runs: use it
# to see what a change to the pool, the codec or the connection loop costs
# per call, and bench-e2e.sh for what it costs in time (which also counts
# the kernel's share, the larger one, that no instruction count here sees).
#
# Caveats: threads run one at a time under valgrind, so the runtime wakes
# and parks differently than without it; `rep movsb` counts one instruction
# per byte, so a payload copy (copy decoding, copied replies) weighs its
# size in bytes.
#
# Usage: scripts/bench-insn.sh
#   ROWS      "payload:conns ..." (default "1024:64 16384:4")
#   DURATION  one measured load run (default 3s)
#   LEAKLAB   a leaklab binary to measure instead of building this checkout
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rows=${ROWS:-"1024:64 16384:4"}
duration=${DURATION:-3s}

for tool in valgrind callgrind_control python3; do
  command -v "$tool" >/dev/null || { echo "bench-insn: $tool missing (Debian: valgrind, python3)" >&2; exit 1; }
done

# shellcheck source=scripts/echo-servers.sh
. "$here/echo-servers.sh"

work=$(mktemp -d)
vpid=
cleanup() {
  [ -n "$vpid" ] && kill "$vpid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM


# calls PORT PAYLOAD CONNS DURATION: one closed-loop run; prints the calls answered.
calls() {
  "$bin" load --target "127.0.0.1:$1" --conns "$3" --payload "$2" --rps 0 --duration "$4" --json |
    sed -n 's/.*"ok":\([0-9]*\).*/\1/p'
}

# measure NAME PAYLOAD CONNS: instructions per call of one server.
measure() {
  local name=$1 payload=$2 conns=$3 port admin out ok ir
  port=$(free_port)
  admin=$(free_port)
  out=$work/$name.$payload.$conns
  # shellcheck disable=SC2086
  valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
    "$bin" serve --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" --profile-rate 0 ${flags[$name]} \
    >"$out.log" 2>&1 &
  vpid=$!
  for _ in $(seq 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
  done
  calls "$port" "$payload" "$conns" 1s >/dev/null
  callgrind_control -z "$vpid" >/dev/null 2>&1
  ok=$(calls "$port" "$payload" "$conns" "$duration")
  callgrind_control -d "$vpid" >/dev/null 2>&1
  kill "$vpid" 2>/dev/null || true
  wait "$vpid" 2>/dev/null || true
  vpid=
  # The dump made on request is part 1 (the file without a part number is
  # the rest of the run, written at exit).
  ir=$(sed -n 's/^summary: //p' "$out".*.1 | head -1)
  [ -n "$ir" ] && [ "${ok:-0}" -gt 0 ] || { echo "bench-insn: no count for $name; its log:" >&2; cat "$out.log" >&2; exit 1; }
  echo $((ir / ok))
}

echo "user-space instructions per Echo call under callgrind (closed loop, profiler off, $duration per cell)"
printf '\n| payload, connections | %s | %s | %s | %s |\n' "${titles[@]}"
printf '|---|---|---|---|---|\n'
for row in $rows; do
  payload=${row%:*}
  conns=${row#*:}
  size=$(size_label "$payload")
  raw=$(measure raw "$payload" "$conns")
  line="| $size, $conns | $raw |"
  for n in copy nocopy ncw; do
    v=$(measure "$n" "$payload" "$conns")
    line="$line $v ($(awk -v a="$v" -v b="$raw" 'BEGIN { printf "+%d", a - b }')) |"
  done
  echo "$line"
done
echo
echo "instructions per call, and in brackets what the RPC server executes beyond raw echo; kernel work is not counted"
