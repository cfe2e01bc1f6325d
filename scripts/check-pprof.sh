#!/usr/bin/env bash
# Go's own `go tool pprof` reads the profiles that `leaklab serve` serves, and
# /metrics has the figures that runs scrape. Starts the server on free
# loopback ports with every allocation recorded (--profile-rate 1, so that
# the few kilobytes the server keeps are in the profile for sure), loads it
# for 2 s with 1 KiB payloads, then checks:
#   (a) /debug/pprof/heap has the four sample types of a Go heap profile;
#   (b) `go tool pprof -top -sample_index=inuse_space` on the saved file
#       names the server's own functions (rpc::pool, rpc::linkbuf);
#   (c) the same on the live URL;
#   (d) /debug/pprof/allocs defaults to alloc_space;
#   (e) /metrics has process_resident_memory_bytes and leaklab_requests_total;
#   (f) /debug/pprof/holders (the server runs with --holders): `go tool
#       pprof -top` and `-tree` read it, its chains start at a root (a
#       static or a thread's stack), and `-comments` gives the scan's figures;
# and that the server stops on SIGTERM.
#
# Needs go (Debian's golang-go; .ci/run installs it) and curl.
# Usage: scripts/check-pprof.sh [path/to/leaklab]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${1:-$root/target/release/leaklab}

command -v go >/dev/null || { echo "check-pprof: FAIL: go missing (apt-get install golang-go)" >&2; exit 1; }
command -v curl >/dev/null || { echo "check-pprof: FAIL: curl missing (apt-get install curl)" >&2; exit 1; }
[ -x "$bin" ] || { echo "check-pprof: FAIL: $bin not built (cargo build --release -p harness)" >&2; exit 1; }

