#!/usr/bin/env bash
# Regenerates results/summary.md, matrix.json and leak-vs-fix.svg: the full
# matrix (8 s of load per run), every scenario x variant, run, diagnosed and
# scored. About 6 minutes.
# Usage: scripts/regen-results.sh [path/to/leaklab]
# KEEP=DIR keeps the runs (profiles, reports, index.html) in DIR.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/leaklab}
[ -x "$bin" ] || (cd "$root" && cargo build --release -p harness)
if [ -n "${KEEP:-}" ]; then
  out=$KEEP
  mkdir -p "$out"
else
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
status=0
"$bin" matrix --out "$out" > /dev/null || status=$?
mkdir -p "$root/results"
{
  echo "# Reference results"
  echo
  echo "\`scripts/regen-results.sh\` on $(nproc) cores, $(date -u +%Y-%m-%d); each run: 2 s warm-up, 8 s load, drain, settle; snapshots every 500 ms; profiler rate 64 KiB."
  echo
  cat "$out/summary.md"
} > "$root/results/summary.md"
cp "$out/matrix.json" "$root/results/matrix.json"
cp "$out/leak-vs-fix.svg" "$root/results/leak-vs-fix.svg"
echo "results/summary.md, matrix.json and leak-vs-fix.svg written (matrix exit $status)"
exit "$status"
