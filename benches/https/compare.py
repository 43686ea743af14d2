#!/usr/bin/env python3
"""Side-by-side HTTPS benchmark: Coffer vs nginx on loopback, both driven by curl.

Starts a release `coffer serve` (HTTPS only) and an nginx (Debian package) on spare loopback
ports with the same certificate (Coffer's self-signed one), TLS 1.3 for both. nginx serves
the same 1 GiB file from disk and takes uploads in a WebDAV `PUT` location; Coffer decrypts
on download and encrypts on upload. Each row runs RUNS times alternating the two servers.
Prints the median wall time, throughput, server CPU-seconds (user + system of the server's
processes: Coffer's one process, nginx's master and workers; each run starts on a quiet
server and is counted until the server is quiet again, so an upload's background replication
counts for it) and the ratio
Coffer / nginx (throughput; >= 1.0 means Coffer is at least as fast) for:

* `big`: download and upload of one SIZE_MIB file over HTTP/1.1 and HTTP/2;
* `small`: 1000 x 4 KiB files uploaded (`curl -T 'dir/f[1-1000]' URL/`) and downloaded
  (`curl 'URL/f[1-1000]'`), curl URL globbing on one connection, HTTP/2 and HTTP/1.1;
* `list` (Coffer alone): 200 `GET /api/v1/list/` of a near-empty folder on one keep-alive
  connection, with Basic and with a bearer token: milliseconds per request and CPU-seconds.

Usage (from the repository root; needs nginx and curl; COFFER_BIN overrides the binary):
    cargo build --release -p coffer
    python3 benches/https/compare.py [--runs 5] [--size-mib 1024] [--rows big,small]
        [--history BIG_GIB,SMALL_COUNT]

`--history 30,10000` (issue 16, needs `small` in --rows): after the selected rows, both servers
get the same history with curl `PUT` (Coffer's `/api/v1/files/`, nginx's WebDAV `/upload/`):
30 uploads of one 1 GiB file replacing `history/big.bin`, then 10,000 distinct 4 KiB files
into `history/small/` (one curl, URL globbing); Coffer first, and each of its big uploads waits
until the collector has deleted the object it replaced, about 60-120 s, so at most one
replaced GiB is on disk at a time. A summary line gives each server's time and on-disk data
size, then the small-file rows run again, labelled "(history)". See benches/common.py,
`apply_history`. For a short check, the undocumented `--history-big-mib N` (default 1024)
makes the "big" file N MiB.
"""

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from common import (HISTORY_SUFFIX, HistoryTarget, add_history_args, apply_history,  # noqa: E402
                    clean_env, free_port, settled_cpu, wait_port)
USER, PASSWORD = "bench", "bench password 1"


def start_coffer(work, port):
    """A `coffer serve` with HTTPS only on `port`; returns (process, its TLS directory)."""
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    coffer = os.environ.get("COFFER_BIN") or os.path.join(target, "release", "coffer")
    if not os.path.exists(coffer):
        sys.exit("build it first: cargo build --release -p coffer")
    conf = os.path.join(work, "coffer.toml")
    with open(conf, "w") as f:
        f.write(
            f'data_dir = "{work}/coffer-data"\n'
            f'[log]\nlevel = "warn"\n'
            f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
            f"[sftp]\nenabled = false\n[ftp]\nenabled = false\n"
            f'[https]\nlisten = "127.0.0.1:{port}"\n'
        )
    subprocess.run([coffer, "--config", conf, "user", "add", USER, "--password-stdin"], check=True,
                   input=f"{PASSWORD}\n", text=True, stdout=subprocess.DEVNULL, env=clean_env())
    log = open(os.path.join(work, "coffer.log"), "w")
    proc = subprocess.Popen([coffer, "--config", conf, "serve"], stdout=log, stderr=log, env=clean_env())
    wait_port(port)
    return proc, os.path.join(work, "coffer-data", "tls")


def start_nginx(work, port, tls_dir):
    """An nginx on `port` with Coffer's certificate; returns (process, its root)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    root = os.path.join(work, "nginx-root")
    os.makedirs(os.path.join(root, "upload"), exist_ok=True)
    tmp = os.path.join(work, "nginx-root", ".tmp")
    os.makedirs(tmp, exist_ok=True)
    conf = os.path.join(work, "nginx.conf")
    # Workers run as this user so they can read the private temp directory.
    user_line = f"user {pwd.getpwuid(os.getuid()).pw_name};" if os.getuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(f"""