work=$(mktemp -d)
serve_pid=""
cleanup() {
  if [ -n "$serve_pid" ]; then
    kill "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# go keeps its caches, and pprof the profiles it fetches, under HOME: keep
# them in the scratch directory (CI runs as root, maybe without a HOME).
mkdir -p "$work/home" "$work/pprof"
gopprof() {
  env -u GOFLAGS HOME="$work/home" GOPATH="$work/home/go" GOCACHE="$work/home/go-cache" \
    GOTOOLCHAIN=local PPROF_TMPDIR="$work/pprof" go tool pprof "$@"
}
fetch() { curl -q -fsS --max-time 30 -o "$2" "http://$admin$1"; }

failures=0
pass() { echo "check-pprof: PASS $*"; }
fail() { echo "check-pprof: FAIL $*"; failures=$((failures + 1)); }
# show FILE: the start of a command's output, after a failure.
show() { sed -n '1,25s/^/    | /p' "$1"; }

# The server, on ports the kernel picks; its ready file says which.
LEAKLAB_LOG=info NO_COLOR=1 "$bin" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --profile-rate 1 --holders \
  --ready-file "$work/ready.json" 2>"$work/serve.log" &
serve_pid=$!
rpc="" admin=""
for _ in $(seq 400); do
  if [ -s "$work/ready.json" ]; then
    rpc=$(sed -n 's/.*"rpc":"\([0-9.]*:[0-9]*\)".*/\1/p' "$work/ready.json")
    admin=$(sed -n 's/.*"admin":"\([0-9.]*:[0-9]*\)".*/\1/p' "$work/ready.json")
    break
  fi
  kill -0 "$serve_pid" 2>/dev/null || break
  sleep 0.05
done
if [ -z "$rpc" ] || [ -z "$admin" ]; then
  fail "serve: no addresses in its ready file ($(cat "$work/ready.json" 2>/dev/null || echo none)); its log:"
  show "$work/serve.log"
  exit 1
fi
echo "check-pprof: serve --profile-rate 1 on $rpc, admin on $admin"

# Load: 4 connections, as fast as answered, 2 s, 1 KiB.
if ! "$bin" load --target "$rpc" --conns 4 --rps 0 --payload 1024 --duration 2s --json >"$work/load.json" 2>&1; then
  fail "load: leaklab load failed:"
  show "$work/load.json"
  exit 1
fi
ok=$(sed -n 's/.*"ok":\([0-9]*\).*/\1/p' "$work/load.json")
errors=$(sed -n 's/.*"errors":\([0-9]*\).*/\1/p' "$work/load.json")
if [ -n "$ok" ] && [ "$ok" -gt 0 ] && [ "$errors" = 0 ]; then
  pass "load: $ok calls answered, 0 errors"
else
  fail "load: unexpected result: $(cat "$work/load.json")"
fi

# (a) the heap profile has the four sample types (default inuse_space).
types="alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes"
if ! fetch /debug/pprof/heap "$work/heap.pb.gz" 2>"$work/curl.err"; then
  fail "(a) GET /debug/pprof/heap: $(cat "$work/curl.err")"
elif ! gopprof -raw "$work/heap.pb.gz" >"$work/heap.raw" 2>&1; then
  fail "(a) go tool pprof -raw heap.pb.gz failed:"
  show "$work/heap.raw"
else
  header=$(sed -n '/^Samples:/{n;p;q}' "$work/heap.raw")
  missing=""
  for t in $types; do
    grep -qE "(^| )$t(\[dflt\])?( |$)" <<<"$header" || missing="$missing $t"
  done
  if [ -n "$missing" ]; then
    fail "(a) heap profile lacks sample types:$missing (header: '$header')"
  elif ! grep -q 'inuse_space/bytes\[dflt\]' <<<"$header"; then
    fail "(a) heap profile does not default to inuse_space (header: '$header')"
  else
    pass "(a) heap profile sample types: $header"
  fi
fi

# top_names FILE: the server's own functions in a -top listing.
top_names() {
  { grep -oE 'rpc::pool::[A-Za-z_]+(::[A-Za-z_]+)*' "$1" | sort -u | head -3
    grep -oE 'rpc::linkbuf::[A-Za-z_]+(::[A-Za-z_]+)*' "$1" | sort -u | head -3; } | paste -sd, - || true
}

# (b) -top inuse_space on the saved file names the server's functions.
if [ -s "$work/heap.pb.gz" ]; then
  if ! gopprof -top -sample_index=inuse_space "$work/heap.pb.gz" >"$work/heap.top" 2>&1; then
    fail "(b) go tool pprof -top -sample_index=inuse_space heap.pb.gz failed:"
    show "$work/heap.top"
  elif ! grep -q '^Type: inuse_space' "$work/heap.top"; then
    fail "(b) -top on heap.pb.gz: no 'Type: inuse_space' header:"
    show "$work/heap.top"
  elif [ -z "$(top_names "$work/heap.top")" ]; then
    fail "(b) -top inuse_space on heap.pb.gz names no rpc::pool or rpc::linkbuf function:"
    show "$work/heap.top"
  else
    pass "(b) -top inuse_space on heap.pb.gz: $(grep -m1 '^Showing' "$work/heap.top"); names $(top_names "$work/heap.top")"
  fi
else
  fail "(b) skipped: no heap profile"
fi

# (c) the same on the live URL.
url="http://$admin/debug/pprof/heap"
if ! gopprof -top -sample_index=inuse_space "$url" >"$work/live.top" 2>&1; then
  fail "(c) go tool pprof -top -sample_index=inuse_space $url failed:"
  show "$work/live.top"
elif ! grep -q '^Type: inuse_space' "$work/live.top" || [ -z "$(top_names "$work/live.top")" ]; then
  fail "(c) -top on $url: no inuse_space listing naming rpc::pool or rpc::linkbuf:"
  show "$work/live.top"
else
  pass "(c) -top inuse_space on $url: names $(top_names "$work/live.top")"
fi

# (d) the allocs profile defaults to alloc_space.
if ! fetch /debug/pprof/allocs "$work/allocs.pb.gz" 2>"$work/curl.err"; then
  fail "(d) GET /debug/pprof/allocs: $(cat "$work/curl.err")"
elif ! gopprof -raw "$work/allocs.pb.gz" >"$work/allocs.raw" 2>&1 ||
  ! gopprof -top "$work/allocs.pb.gz" >"$work/allocs.top" 2>&1; then
  fail "(d) go tool pprof on allocs.pb.gz failed:"
  show "$work/allocs.raw"
  show "$work/allocs.top"
else
  header=$(sed -n '/^Samples:/{n;p;q}' "$work/allocs.raw")
  if grep -q 'alloc_space/bytes\[dflt\]' <<<"$header" && grep -q '^Type: alloc_space' "$work/allocs.top"; then
    pass "(d) allocs profile defaults to alloc_space ($(grep -m1 '^Showing' "$work/allocs.top"))"
  else
    fail "(d) allocs profile does not default to alloc_space (raw header: '$header'; top: $(grep -m1 '^Type:' "$work/allocs.top" || echo none))"
  fi
fi

# (e) the metrics.
if ! fetch /metrics "$work/metrics.txt" 2>"$work/curl.err"; then
  fail "(e) GET /metrics: $(cat "$work/curl.err")"
else
  rss=$(awk '$1 == "process_resident_memory_bytes" { print $2 }' "$work/metrics.txt")
  reqs=$(awk '$1 == "leaklab_requests_total" { print $2 }' "$work/metrics.txt")
  if [ -z "$rss" ] || ! awk -v v="$rss" 'BEGIN { exit !(v > 0) }'; then
    fail "(e) /metrics: no positive process_resident_memory_bytes (got '${rss:-nothing}')"
  elif [ -z "$reqs" ] || ! awk -v v="$reqs" -v ok="${ok:-1}" 'BEGIN { exit !(v >= ok && v > 0) }'; then
    fail "(e) /metrics: leaklab_requests_total is '${reqs:-missing}', expected at least the ${ok:-?} calls answered"
  else
    pass "(e) /metrics: process_resident_memory_bytes $rss, leaklab_requests_total $reqs"
  fi
fi

# (f) the holders profile.
url="http://$admin/debug/pprof/holders"
if ! fetch /debug/pprof/holders "$work/holders.pb.gz" 2>"$work/curl.err"; then
  fail "(f) GET /debug/pprof/holders: $(cat "$work/curl.err")"
elif ! gopprof -top "$work/holders.pb.gz" >"$work/holders.top" 2>&1 ||
  ! gopprof -tree "$work/holders.pb.gz" >"$work/holders.tree" 2>&1 ||
  ! gopprof -comments "$work/holders.pb.gz" >"$work/holders.comments" 2>&1; then
  fail "(f) go tool pprof -top/-tree/-comments on holders.pb.gz failed:"
  show "$work/holders.top"
  show "$work/holders.tree"
elif ! grep -q '^Type: inuse_space' "$work/holders.top" ||
  ! grep -qE '(static |thread .* stack)' "$work/holders.tree" ||
  ! grep -q '^holders: ' "$work/holders.comments"; then
  fail "(f) holders profile: no inuse_space listing, no root in -tree, or no scan figures in -comments:"
  show "$work/holders.top"
  show "$work/holders.comments"
else
  pass "(f) holders profile: $(grep -m1 '^Showing' "$work/holders.top"); $(head -c 160 "$work/holders.comments")"
fi

# The server stops on SIGTERM.
kill -TERM "$serve_pid"
stopped=""
for _ in $(seq 100); do
  kill -0 "$serve_pid" 2>/dev/null || { stopped=1; break; }
  sleep 0.05
done
if [ -n "$stopped" ]; then
  code=0
  wait "$serve_pid" || code=$?
  serve_pid=""
  if [ "$code" = 0 ]; then pass "serve stopped on SIGTERM"; else fail "serve exited with status $code on SIGTERM"; fi
else
  fail "serve still running 5 s after SIGTERM"
fi

if [ "$failures" -eq 0 ]; then
  echo "check-pprof: all checks passed"
else
  echo "check-pprof: FAILED ($failures failing checks); server log:"
  show "$work/serve.log"
  exit 1
fi
