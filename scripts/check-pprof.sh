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
#   (g) /debug/pprof/heap?full=1 keeps the allocation machinery that the
#       default profile starts after (its -top has flat rows in alloc:: or
#       hashbrown::), and another value of full is refused with a 400;
# and that the server stops on SIGTERM. Then
#   (h) a short run (3 s of load, no holder scans) of each leak whose guide
#       frame is an allocation site: in `go tool pprof -top
#       -sample_index=inuse_space -diff_base FIRST LAST` the top flat row
#       names that frame (request-field-hold: Request::read_field_2;
#       response-field-hold: Response::read_field_2; sonic-string-hold:
#       Request::read_field_3; duplicate-clients: lbcache's
#       format_instances), not the allocation machinery.
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

# (g) full stacks on request.
machinery_rows() { awk 'f && $1 != "0" { sub(/^ *[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +/, ""); print } /^ *flat  flat%/ { f = 1 }' "$1" |
  grep -cE '^<?(alloc|hashbrown)::' || true; }
if ! fetch "/debug/pprof/heap?full=1" "$work/full.pb.gz" 2>"$work/curl.err"; then
  fail "(g) GET /debug/pprof/heap?full=1: $(cat "$work/curl.err")"
elif ! gopprof -top -sample_index=inuse_space "$work/full.pb.gz" >"$work/full.top" 2>&1; then
  fail "(g) go tool pprof -top on heap?full=1 failed:"
  show "$work/full.top"
elif [ "$(machinery_rows "$work/full.top")" -eq 0 ]; then
  fail "(g) -top on heap?full=1 has no flat row in alloc:: or hashbrown:: (full stacks keep the machinery):"
  show "$work/full.top"
else
  bad=$(curl -q -sS --max-time 30 -o /dev/null -w '%{http_code}' "http://$admin/debug/pprof/heap?full=2" || true)
  if [ "$bad" != 400 ]; then
    fail "(g) /debug/pprof/heap?full=2 answered $bad, expected 400"
  else
    pass "(g) heap?full=1: $(machinery_rows "$work/full.top") flat rows in the allocation machinery (heap.pb.gz: $(machinery_rows "$work/heap.top")); full=2 refused"
  fi
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

# (h) the top flat row of a leak is its guide frame.
# top_row FILE: the name in the first row of a -top listing; top_flat FILE:
# its flat value (with -unit=B, in bytes).
top_row() { awk 'f { sub(/^ *[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +/, ""); sub(/ \(inline\)$/, ""); print; exit } /^ *flat  flat%/ { f = 1 }' "$1"; }
top_flat() { awk 'f { sub(/B$/, "", $1); print $1; exit } /^ *flat  flat%/ { f = 1 }' "$1"; }
# leak_top SCENARIO FLAT_RE: a short run of SCENARIO; the top flat row of
# its inuse_space growth must match FLAT_RE.
leak_top() {
  local scenario=$1 flat_re=$2 out="$work/runs/$1"
  if ! "$bin" run "$scenario" --duration 3s --no-holders --out "$out" >"$work/$scenario.run" 2>&1; then
    fail "(h) $scenario: leaklab run failed:"
    show "$work/$scenario.run"
    return
  fi
  local first="$out/heap-000.pb.gz" last
  last=$(ls "$out"/heap-*.pb.gz | tail -n 1)
  local cmd="go tool pprof -top -sample_index=inuse_space -diff_base $(basename "$first") $(basename "$last")"
  if ! gopprof -top -unit=B -sample_index=inuse_space -diff_base "$first" "$last" >"$work/$scenario.top" 2>&1; then
    fail "(h) $scenario: $cmd failed:"
    show "$work/$scenario.top"
    return
  fi
  local row bytes
  row=$(top_row "$work/$scenario.top")
  bytes=$(top_flat "$work/$scenario.top")
  if ! grep -qE "^($flat_re)\$" <<<"$row"; then
    fail "(h) $scenario: the top flat row of '$cmd' is '$row', expected /$flat_re/ (the guide's frame, not the allocation machinery):"
    show "$work/$scenario.top"
    return
  fi
  pass "(h) $scenario: top flat row $row, $bytes B"
}
leak_top request-field-hold "rpc::codec::echo::Request::read_field_2"
leak_top response-field-hold "rpc::codec::echo::Response::read_field_2"
leak_top duplicate-clients "rpc::lbcache::hooks::(format_instances|EventQueue::on_rebalance)"
leak_top sonic-string-hold "rpc::codec::echo::Request::read_field_3"

if [ "$failures" -eq 0 ]; then
  echo "check-pprof: all checks passed"
else
  echo "check-pprof: FAILED ($failures failing checks); server log:"
  show "$work/serve.log"
  exit 1
fi
