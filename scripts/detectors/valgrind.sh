#!/usr/bin/env bash
# valgrind memcheck's leak summary on one run folder (see valgrind-serve),
# as a leaklab detector: a leak when "definitely lost" plus "possibly lost"
# reach LOST_MIN bytes (default 64 KiB). Memory still reachable at exit
# (every leak the guide documents: caches, slot tables, hooks, pools) is
# "still reachable" to memcheck, and is not counted as lost.
set -euo pipefail
dir=$1
min=${LOST_MIN:-65536}
for _ in $(seq 1 120); do
  grep -q "ERROR SUMMARY" "$dir/valgrind.log" 2>/dev/null && break
  sleep 0.5
done
python3 - "$dir/valgrind.log" "$min" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def bytes_of(what):
    m = re.search(what + r": ([0-9,]+) bytes", text)
    return int(m.group(1).replace(",", "")) if m else 0
lost = bytes_of("definitely lost") + bytes_of("possibly lost")
reachable = bytes_of("still reachable")
leak = lost >= int(sys.argv[2])
print('{"leak": %s, "kind": "%s", "lost_bytes": %d, "still_reachable_bytes": %d}'
      % ("true" if leak else "false", "unknown" if leak else "none", lost, reachable))
PY
