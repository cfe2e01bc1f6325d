#!/usr/bin/env bash
# A stock Apache Thrift client calls `leaklab serve` over framed and buffered
# transports, with payloads from 0 bytes to 70 KiB, in both decode modes and
# with NoCopy writes, and checks every field.
#
# Needs Debian's thrift-compiler and python3-thrift (.ci/run installs them).
# Usage: scripts/interop.sh [path/to/leaklab]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${1:-$root/target/release/leaklab}
python=/usr/bin/python3   # Debian's python, where python3-thrift lives

command -v thrift >/dev/null || { echo "interop: thrift compiler missing (apt-get install thrift-compiler)" >&2; exit 1; }
$python -c 'import thrift' 2>/dev/null || { echo "interop: python3-thrift missing (apt-get install python3-thrift)" >&2; exit 1; }
[ -x "$bin" ] || { echo "interop: $bin not built (cargo build --release)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

thrift -out "$work" --gen py "$root/rpc/idl/echo.thrift"

free_port() { $python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

status=0
for mode in "--decode copy" "--decode nocopy --nocopy-write"; do
  port=$(free_port)
  admin=$(free_port)
  # shellcheck disable=SC2086
  "$bin" serve --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" $mode 2>"$work/serve-$port.log" &
  pids+=($!)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
  for transport in framed buffered; do
    echo "== serve $mode, $transport"
    if ! $python "$here/interop/echo_client.py" "$work" 127.0.0.1 "$port" "$transport"; then
      status=1
      echo "--- server log:"; cat "$work/serve-$port.log"
    fi
  done
done
if [ "$status" -eq 0 ]; then echo "interop: all calls round-tripped"; else echo "interop: FAILED"; fi
exit "$status"
