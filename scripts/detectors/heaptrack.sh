#!/usr/bin/env bash
# heaptrack's leak report on one run folder (see heaptrack-serve), as a
# leaklab detector: prints {"leak": ..., "kind": ..., "leaked_bytes": ...}.
# heaptrack calls "leaked" what was not freed when the process exited; a
# leak that is still reachable (a cache, a slot table) is freed or not at
# exit depending on who owns it, so this is what heaptrack says, not a
# diagnosis. LEAKED_MIN (bytes, default 1 MiB) is the alert threshold.
set -euo pipefail
dir=$1
min=${LEAKED_MIN:-1048576}
# heaptrack finishes its file after the process exits.
for _ in $(seq 1 120); do
  grep -q "Heaptrack finished" "$dir/heaptrack.log" 2>/dev/null && break
  sleep 0.5
done
file=$(ls "$dir"/heaptrack*.zst "$dir"/heaptrack*.gz 2>/dev/null | head -1 || true)
if [ -z "$file" ]; then
  echo "heaptrack.sh: no heaptrack file in $dir" >&2
  exit 1
fi
heaptrack_print -f "$file" --print-leaks 1 --print-peaks 0 --print-allocators 0 \
    --print-temporary 0 --print-histogram "" 2>/dev/null |
  python3 -c '
import re, sys
units = {"": 1, "B": 1, "K": 1e3, "M": 1e6, "G": 1e9}
leaked = 0.0
for line in sys.stdin:
    m = re.match(r"total memory leaked: ([0-9.]+)([KMG]?)B?", line.strip())
    if m:
        leaked = float(m.group(1)) * units[m.group(2)]
leak = leaked >= float(sys.argv[1])
print("{\"leak\": %s, \"kind\": \"%s\", \"leaked_bytes\": %d}" % ("true" if leak else "false", "unknown" if leak else "none", leaked))
' "$min"
