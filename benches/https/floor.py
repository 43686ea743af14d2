#!/usr/bin/env python3
"""Small HTTPS requests: Coffer, nginx, and the floor of Coffer's own HTTP stack, side by side.

`benches/src/bin/https_floor.rs` is a server built from the crates Coffer's HTTPS front end
is built from (tokio, rustls with aws-lc-rs, hyper-util, axum) that does none of Coffer's
work: it answers a `GET` with 4 KiB from memory and takes a `PUT` without storing it, or,
under `/durable/`, appending it to one file and flushing that (`fdatasync`) before it
answers, as invariant 2 asks of every upload. Where the floor is itself below nginx, no work
of Coffer's can lift Coffer above the floor's ratio.

Rows (curl URL globbing on one connection, as `compare.py`'s `small` rows): 1000 x 4 KiB
downloads and uploads over HTTP/1.1 and HTTP/2. Every run alternates the servers (the order
rotates per run); medians of RUNS; each server's CPU-seconds are counted from a quiet server
to a quiet server (`settled_cpu`), Coffer's replication included.

Usage (from the repository root; needs nginx and curl):
    cargo build --release -p coffer -p coffer-benches
    python3 benches/https/floor.py [--runs 5]
COFFER_BIN and FLOOR_BIN override the binaries (default: CARGO_TARGET_DIR or target/, release).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare import PASSWORD, ROOT, USER, curl, start_coffer, start_nginx  # noqa: E402
from common import free_port, wait_port  # noqa: E402


def start_floor(work, port, tls_dir):
    """The stack's floor on `port`, with Coffer's certificate."""
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    floor = os.environ.get("FLOOR_BIN") or os.path.join(target, "release", "https_floor")
    if not os.path.exists(floor):
        sys.exit("build it first: cargo build --release -p coffer-benches --bin https_floor")
    data = os.path.join(work, "floor")
    os.makedirs(data)
    proc = subprocess.Popen([floor, f"127.0.0.1:{port}", f"{tls_dir}/cert.pem",
                             f"{tls_dir}/key.pem", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


def main():
    """Starts the three servers, runs the rows, prints medians and ratios to nginx."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="coffer-https-floor-")
    small = os.path.join(work, "small")
    os.makedirs(small)
    for i in range(1, 1001):
        with open(os.path.join(small, f"f{i}"), "wb") as f:
            f.write(os.urandom(4096))
    files = os.path.join(small, "f[1-1000]")
    cport, nport, fport = free_port(), free_port(), free_port()
    coffer, tls_dir = start_coffer(work, cport)
    nginx, root = start_nginx(work, nport, tls_dir)
    floor = start_floor(work, fport, tls_dir)
    procs = [coffer, nginx, floor]
    try:
        creds = ["-u", f"{USER}:{PASSWORD}"]
        c, n, fl = (f"https://127.0.0.1:{p}" for p in (cport, nport, fport))
        curl([*creds, "-T", files, f"{c}/api/v1/files/small/"], coffer)
        shutil.copytree(small, os.path.join(root, "small"))
        print(f"{args.runs} runs per row, servers alternating; medians: wall s / server CPU-s;"
              " ratio = nginx's wall / the server's (>= 1.0: at least as fast as nginx)")
        print(f"{'row':30} {'server':16} {'wall s':>7} {'CPU s':>6} {'ratio':>6}")
        for proto in ["--http1.1", "--http2"]:
            name = "HTTP/1.1" if proto == "--http1.1" else "HTTP/2"
            rows = [
                (f"download 1000x4KiB {name}", [
                    ("coffer", lambda p=proto: curl([p, *creds, f"{c}/api/v1/files/small/f[1-1000]"],
                                                    coffer)),
                    ("nginx", lambda p=proto: curl([p, f"{n}/small/f[1-1000]"], nginx)),
                    ("floor", lambda p=proto: curl([p, f"{fl}/f/f[1-1000]"], floor)),
                ]),
                (f"upload 1000x4KiB {name}", [
                    ("coffer", lambda p=proto: curl([p, *creds, "-T", files, f"{c}/api/v1/files/up/"],
                                                    coffer)),
                    ("nginx", lambda p=proto: curl([p, "-T", files, f"{n}/upload/up/"], nginx)),
                    ("floor", lambda p=proto: curl([p, "-T", files, f"{fl}/f/"], floor)),
                    ("floor + fdatasync", lambda p=proto: curl([p, "-T", files, f"{fl}/durable/"],
                                                               floor)),
                ]),
            ]
            for label, servers in rows:
                runs = {s: [] for s, _ in servers}
                for i in range(args.runs):
                    k = i % len(servers)
                    for s, fn in servers[k:] + servers[:k]:
                        runs[s].append(fn())
                nginx_wall = statistics.median(t for t, _ in runs["nginx"])
                for s, _ in servers:
                    wall = statistics.median(t for t, _ in runs[s])
                    cpu = statistics.median(u for _, u in runs[s])
                    print(f"{label:30} {s:16} {wall:7.3f} {cpu:6.2f} {nginx_wall / wall:6.2f}",
                          flush=True)
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
