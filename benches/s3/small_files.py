#!/usr/bin/env python3
"""Small files onto S3: files per second, server CPU-seconds and S3 requests per file.

Issue 16's S3 row ("1000 x 4 KiB onto S3 (s3s-fs): report files/s before and after"). Starts
two real S3 servers (s3s-fs, integration/start-s3) as the primary and the replica bucket, and
one release `coffer serve` (SFTP only) per binary given with --bin, each on its own buckets'
prefix-free data (every server gets a fresh pair of buckets). The same OpenSSH `sftp` client
puts SMALL files of 4 KiB into a fresh folder, alternating the binaries, RUNS times. Per binary
it prints the median files/s, how long after the client finished the replica bucket held every
file, the server's CPU-seconds per run from quiet to quiet (the replication of those files runs
in the background and belongs to them), and the S3 requests the primary and the replica served
per file.

Usage (from the repository root; needs openssh-client, curl; s3s-fs is installed by
integration/start-s3 on first use):
    cargo build --release -p coffer
    python3 benches/s3/small_files.py --bin after=target/release/coffer \
        [--bin before=/path/to/older/coffer] [--runs 5] [--small 1000]
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


def start_s3(state):
    out = subprocess.run([os.path.join(ROOT, "integration", "start-s3")], check=True, text=True,
                         capture_output=True, env={**os.environ, "COFFER_S3_STATE": state}).stdout
    env = {}
    for line in out.splitlines():
        if line.startswith("export "):
            k, v = line[len("export "):].split("=", 1)
            env[k] = v.strip().strip("'\"")
    return env


def s3_ops(state, which):
    """Total requests the server `which` (primary|replica) has served so far."""
    out = subprocess.run([os.path.join(ROOT, "integration", "start-s3"), "ops", which],
                         text=True, capture_output=True,
                         env={**os.environ, "COFFER_S3_STATE": state}).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if line.strip())


def make_bucket(state, which, bucket):
    """Creates `bucket` on the server `which` (s3s-fs keeps each bucket as a folder of its
    root, as integration/start-s3 makes its own)."""
    os.makedirs(os.path.join(state, which, bucket), exist_ok=True)


def start_coffer(work, name, binary, key_pub, s3, state):
    home = os.path.join(work, name)
    os.makedirs(home)
    port = free_port()
    stores = ""
    for region, endpoint_var in (("primary", "COFFER_TEST_S3_ENDPOINT"),
                                 ("replica", "COFFER_TEST_S3_REPLICA_ENDPOINT")):
        bucket = f"bench-{name}-{region}"
        make_bucket(state, region, bucket)
        stores += (f'[storage.{region}]\nkind = "s3"\nbucket = "{bucket}"\nregion = "us-east-1"\n'
                   f'endpoint = "{s3[endpoint_var]}"\npath_style = true\n'
                   f'access_key_id = "{s3["COFFER_TEST_S3_ACCESS_KEY"]}"\n'
                   f'secret_access_key = "{s3["COFFER_TEST_S3_SECRET_KEY"]}"\n')
    conf = os.path.join(home, "coffer.toml")
    with open(conf, "w") as f:
        f.write(f'data_dir = "{home}/coffer-data"\n[log]\nlevel = "warn"\n'
                f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
                f'[sftp]\nlisten = "127.0.0.1:{port}"\n'
                f"[ftp]\nenabled = false\n[https]\nenabled = false\n" + stores)
    subprocess.run([binary, "--config", conf, "user", "add", "bench", "--ssh-key", key_pub],
                   check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=clean_env())
    log = open(os.path.join(home, "coffer.log"), "w")
    proc = subprocess.Popen([binary, "--config", conf, "serve"], stdout=log, stderr=log,
                            env=clean_env())
    wait_port(port)
    return proc, port


def objects_in(state, which, bucket):
    """Objects in a bucket of s3s-fs (a file per object; Coffer's keys are 32 hex digits)."""
    n = 0
    for _, _, files in os.walk(os.path.join(state, which, bucket)):
        n += sum(1 for f in files if len(f) == 32 and all(c in "0123456789abcdef" for c in f))
    return n


def wait_replicated(state, bucket, want, limit=300):
    """Seconds until the replica bucket holds `want` objects."""
    start = time.perf_counter()
    while objects_in(state, "replica", bucket) < want:
        if time.perf_counter() - start > limit:
            sys.exit(f"the replica bucket {bucket} did not reach {want} objects in {limit} s")
        time.sleep(0.05)
    return time.perf_counter() - start


def sftp(port, key, script, cwd):
    batch = os.path.join(cwd, "batch.txt")
    with open(batch, "w") as f:
        f.write(script)
    start = time.perf_counter()
    subprocess.run(["sftp", "-q", "-o", "StrictHostKeyChecking=no", "-o",
                    "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-i", key,
                    "-P", str(port), "-b", batch, "bench@127.0.0.1"],
                   check=True, cwd=cwd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--small", type=int, default=1000)
    args = ap.parse_args()
    bins = [b.split("=", 1) for b in args.bin]
    work = tempfile.mkdtemp(prefix="coffer-s3-small-")
    state = os.path.join(work, "s3")
    key = os.path.join(work, "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    local = os.path.join(work, "local")
    os.makedirs(os.path.join(local, "small"))
    for i in range(args.small):
        with open(os.path.join(local, "small", f"s{i:04}"), "wb") as f:
            f.write(os.urandom(4096))
    procs = {}
    try:
        s3 = start_s3(state)
        for name, binary in bins:
            procs[name] = start_coffer(work, name, binary, key + ".pub", s3, state)
        results = {name: [] for name, _ in bins}
        for run in range(args.runs):
            order = bins if run % 2 == 0 else list(reversed(bins))
            for name, _ in order:
                proc, port = procs[name]
                cpu0 = settled_cpu(proc.pid)
                p0, r0 = s3_ops(state, "primary"), s3_ops(state, "replica")
                wall = sftp(port, key, f"mkdir r{run}\nput small/* r{run}/\n", local)
                lag = wait_replicated(state, f"bench-{name}-replica", (run + 1) * args.small)
                cpu = settled_cpu(proc.pid) - cpu0
                p1, r1 = s3_ops(state, "primary"), s3_ops(state, "replica")
                results[name].append((wall, cpu, p1 - p0, r1 - r0, lag))
        print(f"{args.small} x 4 KiB over SFTP onto S3 (s3s-fs), {args.runs} runs alternating, "
              "medians")
        print("| binary | files/s | server CPU-s | primary S3 requests/file | "
              "replica S3 requests/file | replica complete after (s) |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, _ in bins:
            r = results[name]
            wall = statistics.median(x[0] for x in r)
            cpu = statistics.median(x[1] for x in r)
            prim = statistics.median(x[2] for x in r) / args.small
            repl = statistics.median(x[3] for x in r) / args.small
            lag = statistics.median(x[4] for x in r)
            print(f"| {name} | {args.small / wall:.0f} | {cpu:.2f} | {prim:.2f} | {repl:.2f} "
                  f"| {lag:.1f} |")
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run([os.path.join(ROOT, "integration", "start-s3"), "stop"],
                       env={**os.environ, "COFFER_S3_STATE": state}, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
