#!/usr/bin/env bash
# What a person does with `go tool pprof`, as a leaklab detector: the
# in-use growth from the first heap profile to the last one (after the
# drain), `go tool pprof -top -diff_base`; a leak when the top row (the
# function whose allocations grew most and stayed)
# grew by GROWTH_MIN bytes (default 1 MiB, four times the engine's own
# smallest finding). It names no kind: the top row is printed for people.
set -euo pipefail
dir=$1
min=${GROWTH_MIN:-1048576}
# The names are zero-padded, so the glob's order is the snapshots' (no
# `ls | head`, whose early exit fails the pipeline under pipefail).
heaps=("$dir"/heap-*.pb.gz)
first=${heaps[0]}
last=${heaps[${#heaps[@]}-1]}
go tool pprof -top -nodecount=1 -sample_index=inuse_space -unit=B -diff_base "$first" "$last" 2>/dev/null |
  python3 -c '
import re, sys
total, top = 0.0, ""
for line in sys.stdin:
    m = re.search(r"accounting for (-?[0-9.]+)B?, ", line)
    if m:
        total = float(m.group(1))
    elif re.match(r"\s*-?[0-9.]+B?\s+-?[0-9.]+%", line):
        top = line.split()[-1] if not top else top
leak = total >= float(sys.argv[1])
print("{\"leak\": %s, \"kind\": \"%s\", \"top_growth_bytes\": %d, \"top\": \"%s\"}" % ("true" if leak else "false", "unknown" if leak else "none", total, top.replace("\"", "")))
' "$min"
