#!/usr/bin/env python3
"""Side-by-side SFTP benchmark: Coffer vs OpenSSH sshd (internal-sftp) on loopback.

Starts a release `coffer serve` and an `sshd` on spare loopback ports, then runs the same
OpenSSH `sftp` client against each, alternating, RUNS times per row: 1 GiB upload and
download (aes256-gcm and chacha20-poly1305), 1000 x 4 KiB upload and download (both ciphers)
and 1000 x 4 KiB upload with `put -f` (each file flushed on both servers). Prints the
median wall time, throughput, the ratio Coffer / OpenSSH (throughput; >= 1.0 means Coffer is
at least as fast), server CPU seconds and peak server RSS per row.

Usage (from the repository root; needs openssh-server and openssh-client; COFFER_BIN
overrides the binary):
    cargo build --release -p coffer
    python3 benches/sftp/compare.py [--runs 3] [--size-mib 1024] [--small 1000] [--only LABEL]
        [--history BIG_GIB,SMALL_COUNT]

`--history 30,10000` (issue 16): after the selected rows (and the `ls -l` row), both servers get
the same history over SFTP (`sftp -b`: 30 `put`s of one 1 GiB file replacing `history/big.bin`,
then `put` of 10,000 distinct 4 KiB files into `history/small/`; Coffer first, and each of its
big uploads waits until the collector has deleted the object it replaced, about 60-120 s, so
at most one replaced GiB is on disk at a time), a summary line gives each server's time and
on-disk data size, and the selected small-file rows run again, labelled "(history)". See
benches/common.py, `apply_history`. For a short check, the undocumented
`--history-big-mib N` (default 1024) makes the "big" file N MiB.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from common import (HISTORY_SUFFIX, HistoryTarget, add_history_args, apply_history,  # noqa: E402
                    PeakRss, clean_env, free_port, tree_cpu_seconds, tree_rss_bytes, wait_port)


def start_coffer(work, key_pub, port):
    """A `coffer serve` with SFTP only on `port`, user `bench` logging in with `key_pub`."""
    coffer = os.environ.get("COFFER_BIN") or os.path.join(ROOT, "target", "release", "coffer")
    if not os.path.exists(coffer):
        sys.exit("build it first: cargo build --release -p coffer")
    conf = os.path.join(work, "coffer.toml")
    with open(conf, "w") as f:
        f.write(
            f'data_dir = "{work}/coffer-data"\n'
            f'[log]\nlevel = "warn"\n'
            f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
            f'[sftp]\nlisten = "127.0.0.1:{port}"\n'
            f"[ftp]\nenabled = false\n[https]\nenabled = false\n"
        )
    subprocess.run([coffer, "--config", conf, "user", "add", "bench", "--ssh-key", key_pub], check=True,
                   stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=clean_env())
    log = open(os.path.join(work, "coffer.log"), "w")
    proc = subprocess.Popen([coffer, "--config", conf, "serve"], stdout=log, stderr=log, env=clean_env())
    wait_port(port)
    return proc


def start_sshd(work, key_pub, port):
    """An `sshd -D` on `port` with internal-sftp, the two benchmarked ciphers and `key_pub`."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    host_key = os.path.join(work, "sshd_host_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True)
    conf = os.path.join(work, "sshd_config")
    with open(conf, "w") as f:
        f.write(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {key_pub}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            f"PermitRootLogin yes\nPidFile {work}/sshd.pid\nSubsystem sftp internal-sftp\n"
            "Ciphers aes256-gcm@openssh.com,chacha20-poly1305@openssh.com\n"
        )
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", conf], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, "sshd.log"), "w"))
    wait_port(port)
    return proc


