#!/usr/bin/env bash
# What heap profiling costs on the Echo path: `leaklab load` (closed loop,
# 4 connections, 1 KiB payload) against one `leaklab serve` per profiler
# mode, all started at once and loaded in turn, round after round (each
# round starting one mode later), so that every mode sees the same machine.
# Then the median req/s of each mode, its ratio to the median with the
# profiler off, the median of the per-round ratios (each run against the
# off run of the same round), and the server's CPU time per call (for
# heaptrack with its interpreter and compressor): on a machine shared with
# other work, req/s swing with the load of the machine, CPU per call less.
#
#   off        serve --profile-rate 0 (bytes still counted for /metrics)
#   default    serve (one sample per 512 KiB)
#   rate-1     serve --profile-rate 1 (every allocation sampled)
#   holders    serve --holders (default rate; every block indexed with its
#              stack, for /debug/pprof/holders)
#   dhat       serve --profiler dhat (a build with --features dhat)
#   heaptrack  heaptrack leaklab serve --profile-rate 0
#
# The target: the default rate at 95% or more of off (per-round ratio).
#
# Usage: scripts/bench-profiler.sh [rounds] [duration]   (defaults: 3 5s)
# MODES="off holders heaptrack" runs only those modes (default: all).
# KEEP=1 keeps the scratch directory (server logs, dhat-heap.json, the
# heaptrack file) and prints where it is. The dhat build goes to
# target/dhat (its own target directory: target/release/leaklab stays the
# plain build). Without heaptrack installed that mode is skipped.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=${1:-3}
duration=${2:-5s}
conns=4
payload=1024
target_ratio=0.95

echo "bench-profiler: building leaklab, and leaklab with --features dhat into target/dhat" >&2
(cd "$root" && cargo build --release -q -p harness)
bin=$root/target/release/leaklab
dhat_bin=$root/target/dhat/release/leaklab

read -ra modes <<<"${MODES:-off default rate-1 holders dhat heaptrack}"
if [[ " ${modes[*]} " == *" dhat "* ]]; then
  (cd "$root" && cargo build --release -q -p harness --features dhat --target-dir "$root/target/dhat")
fi
if [[ " ${modes[*]} " == *" heaptrack "* ]] && ! command -v heaptrack >/dev/null; then
  echo "bench-profiler: heaptrack not installed (apt-get install heaptrack): mode skipped" >&2
  read -ra modes <<<"$(printf '%s ' "${modes[@]}" | sed 's/heaptrack//')"
fi