daemon off;
{user_line}
worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {tmp};
    proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {tls_dir}/cert.pem;
        ssl_certificate_key {tls_dir}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        root {root};
        location /upload/ {{
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
            client_body_buffer_size 1m;
        }}
    }}
}}
""")
    proc = subprocess.Popen([nginx, "-c", conf, "-e", os.path.join(work, "nginx-error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, root


def tree_cpu(pid):
    """User + system seconds of `pid` and its descendants (nginx workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, cpu = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(d)] = int(fields[1])
        cpu[int(d)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo.extend(c for c, pp in parents.items() if pp == p)
    return total


def curl(args, server):
    """Wall seconds and the server's CPU-seconds of one curl run. The run starts on a quiet
    server, and its CPU-seconds are read once the server is quiet again: the background work
    an upload causes (Coffer's replica copies) counts for that upload, not the next row."""
    c0 = settled_cpu(server.pid, measure=tree_cpu)
    start = time.perf_counter()
    subprocess.run(["curl", "-sS", "-k", "--fail", "-o", "/dev/null", *args], check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return wall, settled_cpu(server.pid, measure=tree_cpu) - c0


def main():
    """Parses the options, starts both servers, runs the selected rows and cleans up."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rows", default="big,small,list",
                    help="any of big, small, list (comma-separated)")
    add_history_args(ap)
    args = ap.parse_args()
    kinds = set(args.rows.split(","))
    if args.history and "small" not in kinds:
        ap.error("--history re-runs the small-file rows: add small to --rows")
    work = tempfile.mkdtemp(prefix="coffer-https-bench-")
    big = os.path.join(work, "big")
    subprocess.run(f"head -c {args.size_mib}M /dev/urandom > {big}", shell=True, check=True)
    small_dir = os.path.join(work, "small")
    os.makedirs(small_dir)
    for i in range(1, 1001):
        with open(os.path.join(small_dir, f"f{i}"), "wb") as f:
            f.write(os.urandom(4096))
    small_glob = os.path.join(small_dir, "f[1-1000]")

    cport, nport = free_port(), free_port()
    coffer, tls_dir = start_coffer(work, cport)
    nginx, root = start_nginx(work, nport, tls_dir)
    try:
        creds = ["-u", f"{USER}:{PASSWORD}"]
        cbase, nbase = f"https://127.0.0.1:{cport}", f"https://127.0.0.1:{nport}"
        rows = []  # (label, bytes moved, coffer run, nginx run)
        mb = args.size_mib * 1048576
        if "big" in kinds:
            # The download source: the same bytes on both servers.
            curl([*creds, "-T", big, f"{cbase}/api/v1/files/big"], coffer)
            shutil.copyfile(big, os.path.join(root, "big"))
        if "small" in kinds:
            curl([*creds, "-T", small_glob, f"{cbase}/api/v1/files/small/"], coffer)
            shutil.copytree(small_dir, os.path.join(root, "small"))
        for proto in ["--http1.1", "--http2"]:
            name = "HTTP/1.1" if proto == "--http1.1" else "HTTP/2"
            if "big" in kinds:
                rows.append((f"download {args.size_mib} MiB {name}", mb,
                             lambda p=proto: curl([p, *creds, f"{cbase}/api/v1/files/big"], coffer),
                             lambda p=proto: curl([p, f"{nbase}/big"], nginx)))
                rows.append((f"upload {args.size_mib} MiB {name}", mb,
                             lambda p=proto: curl([p, *creds, "-T", big, f"{cbase}/api/v1/files/up"],
                                                  coffer),
                             lambda p=proto: curl([p, "-T", big, f"{nbase}/upload/up"], nginx)))
            if "small" in kinds:
                rows.append((f"upload 1000x4KiB {name}", 1000 * 4096,
                             lambda p=proto: curl([p, *creds, "-T", small_glob,
                                                   f"{cbase}/api/v1/files/up-small/"], coffer),
                             lambda p=proto: curl([p, "-T", small_glob, f"{nbase}/upload/small/"],
                                                  nginx)))
                rows.append((f"download 1000x4KiB {name}", 1000 * 4096,
                             lambda p=proto: curl([p, *creds, f"{cbase}/api/v1/files/small/f[1-1000]"],
                                                  coffer),
                             lambda p=proto: curl([p, f"{nbase}/small/f[1-1000]"], nginx)))
        if "list" in kinds:
            token = subprocess.run(
                [coffer.args[0], "--config", coffer.args[2], "token", "create", "--user", USER],
                check=True, capture_output=True, text=True, env=clean_env()).stdout.strip()
            for folder in ["listed", "listed/one"]:
                curl([*creds, "-X", "POST", f"{cbase}/api/v1/folders/{folder}"], coffer)
            url = f"{cbase}/api/v1/list/listed?n=[1-200]"
            for name, auth in [("Basic", creds), ("bearer", ["-H", f"Authorization: Bearer {token}"])]:
                runs = [curl([*auth, url], coffer) for _ in range(args.runs)]
                ms = statistics.median(t for t, _ in runs) / 200 * 1000
                cpu = statistics.median(u for _, u in runs)
                print(f"200 x GET /api/v1/list, {name}: {ms:.2f} ms/request, {cpu:.2f} server CPU-s",
                      flush=True)
        print(f"{args.runs} runs per row, alternating; medians; ratio = Coffer throughput / nginx;"
              " CPU = server CPU-seconds per run")
        width = 27 + len(HISTORY_SUFFIX) if args.history else 26
        print(f"{'row':{width}} {'coffer s':>8} {'MB/s':>6} {'CPU s':>6} {'nginx s':>8} {'MB/s':>6}"
              f" {'CPU s':>6} {'ratio':>6} {'CPU x':>6}")
        for row in rows:
            measure_row(args, width, *row)
        if args.history:
            apply_history(args, work, history_targets(work, creds, cbase, coffer, nbase, nginx, root))
            for label, *rest in rows:
                if "x4KiB" in label:
                    measure_row(args, width, label + HISTORY_SUFFIX, *rest)
    except subprocess.CalledProcessError:
        with open(os.path.join(work, "nginx-error.log")) as f:
            print("nginx error log:\n" + f.read()[-2000:], file=sys.stderr)
        raise
    finally:
        for p in (coffer, nginx):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


def measure_row(args, width, label, size, run_coffer, run_nginx):
    """Runs one row RUNS times, alternating which server goes first; prints its medians."""
    ct, nt = [], []
    for i in range(args.runs):
        order = [(run_coffer, ct), (run_nginx, nt)]
        if i % 2:
            order.reverse()
        for fn, acc in order:
            acc.append(fn())
    c = statistics.median(t for t, _ in ct)
    n = statistics.median(t for t, _ in nt)
    cc = statistics.median(u for _, u in ct)
    nc = statistics.median(u for _, u in nt)
    print(f"{label:{width}} {c:8.2f} {size / 1e6 / c:6.1f} {cc:6.2f} {n:8.2f}"
          f" {size / 1e6 / n:6.1f} {nc:6.2f} {n / c:6.2f} {cc / max(nc, 0.01):6.2f}",
          flush=True)


def history_targets(work, creds, cbase, coffer, nbase, nginx, root):
    """Coffer and nginx as `apply_history` targets: curl `PUT`s, to Coffer's files API and to
    nginx's WebDAV location, as the rows upload."""

    def glob(d):
        """curl's URL glob for the files f1 … fN of `d`."""
        return os.path.join(d, f"f[1-{len(os.listdir(d))}]")

    data = os.path.join(work, "coffer-data")
    return [
        HistoryTarget("coffer", data,
                      lambda f: curl([*creds, "-T", f, f"{cbase}/api/v1/files/history/big.bin"], coffer),
                      lambda d: curl([*creds, "-T", glob(d), f"{cbase}/api/v1/files/history/small/"], coffer),
                      os.path.join(data, "store", "primary")),
        HistoryTarget("nginx", root,
                      lambda f: curl(["-T", f, f"{nbase}/upload/history/big.bin"], nginx),
                      lambda d: curl(["-T", glob(d), f"{nbase}/upload/history/small/"], nginx)),
    ]


if __name__ == "__main__":
    main()
