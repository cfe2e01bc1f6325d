# Sourced by bench-e2e.sh and bench-insn.sh: the Echo servers they compare,
# and what both need to run them. Expects `root` (the checkout) to be set.

# The servers, by column: raw echo (the baseline: no codec, no pool), copy
# decoding, NoCopy decoding, NoCopy decoding with NoCopy writes.
names=(raw copy nocopy ncw)
titles=("raw echo" "serve (copy)" "--decode nocopy" "nocopy+nocopy-write")
declare -A flags=(
  [raw]="--raw-echo"
  [copy]=""
  [nocopy]="--decode nocopy"
  [ncw]="--decode nocopy --nocopy-write"
)

# The leaklab binary to measure: $LEAKLAB, or this checkout's, built now.
if [ -n "${LEAKLAB:-}" ]; then
  bin=$LEAKLAB
else
  (cd "$root" && cargo build --release -q -p harness)
  bin=$root/target/release/leaklab
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# size_label BYTES: "1 KiB", "256 KiB", "1 MiB" or "100 B", for a table row.
size_label() {
  if [ "$1" -ge 1048576 ]; then echo "$(($1 >> 20)) MiB"; elif [ "$1" -ge 1024 ]; then echo "$(($1 >> 10)) KiB"; else echo "$1 B"; fi
}
