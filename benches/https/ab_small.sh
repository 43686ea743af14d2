#!/usr/bin/env bash
# Server CPU per 1000 small HTTPS requests, for A/B comparisons of Coffer builds (no peer).
#
# For each binary given (alternating, ROUNDS times): a fresh `coffer serve` (HTTPS only) on a
# spare loopback port; 1000 x 4 KiB uploaded with curl URL globbing; then, on one connection
# each, 1000 GETs and 1000 PUTs replacing other files, over HTTP/2 then HTTP/1.1. Prints wall
# seconds and the server's CPU ticks (1/100 s, user + system, from /proc) per run, counted 2 s
# after the run so that an upload's background replication counts for it.
#
# Usage (from the repository root): benches/https/ab_small.sh [-r ROUNDS] BIN [BIN ...]
#   e.g. benches/https/ab_small.sh -r 2 /tmp/coffer-old target/release/coffer
set -euo pipefail
. "$(dirname "$0")/serve.sh"
rounds=2
if [ "${1:-}" = "-r" ]; then rounds=$2; shift 2; fi
[ $# -ge 1 ] || { sed -n 2,12p "$0"; exit 2; }

run_one() {
  local bin=$1 work
  work=$(mktemp -d /tmp/coffer-ab-small.XXXXXX)
  mkdir -p "$work/small"
  for i in $(seq 1 1000); do head -c 4096 /dev/urandom > "$work/small/f$i"; done
  local port=$((20000 + RANDOM % 20000))
  coffer_setup "$bin" "$work" "$port"
  coffer_start "$bin" "$work" "$port"
  local base="https://127.0.0.1:$port/api/v1/files"
  local c=("${BENCH_CURL[@]}")
  "${c[@]}" -T "$work/small/f[1-1000]" "$base/small/"
  sleep 3
  cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
  for proto in --http2 --http1.1; do
    for kind in get put; do
      local c0 t0 t1
      c0=$(cpu); t0=$(date +%s.%N)
      if [ $kind = get ]; then
        "${c[@]}" $proto "$base/small/f[1-1000]"
      else
        "${c[@]}" $proto -T "$work/small/f[1-1000]" "$base/up/"
      fi
      t1=$(date +%s.%N); sleep 2
      printf '%-40s %-9s %-4s wall %6.3f s  cpu %4d ticks\n' "$bin" "$proto" "$kind" \
        "$(echo "$t1 - $t0" | bc)" "$(( $(cpu) - c0 ))"
    done
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}

for _ in $(seq "$rounds"); do
  for bin in "$@"; do run_one "$bin"; done
done
