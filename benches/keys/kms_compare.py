#!/usr/bin/env python3
"""Upload and download throughput with tenant keys under AWS KMS master keys vs local key files.

Issue 15's benchmark: once a tenant key is unwrapped it is cached (`keys.cache_secs`), so a
transfer makes no KMS call and the KMS provider should cost nothing per byte. This starts two
release `coffer serve` processes (HTTPS only) on loopback, the same in all but `[keys]`:

- `local`: the embedded default, generated local master key files;
- `kms`:   both regions' master keys are keys of a KMS test server (moto's server mode, started
           with integration/start-kms; it speaks the real KMS wire protocol to aws-sdk-kms).

Each row runs RUNS pairs alternating the two servers (curl, HTTP/2, one file of SIZE MiB; the
first of a pair alternates too) and prints the median wall time, throughput, the server's
CPU-seconds for the transfer including the replication it caused (measured from quiet to
quiet; without that, background replication of the previous upload landed in random rows and
the CPU figures swung by 50 %), the ratio of the medians kms / local (throughput; >= 0.98 is the
target), and the median and range of the per-pair ratios: on a noisy machine a pair shares the
minute's disk and CPU, so its ratio is steadier than either server's own figure.

Usage (from the repository root; needs curl, python3 with boto3 — moto[server] brings it):
    cargo build --release -p coffer
    python3 benches/keys/kms_compare.py [--runs 5] [--size-mib 256]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from common import clean_env, free_port, settled_cpu, wait_port  # noqa: E402
USER, PASSWORD = "bench", "bench password 1"
ACCESS, SECRET = "coffer-bench", "coffer-bench-secret"


def start_kms(state):
    """Starts moto's KMS server; returns its endpoint."""
    out = subprocess.run([os.path.join(ROOT, "integration", "start-kms")], check=True, text=True,
                         capture_output=True, env={**os.environ, "COFFER_KMS_STATE": state}).stdout
    for line in out.splitlines():
        if "COFFER_TEST_KMS_ENDPOINT=" in line:
            return line.split("=", 1)[1].strip().strip("'\"")
    sys.exit(f"integration/start-kms printed no endpoint:\n{out}")


def create_key(endpoint, region):
    import boto3
    kms = boto3.client("kms", endpoint_url=endpoint, region_name=region,
                       aws_access_key_id=ACCESS, aws_secret_access_key=SECRET)
    return kms.create_key(Description="coffer kms bench")["KeyMetadata"]["Arn"]


def kms_keys_toml(endpoint):
    toml = ""
    for region, kms_region in (("primary", "eu-west-1"), ("replica", "eu-central-1")):
        toml += (f'[keys.{region}]\nkind = "aws-kms"\nkey_id = "{create_key(endpoint, kms_region)}"\n'
                 f'region = "{kms_region}"\nendpoint = "{endpoint}"\n'
                 f'access_key_id = "{ACCESS}"\nsecret_access_key = "{SECRET}"\n')
    return toml


def start_coffer(work, name, keys_toml):
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    coffer = os.environ.get("COFFER_BIN") or os.path.join(target, "release", "coffer")
    if not os.path.exists(coffer):
        sys.exit("build it first: cargo build --release -p coffer")
    port = free_port()
    home = os.path.join(work, name)
    os.makedirs(home)
    conf = os.path.join(home, "coffer.toml")
    with open(conf, "w") as f:
        f.write(f'data_dir = "{home}/coffer-data"\n[log]\nlevel = "warn"\n'
                f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
                f"[sftp]\nenabled = false\n[ftp]\nenabled = false\n"
                f'[https]\nlisten = "127.0.0.1:{port}"\n' + keys_toml)
    subprocess.run([coffer, "--config", conf, "user", "add", USER, "--password-stdin"], check=True,
                   input=f"{PASSWORD}\n", text=True, stdout=subprocess.DEVNULL, env=clean_env())
    log = open(os.path.join(home, "coffer.log"), "w")
    proc = subprocess.Popen([coffer, "--config", conf, "serve"], stdout=log, stderr=log,
                            env=clean_env())
    wait_port(port)
    return proc, f"https://127.0.0.1:{port}"


def timed(proc, args):
    """Wall seconds of one curl transfer, and the server's CPU-seconds for it including the
    background work it caused (replication), measured from quiet to quiet."""
    cpu0 = settled_cpu(proc.pid)
    start = time.perf_counter()
    subprocess.run(["curl", "-sS", "-k", "--fail", "--http2", "-u", f"{USER}:{PASSWORD}",
                    "-o", "/dev/null", *args], check=True)
    wall = time.perf_counter() - start
    return wall, settled_cpu(proc.pid) - cpu0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--size-mib", type=int, default=256)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="coffer-kms-bench-")
    big = os.path.join(work, "big")
    subprocess.run(f"head -c {args.size_mib}M /dev/urandom > {big}", shell=True, check=True)
    state = os.path.join(work, "kms-server")
    procs = []
    try:
        endpoint = start_kms(state)
        servers = {}
        for name, keys in (("local", ""), ("kms", kms_keys_toml(endpoint))):
            proc, base = start_coffer(work, name, keys)
            procs.append(proc)
            servers[name] = (proc, base)
            # The download source, and the first use of the tenant key (the one KMS call).
            timed(proc, ["-T", big, f"{base}/api/v1/files/big"])
        print(f"{args.runs} pairs per row, alternating; medians; ratio = kms throughput / local")
        print(f"{'row':22} {'local s':>8} {'MB/s':>6} {'cpu s':>6} {'kms s':>8} {'MB/s':>6} "
              f"{'cpu s':>6} {'ratio':>6} {'pairs: median':>14} {'range':>11}")
        mb = args.size_mib * 1048576 / 1e6
        rows = [("upload", lambda b: ["-T", big, f"{b}/api/v1/files/up"]),
                ("download", lambda b: [f"{b}/api/v1/files/big"])]
        for label, curl_args in rows:
            results = {"local": [], "kms": []}
            for i in range(args.runs):
                order = ["local", "kms"] if i % 2 == 0 else ["kms", "local"]
                for name in order:
                    proc, base = servers[name]
                    results[name].append(timed(proc, curl_args(base)))
            (lw, lc), (kw, kc) = [(statistics.median(w for w, _ in results[n]),
                                   statistics.median(c for _, c in results[n]))
                                  for n in ("local", "kms")]
            pairs = sorted(l_w / k_w for (l_w, _), (k_w, _) in zip(results["local"],
                                                                     results["kms"]))
            print(f"{label + f' {args.size_mib} MiB h2':22} {lw:8.2f} {mb / lw:6.0f} {lc:6.2f} "
                  f"{kw:8.2f} {mb / kw:6.0f} {kc:6.2f} {lw / kw:6.2f} "
                  f"{statistics.median(pairs):14.2f} {pairs[0]:5.2f}-{pairs[-1]:<5.2f}", flush=True)
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run([os.path.join(ROOT, "integration", "start-kms"), "stop"],
                       env={**os.environ, "COFFER_KMS_STATE": state}, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
