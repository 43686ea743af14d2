#!/usr/bin/env bash
# Latency of each small HTTPS upload, for A/B comparisons of Coffer builds (no peer): how many
# uploads stall, and for how long, not only the total.
#
# For each binary given (alternating, ROUNDS times): a fresh `coffer serve` (HTTPS only, the
# embedded default: SQLite, local primary and replica; EXTRA is appended to its coffer.toml),
# 1000 x 4 KiB uploaded once to warm it up, then 1000 x 4 KiB uploaded to new names with curl
# URL globbing on one connection, over HTTP/1.1 and then HTTP/2. curl's `time_total` of every
# upload gives: the sum, median, p90, p99 and maximum (ms), and the stalls (uploads over twice
# the median: how many, and the time they took beyond the median).
#
# Usage (from the repository root): benches/https/put_latency.sh [-r ROUNDS] BIN [BIN ...]
#   e.g. benches/https/put_latency.sh -r 3 /tmp/coffer-old target/release/coffer
#   EXTRA=$'[storage.replica]\nkind = "none"' benches/https/put_latency.sh A B
set -euo pipefail
. "$(dirname "$0")/serve.sh"
rounds=3
if [ "${1:-}" = "-r" ]; then rounds=$2; shift 2; fi
[ $# -ge 1 ] || { sed -n 2,14p "$0"; exit 2; }
small=$(mktemp -d /tmp/coffer-put-latency.XXXXXX)
trap 'rm -rf "$small"' EXIT
for i in $(seq 1 1000); do head -c 4096 /dev/urandom > "$small/f$i"; done

run_one() {
  local bin=$1 work port
  work=$(mktemp -d /tmp/coffer-put-latency-run.XXXXXX)
  port=$((20000 + RANDOM % 20000))
  coffer_setup "$bin" "$work" "$port"
  coffer_start "$bin" "$work" "$port"
  local c=("${BENCH_CURL[@]}")
  "${c[@]}" -T "$small/f[1-1000]" "https://127.0.0.1:$port/api/v1/files/warm/"
  sleep 3
  for proto in --http1.1 --http2; do
    "${c[@]}" $proto -w "%{time_total}\n" -T "$small/f[1-1000]" \
      "https://127.0.0.1:$port/api/v1/files/up$proto/" > "$work/times"
    python3 - "$bin" "$proto" "$work/times" <<'PY'
import statistics, sys
bin_, proto, path = sys.argv[1:]
v = sorted(float(x) * 1000 for x in open(path))
n, m = len(v), statistics.median(v)
stalls = [x for x in v if x > 2 * m]
print(f"{bin_:30} {proto:9} sum {sum(v):7.1f}  median {m:.3f}  p90 {v[int(n * .9)]:.3f}"
      f"  p99 {v[int(n * .99)]:6.3f}  max {v[-1]:6.2f}  stalls {len(stalls):3d},"
      f" {sum(x - m for x in stalls):6.1f} ms beyond the median")
PY
    sleep 3
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}

for _ in $(seq "$rounds"); do
  for bin in "$@"; do run_one "$bin"; done
done
