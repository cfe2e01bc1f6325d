#!/usr/bin/env bash
# The reference sweep the README shows: RUNS seeded runs (default 300,
# about an hour and a half on 2 cores), scored for the engine (both modes),
# the RSS-trend baseline and `go tool pprof -diff_base`
# (scripts/detectors/pprof-diff.sh); its summary and figure go to results/
# (the run folders stay in OUT, out of the repository). An interrupted
# sweep goes on where it stopped when run again.
# Usage: RUNS=300 SEED=20261204 OUT=runs/sweep-reference scripts/sweep-reference.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
runs=${RUNS:-300}
seed=${SEED:-20261204}
out=${OUT:-runs/sweep-reference}
cargo build --release -p harness
start=$(date +%s)
target/release/leaklab sweep --runs "$runs" --seed "$seed" --out "$out" \
  --detector "$root/scripts/detectors/pprof-diff.sh" > /dev/null
took=$(( $(date +%s) - start ))
{
  echo "<!-- scripts/sweep-reference.sh: RUNS=$runs SEED=$seed, $(nproc) cores, ${took} s -->"
  cat "$out/summary.md"
} > results/sweep-summary.md
cp "$out/sweep.svg" results/sweep.svg
echo "results/sweep-summary.md and results/sweep.svg written ($runs runs in ${took} s)"
