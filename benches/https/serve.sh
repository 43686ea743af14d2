# Shared by the A/B scripts of this directory (sourced, not run): a fresh HTTPS-only
# `coffer serve` on the embedded default, with the user "bench".
#
#   coffer_setup BIN WORK PORT   writes WORK/coffer.toml (data in WORK/data, admin on PORT + 1,
#                                HTTPS on PORT, EXTRA appended) and adds the user
#   coffer_start BIN WORK PORT   starts `serve` (log in WORK/log), sets `pid`, waits for HTTPS
#   BENCH_CURL                   curl with the user's credentials, quiet, output discarded

BENCH_CURL=(curl -sS -k --fail -o /dev/null -u "bench:bench password 1")

coffer_setup() {
  local bin=$1 work=$2 port=$3
  cat > "$work/coffer.toml" <<EOT
data_dir = "$work/data"
[log]
level = "warn"
[admin]
listen = "127.0.0.1:$((port + 1))"
[sftp]
enabled = false
[ftp]
enabled = false
[https]
listen = "127.0.0.1:$port"
${EXTRA:-}
EOT
  env -i PATH="$PATH" HOME="$HOME" "$bin" --config "$work/coffer.toml" user add bench \
    --password-stdin <<< "bench password 1" > /dev/null
}

coffer_start() {
  local bin=$1 work=$2 port=$3
  env -i PATH="$PATH" HOME="$HOME" "$bin" --config "$work/coffer.toml" serve > "$work/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sk "https://127.0.0.1:$port/" -o /dev/null && break; sleep 0.1; done
}