def sftp(port, key, cipher, script, cwd):
    """Wall seconds of one `sftp -b` run of `script` against the server on `port`."""
    user = "bench" if port == SERVERS["coffer"][1] else os.environ.get("USER", "root")
    batch = os.path.join(cwd, "batch.txt")
    with open(batch, "w") as f:
        f.write(script)
    cmd = ["sftp", "-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           "-o", "LogLevel=ERROR", "-i", key, "-c", cipher, "-P", str(port), "-b", batch, f"{user}@127.0.0.1"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


SERVERS = {}


def main():
    """Parses the options, starts both servers, measures and prints every selected row."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--only", default="", help="run only the rows whose label contains this")
    ap.add_argument("--listing", type=int, default=10000,
                    help="files in one folder for the `ls -l` row (0 skips it)")
    add_history_args(ap)
    args = ap.parse_args()
    if args.history and not any(args.only in label and is_small(label) for label, *_ in build_rows(args)):
        ap.error("--history re-runs the small-file rows, and --only selects none of them")
    work = tempfile.mkdtemp(prefix="coffer-sftp-bench-")
    key = os.path.join(work, "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    local = os.path.join(work, "local")
    remote_ssh = os.path.join(work, "sshd-remote")
    os.makedirs(os.path.join(local, "small"))
    os.makedirs(remote_ssh)
    big = os.path.join(local, "big")
    subprocess.run(f"head -c {args.size_mib}M /dev/urandom > {big}", shell=True, check=True)
    for i in range(args.small):
        with open(os.path.join(local, "small", f"s{i:04}"), "wb") as f:
            f.write(os.urandom(4096))

    cport, sport = free_port(), free_port()
    coffer = start_coffer(work, key + ".pub", cport)
    sshd = start_sshd(work, key + ".pub", sport)
    try:
        time.sleep(1)
        idle = {"coffer": tree_rss_bytes(coffer.pid), "openssh": tree_rss_bytes(sshd.pid)}
        print(f"idle RSS: coffer {idle['coffer'] / 2**20:.0f} MiB, sshd {idle['openssh'] / 2**20:.0f} MiB")
        SERVERS["coffer"] = (coffer, cport, "/")
        SERVERS["openssh"] = (sshd, sport, remote_ssh + "/")
        # Create the remote folder for small files once per server.
        for name, (_, port, base) in SERVERS.items():
            sftp(port, key, "aes256-gcm@openssh.com", f"-mkdir {base}small\n", local)
        os.makedirs(os.path.join(local, "small.back"))
        rows = [r for r in build_rows(args) if args.only in r[0]]
        results = [measure_row(args, key, local, *row) for row in rows]
        if args.listing:
            bench_listing(args, key, local)
        if args.history:
            apply_history(args, work, history_targets(key, local, work, remote_ssh))
            results += [measure_row(args, key, local, label + HISTORY_SUFFIX, *rest)
                        for label, *rest in rows if is_small(label)]
        print_table(results)
    finally:
        for proc in (coffer, sshd):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def build_rows(args):
    """Every row: (label, cipher, batch script for a remote base folder, bytes moved)."""
    rows = []
    for cipher in ["aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]:
        rows.append((f"{args.size_mib} MiB upload, {cipher}", cipher, lambda b: f"put big {b}big\n", args.size_mib << 20))
        rows.append((f"{args.size_mib} MiB download, {cipher}", cipher, lambda b: f"get {b}big big.back\n", args.size_mib << 20))
    for cipher in ["aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]:
        rows.append((f"{args.small} x 4 KiB upload, {cipher}", cipher,
                     lambda b: f"put small/* {b}small/\n", args.small * 4096))
        rows.append((f"{args.small} x 4 KiB download, {cipher}", cipher,
                     lambda b: f"get {b}small/* small.back/\n", args.small * 4096))
    # Both servers durable: `put -f` asks for fsync@openssh.com after each file, so
    # sftp-server flushes every file as Coffer always does before it answers (invariant 2).
    rows.append((f"{args.small} x 4 KiB upload, each flushed (put -f), aes256-gcm@openssh.com",
                 "aes256-gcm@openssh.com", lambda b: f"put -f small/* {b}small/\n", args.small * 4096))
    return rows


def is_small(label):
    """Whether a row is one of the small-file rows (run again on the servers with history)."""
    return " x 4 KiB " in label


def measure_row(args, key, local, label, cipher, script, nbytes):
    """Runs one row RUNS times on each server, alternating; prints and returns its figures."""
    samples = {"coffer": [], "openssh": []}
    cpu = {"coffer": [], "openssh": []}
    peak = {"coffer": 0, "openssh": 0}
    for _ in range(args.runs):
        for name in ["coffer", "openssh"]:
            proc, port, base = SERVERS[name]
            c0 = tree_cpu_seconds(proc.pid)
            with PeakRss(proc.pid) as p:
                samples[name].append(sftp(port, key, cipher, script(base), local))
            cpu[name].append(tree_cpu_seconds(proc.pid) - c0)
            peak[name] = max(peak[name], p.peak)
    print_row(label, nbytes, samples, cpu, peak, flush=True)
    return label, nbytes, samples, cpu, peak


def history_targets(key, local, work, remote_ssh):
    """Coffer and sshd as `apply_history` targets: uploads with `sftp -b` `put`."""
    cipher = "aes256-gcm@openssh.com"

    def target(name, data_dir, garbage_dir=None):
        """The server `name`, its `history/small/` folder made."""
        _, port, base = SERVERS[name]
        sftp(port, key, cipher, f"mkdir {base}history\nmkdir {base}history/small\n", local)
        return HistoryTarget(
            name, data_dir,
            lambda f: sftp(port, key, cipher, f"put {f} {base}history/big.bin\n", local),
            lambda d: sftp(port, key, cipher, f"put {d}/* {base}history/small/\n", local),
            garbage_dir)

    data = os.path.join(work, "coffer-data")
    return [target("coffer", data, os.path.join(data, "store", "primary")), target("openssh", remote_ssh)]


def print_table(results):
    """The final markdown table of every measured row."""
    print("\n| Row | Coffer MB/s | OpenSSH MB/s | Coffer / OpenSSH | CPU s Coffer | CPU s OpenSSH | peak RSS Coffer | peak RSS OpenSSH |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print_row(*r, table=True)


def bench_listing(args, key, local):
    """`ls -l` of one folder holding args.listing files: Coffer decrypts every name (one
    indexed query plus name decryption); sftp-server reads a local directory. Times include
    the SSH handshake, the same for both. Target: Coffer within 1.5x of OpenSSH."""
    many = os.path.join(local, "many")
    os.makedirs(many, exist_ok=True)
    for i in range(args.listing):
        open(os.path.join(many, f"file-{i:05}.dat"), "wb").close()
    for _, port, base in SERVERS.values():
        sftp(port, key, "aes256-gcm@openssh.com", f"-mkdir {base}many\nput many/* {base}many/\n", local)
    times = {"coffer": [], "openssh": []}
    for _ in range(max(args.runs, 3)):
        for name in ["coffer", "openssh"]:
            _, port, base = SERVERS[name]
            times[name].append(sftp(port, key, "aes256-gcm@openssh.com", f"ls -l {base}many\n", local))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"ls -l of {args.listing} files: coffer {med['coffer'] * 1000:.0f} ms, "
          f"openssh {med['openssh'] * 1000:.0f} ms, coffer / openssh time {med['coffer'] / med['openssh']:.2f} "
          "(target <= 1.5)", flush=True)


def print_row(label, nbytes, samples, cpu, peak, table=False, flush=False):
    """One row's medians: a live line, or a markdown table row with `table`."""
    mbps = {k: nbytes / statistics.median(v) / 1e6 for k, v in samples.items()}
    ratio = mbps["coffer"] / mbps["openssh"]
    cells = [label, f"{mbps['coffer']:.1f}", f"{mbps['openssh']:.1f}", f"{ratio:.2f}",
             f"{statistics.median(cpu['coffer']):.2f}", f"{statistics.median(cpu['openssh']):.2f}",
             f"{peak['coffer'] / 2**20:.0f} MiB", f"{peak['openssh'] / 2**20:.0f} MiB"]
    if table:
        print("| " + " | ".join(cells) + " |")
    else:
        print("  ".join(cells), flush=flush)


if __name__ == "__main__":
    main()
