#!/usr/bin/env bash
# The detector benchmark end to end, small: a seeded sweep split in two
# shards (as two machines would run it) with an outside detector
# (`go tool pprof -diff_base`, scripts/detectors/pprof-diff.sh), the shards
# scored as one with `matrix --merge`, exported as a dataset, and the
# dataset read by the Python loader, which checks every label and metrics
# line against the JSON Schemas (Debian's python3-jsonschema). A label
# broken on purpose must be refused.
# Usage: scripts/check-dataset.sh [path/to/leaklab] [OUT_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/leaklab}
out=${2:-${TMPDIR:-/tmp}/leaklab-check-dataset}
[ -x "$bin" ] || (cd "$root" && cargo build --release -p harness)
rm -rf "$out"
mkdir -p "$out"
runs=4
seed=${SEED:-20261204}
detector="$root/scripts/detectors/pprof-diff.sh"
"$bin" sweep --runs $runs --seed "$seed" --dry-run > "$out/plan.txt"
cat "$out/plan.txt"
for k in 1 2; do
  "$bin" sweep --runs $runs --seed "$seed" --duration 2s --shard "$k/2" --out "$out/shard-$k" \
    --detector "$detector" > "$out/shard-$k.md"
done
"$bin" matrix --merge "$out/shard-1" "$out/shard-2" --out "$out/merged" --json > "$out/merged.json"
/usr/bin/python3 - "$out" "$runs" <<'PY'
import json, sys
out, runs = sys.argv[1], int(sys.argv[2])
merged = json.load(open(f"{out}/merged/merged.json"))
results = merged["results"]
assert len(results) == runs, f"merged {len(results)} runs, expected {runs}"
seeds = {r["label"]["seed"] for r in results}
assert len(seeds) == runs, "a run is in both shards"
names = [t["detector"] for t in merged["tables"]]
assert names[0] == "engine" and any(n.startswith("detector: ") for n in names), names
plan = [l.split(" seed ")[0] for l in open(f"{out}/plan.txt")]
assert sorted(r["run"] for r in results) == sorted(plan), (plan, [r["run"] for r in results])
print(f"merged {runs} runs from 2 shards; detectors: {', '.join(names)}")
PY
for k in 1 2; do "$bin" export "$out/shard-$k" --out "$out/dataset" > /dev/null; done
/usr/bin/python3 "$root/scripts/load_dataset.py" "$out/dataset"
# A hostile label: the loader must refuse it.
bad=$(ls -d "$out"/dataset/*/ | head -1)
/usr/bin/python3 - "$bad/label.json" <<'PY'
import json, sys
l = json.load(open(sys.argv[1])); l["leak_rate"] = 0
json.dump(l, open(sys.argv[1], "w"))
PY
if /usr/bin/python3 "$root/scripts/load_dataset.py" "$out/dataset" > /dev/null 2>&1; then
  echo "the loader accepted a label with leak_rate 0" >&2
  exit 1
fi
echo "dataset check passed"
