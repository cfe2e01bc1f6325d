#!/usr/bin/env bash
# A report as a reader sees it: runs request-field-hold's leak and fix
# (short runs), writes the comparison page, and opens the leak's, the
# fix's and the comparison's report.html in headless Chromium (Selenium
# and chromium-driver): no console error, the charts' text laid out, the
# charts and the flame graph name the leak's site (read_field_2), the
# flame graph's search and hover work. Screenshots go beside the pages.
# Needs chromium, chromium-driver and python3-selenium (Debian packages).
# Usage: scripts/check-report.sh [path/to/leaklab] [OUT_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/leaklab}
out=${2:-${TMPDIR:-/tmp}/leaklab-check-report}
[ -x "$bin" ] || (cd "$root" && cargo build --release -p harness)
rm -rf "$out"
mkdir -p "$out"
"$bin" run request-field-hold --variant leak --duration 4s --out "$out/leak" > "$out/leak.txt"
"$bin" run request-field-hold --variant fix --duration 4s --out "$out/fix" > "$out/fix.txt"
for run in leak fix; do
  [ -s "$out/$run/report.html" ] || { echo "the $run run wrote no report.html" >&2; exit 1; }
  [ -s "$out/$run/timeline.svg" ] && [ -s "$out/$run/flame.svg" ] || { echo "the $run run wrote no timeline.svg or flame.svg" >&2; exit 1; }
done
grep -q read_field_2 "$out/leak/timeline.svg" || { echo "timeline.svg does not name read_field_2" >&2; exit 1; }
# The comparison goes into a copy of the leak's folder, so that both pages stay.
cp -r "$out/leak" "$out/compare"
start=$(date +%s%N)
"$bin" report "$out/compare" --compare "$out/fix" > /dev/null
echo "comparison written in $(( ($(date +%s%N) - start) / 1000000 )) ms, $(stat -c %s "$out/compare/report.html") bytes"
/usr/bin/python3 "$root/scripts/check_report.py" "$out" read_field_2 \
  "$out/leak/report.html:must" "$out/fix/report.html:may" "$out/compare/report.html:must"