work=$(mktemp -d)
pids=()     # leaklab servers (for heaptrack, its leaklab child)
waits=()    # what was started here: each server, or the heaptrack script
ht_wrapper=""
# alive PID: running (a process that exited but was not waited for yet is
# a zombie, which kill -0 still finds).
alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "${st%% *}" != Z ]
}
# stop: SIGTERM to every server (DHAT and heaptrack write their files on the
# way out), then wait for them, with SIGKILL for any still there after 20 s.
stop() {
  local p left
  for p in "${pids[@]}" "${waits[@]}"; do
    [ "$p" = "$ht_wrapper" ] || kill -TERM "$p" 2>/dev/null || true
  done
  if [ -n "$ht_wrapper" ]; then
    for p in $(ps -o pid=,comm= --ppid "$ht_wrapper" 2>/dev/null | awk '$2 == "leaklab" { print $1 }'); do
      kill -TERM "$p" 2>/dev/null || true
    done
  fi
  for _ in $(seq 200); do
    left=""
    for p in "${pids[@]}" "${waits[@]}"; do alive "$p" && left=1; done
    [ -z "$left" ] && break
    sleep 0.1
  done
  for p in "${pids[@]}" "${waits[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${waits[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  waits=()
  ht_wrapper=""
}
cleanup() {
  stop
  if [ "${KEEP:-0}" = 1 ]; then echo "bench-profiler: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# addr_of READY: the RPC address in a server's ready file once it listens.
addr_of() {
  [ -s "$1" ] || return 0
  sed -n 's/.*"rpc":"\([0-9.]*:[0-9]*\)".*/\1/p' "$1"
}

# start MODE: starts that mode's server in $work/MODE (it writes its
# profile there) on ports the kernel picks; sets addr[MODE].
declare -A addr
start() {
  local mode=$1 dir=$work/$1 pid a=""
  mkdir -p "$dir"
  local cmd=("$bin" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --ready-file "$dir/ready.json")
  case $mode in
    off) cmd+=(--profile-rate 0) ;;
    default) ;;
    rate-1) cmd+=(--profile-rate 1) ;;
    holders) cmd+=(--holders) ;;
    dhat) cmd=("$dhat_bin" "${cmd[@]:1}" --profiler dhat) ;;
    heaptrack) cmd=(heaptrack "${cmd[@]}" --profile-rate 0) ;;
  esac
  (cd "$dir" && exec env -u LEAKLAB_PROFILE_RATE NO_COLOR=1 "${cmd[@]}" >"$dir/stdout.log" 2>"$dir/serve.log") &
  pid=$!
  waits+=("$pid")
  if [ "$mode" = heaptrack ]; then ht_wrapper=$pid; fi
  for _ in $(seq 400); do
    a=$(addr_of "$dir/ready.json")
    [ -n "$a" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$a" ]; then
    echo "bench-profiler: the $mode server did not start; its output:" >&2
    cat "$dir/stdout.log" "$dir/serve.log" >&2
    exit 1
  fi
  if [ "$mode" = heaptrack ]; then
    # Signals go to leaklab itself: the heaptrack script waits for it, then
    # finishes writing its file.
    pid=$(ps -o pid=,comm= --ppid "$ht_wrapper" | awk '$2 == "leaklab" { print $1 }')
    [ -n "$pid" ] || { echo "bench-profiler: cannot find heaptrack's leaklab process" >&2; exit 1; }
  fi
  pids+=("$pid")
  addr[$mode]=$a
}

# load ADDR: one closed-loop run; prints "rps errors p50_ms ok".
load() {
  local json rps errors p50 ok
  json=$("$bin" load --target "$1" --conns "$conns" --payload "$payload" --rps 0 --duration "$duration" --json)
  rps=$(sed -n 's/.*"rps":\([0-9.eE+-]*\).*/\1/p' <<<"$json")
  errors=$(sed -n 's/.*"errors":\([0-9]*\).*/\1/p' <<<"$json")
  p50=$(sed -n 's/.*"p50_ms":\([0-9.eE+-]*\).*/\1/p' <<<"$json")
  ok=$(sed -n 's/.*"ok":\([0-9]*\).*/\1/p' <<<"$json")
  [ -n "$rps" ] && [ -n "$ok" ] || { echo "bench-profiler: unexpected load output: $json" >&2; exit 1; }
  echo "$rps $errors $p50 $ok"
}

# cpu_ticks PID...: user + system clock ticks those processes used so far.
cpu_ticks() {
  local p t=0 f
  for p in "$@"; do
    f=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    read -ra f <<<"$f"
    t=$((t + f[11] + f[12]))
  done
  echo "$t"
}
tck=$(getconf CLK_TCK)

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# ratios A B: the element-wise ratios of two lists of numbers, one a line.
ratios() {
  local -a a b
  local i
  read -ra a <<<"$1"
  read -ra b <<<"$2"
  for i in "${!a[@]}"; do awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN { print (y > 0) ? x / y : 0 }'; done
}

for m in "${modes[@]}"; do start "$m"; done
# The processes whose CPU time a mode costs: the server; for heaptrack,
# also its interpreter and compressor.
declare -A cpu_pids
for i in "${!modes[@]}"; do cpu_pids[${modes[$i]}]=${pids[$i]}; done
if [ -n "$ht_wrapper" ]; then cpu_pids[heaptrack]=$(ps -o pid= --ppid "$ht_wrapper" | xargs); fi

