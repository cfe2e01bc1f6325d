#!/usr/bin/env bash
# Hostile peers against `leaklab serve`, each beside a good client
# (`leaklab load`): (a) quadratic unframed list<struct>, (b) a 16 MiB method
# name whose replies are never read, (c) 16 partial 48 MiB frames, (d) more
# connections than --max-conns, (e) a peer that never reads its replies,
# (f) a 1-byte-per-second trickle. A fresh server per attack; prints one row
# per attack: good calls ok/total, p50/p99 without and with the attack and
# their ratio, peak RSS (VmHWM), the CPU of the server (calm/hit) and of the
# attacker, and the closes the server counted.
#
# Usage: scripts/attack.sh [target/release/leaklab] [--duration 5s] [--only a-] [--rss-cap MiB]
# Exits non-zero only if the script itself breaks (a missed target does not).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../target/release/leaklab}
[ $# -gt 0 ] && shift
command -v python3 >/dev/null || { echo "attack: python3 missing" >&2; exit 1; }
[ -x "$bin" ] || { echo "attack: $bin is not an executable (cargo build --release -p harness)" >&2; exit 1; }
exec python3 "$here/attack.py" "$bin" "$@"
