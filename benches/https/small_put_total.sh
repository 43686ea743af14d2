#!/usr/bin/env bash
# Whole server cost of 1000 small HTTPS uploads, replication included, for A/B comparisons of
# Coffer builds (no peer).
#
# For each binary given (alternating, ROUNDS times): a fresh `coffer serve` (HTTPS only, the
# embedded default: SQLite and a local replica directory) on a spare loopback port; 1000 x 4 KiB
# uploaded with curl URL globbing on one connection (HTTP/2, or what PROTO says). Prints the
# upload's wall seconds, the server's CPU ticks (1/100 s, user + system, from /proc) during the
# upload and in the 8 s after it (the background replication the upload caused), and how many
# objects the replica directory holds at the end (1000 once replication is complete). Extra
# TOML for the configuration file can be given in EXTRA, e.g.
# EXTRA=$'[storage.replica]\nkind = "none"'. QUOTA_FILES=N gives the user's tenant a quota of
# 1 TB and N more files before the server starts (rows of 4 KiB files written into meta.db with
# sqlite3, no objects behind them: they only weigh on the queries, as a tenant's history does),
# so that every upload checks the quota of a tenant with N files.
#
# Usage (from the repository root): benches/https/small_put_total.sh [-r ROUNDS] BIN [BIN ...]
#   e.g. benches/https/small_put_total.sh -r 3 /tmp/coffer-old target/release/coffer
set -euo pipefail
. "$(dirname "$0")/serve.sh"
rounds=3
if [ "${1:-}" = "-r" ]; then rounds=$2; shift 2; fi
[ $# -ge 1 ] || { sed -n 2,15p "$0"; exit 2; }

run_one() {
  local bin=$1 work port
  work=$(mktemp -d /tmp/coffer-put-total.XXXXXX)
  mkdir -p "$work/small"
  for i in $(seq 1 1000); do head -c 4096 /dev/urandom > "$work/small/f$i"; done
  port=$((20000 + RANDOM % 20000))
  coffer_setup "$bin" "$work" "$port"
  if [ -n "${QUOTA_FILES:-}" ]; then
    sqlite3 "$work/data/meta.db" <<EOT
UPDATE tenants SET quota_bytes = 1000000000000;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $QUOTA_FILES)
INSERT INTO nodes (id, tenant_id, parent_id, kind, name_enc, name_index, mtime_ms, ctime_ms,
  version, size, object_key, content_id, wrapped_dek, key_version, chunk_size, content_hash_enc)
SELECT 1000000000 + i, t.id, t.root_node_id, 'f', randomblob(40), randomblob(32), 0, 0, 1, 4096,
  lower(hex(randomblob(16))), randomblob(16), randomblob(72), 1, 65536, randomblob(60)
FROM n, tenants t;
EOT
    # A build that keeps a usage count (schema 7 on) counts the new rows too.
    if sqlite3 "$work/data/meta.db" "SELECT 1 FROM sqlite_master WHERE name = 'tenant_usage'" | grep -q 1; then
      sqlite3 "$work/data/meta.db" "DELETE FROM tenant_usage; INSERT INTO tenant_usage
        SELECT tenant_id, 0, SUM(size), COUNT(*) FROM nodes WHERE kind = 'f' GROUP BY tenant_id"
    fi
  fi
  coffer_start "$bin" "$work" "$port"
  sleep 1
  cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
  local c0 c1 c2 t0 t1 objects
  c0=$(cpu); t0=$(date +%s.%N)
  "${BENCH_CURL[@]}" "${PROTO:---http2}" \
    -T "$work/small/f[1-1000]" "https://127.0.0.1:$port/api/v1/files/small/"
  t1=$(date +%s.%N); c1=$(cpu)
  sleep 8
  c2=$(cpu)
  objects=$( (find "$work/data/store/replica" -type f -not -path "*/.tmp/*" 2>/dev/null || true) | wc -l)
  printf '%-40s wall %6.3f s  cpu during %4d  after %4d ticks  replica objects %d\n' "$bin" \
    "$(echo "$t1 - $t0" | bc)" $((c1 - c0)) $((c2 - c1)) "$objects"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}

for _ in $(seq "$rounds"); do
  for bin in "$@"; do run_one "$bin"; done
done