echo "leaklab load --conns $conns --payload $payload --rps 0 --duration $duration; $rounds rounds; $(nproc) CPUs"
printf '%-6s %-10s %12s %8s %10s %14s\n' round mode "req/s" errors "p50 ms" "CPU us/req"
declare -A rps_of cpu_of
for round in $(seq "$rounds"); do
  # Each round starts one mode later, so no mode always runs first.
  order=("${modes[@]:$(((round - 1) % ${#modes[@]}))}" "${modes[@]:0:$(((round - 1) % ${#modes[@]}))}")
  for m in "${order[@]}"; do
    # shellcheck disable=SC2086
    before=$(cpu_ticks ${cpu_pids[$m]})
    out=$(load "${addr[$m]}")
    # shellcheck disable=SC2086
    after=$(cpu_ticks ${cpu_pids[$m]})
    read -r rps errors p50 ok <<<"$out"
    cpu=$(awk -v t=$((after - before)) -v hz="$tck" -v n="$ok" 'BEGIN { printf "%.2f", (n > 0) ? t / hz * 1e6 / n : 0 }')
    rps_of[$m]="${rps_of[$m]:-} $rps"
    cpu_of[$m]="${cpu_of[$m]:-} $cpu"
    printf '%-6s %-10s %12.0f %8s %10.3f %14s\n' "$round" "$m" "$rps" "$errors" "$p50" "$cpu"
  done
done

# vs off: ratio of the medians. round: median of the ratios of each run to
# the off run of the same round (seconds apart, so they drift less when the
# machine's load changes). CPU: the server's CPU time per answered call.
echo
printf '%-10s %12s %7s %7s %17s %11s %7s\n' mode "median req/s" "vs off" round "min-max req/s" "CPU us/req" "vs off"
off=$(tr ' ' '\n' <<<"${rps_of[off]}" | grep . | median)
off_cpu=$(tr ' ' '\n' <<<"${cpu_of[off]}" | grep . | median)
for m in "${modes[@]}"; do
  med=$(tr ' ' '\n' <<<"${rps_of[$m]}" | grep . | median)
  lo=$(tr ' ' '\n' <<<"${rps_of[$m]}" | grep . | sort -g | head -1)
  hi=$(tr ' ' '\n' <<<"${rps_of[$m]}" | grep . | sort -g | tail -1)
  cpu=$(tr ' ' '\n' <<<"${cpu_of[$m]}" | grep . | median)
  ratio=$(awk -v a="$med" -v b="$off" 'BEGIN { printf "%.3f", a / b }')
  round_ratio=$(ratios "${rps_of[$m]}" "${rps_of[off]}" | median | awk '{ printf "%.3f", $1 }')
  cpu_ratio=$(awk -v a="$cpu" -v b="$off_cpu" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
  if [ "$m" = default ]; then default_ratio=$round_ratio default_cpu=$cpu_ratio; fi
  printf '%-10s %12.0f %7s %7s %8.0f-%-8.0f %11.2f %7s\n' "$m" "$med" "$ratio" "$round_ratio" "$lo" "$hi" "$cpu" "$cpu_ratio"
done
if [ -n "${default_ratio:-}" ]; then
  verdict=$(awk -v r="$default_ratio" -v t="$target_ratio" 'BEGIN { print (r >= t) ? "meets" : "BELOW" }')
  echo "default rate / off: $default_ratio of the req/s per round ($verdict the target of $target_ratio), $default_cpu x the CPU per call"
fi

# Stop the servers; DHAT and heaptrack write their files on the way out.
stop
for f in "$work"/dhat/dhat-heap.json "$work"/heaptrack/heaptrack.leaklab.*; do
  [ -e "$f" ] || continue
  echo "wrote ${f#"$work"/} ($(du -k "$f" | cut -f1) KiB)"
done
if [ -d "$work/dhat" ] && [ ! -s "$work/dhat/dhat-heap.json" ]; then
  echo "bench-profiler: the dhat server wrote no dhat-heap.json; its log:" >&2
  cat "$work/dhat/serve.log" >&2
fi
