#!/usr/bin/env python3
"""Side-by-side HTTPS benchmark: Coffer vs nginx on loopback, both driven by curl.

Starts a release `coffer serve` (HTTPS only) and an nginx (Debian package) on spare loopback
ports with the same certificate (Coffer's self-signed one), TLS 1.3 for both. nginx serves
the same 1 GiB file from disk and takes uploads in a WebDAV `PUT` location; Coffer decrypts
on download and encrypts on upload. Each row runs RUNS times alternating the two servers.
Prints the median wall time, throughput, and the ratio Coffer / nginx (throughput; >= 1.0
means Coffer is at least as fast) for download and upload over HTTP/1.1 and HTTP/2.

Usage (from the repository root; needs nginx and curl; COFFER_BIN overrides the binary):
    cargo build --release -p coffer
    python3 benches/https/compare.py [--runs 3] [--size-mib 1024]
"""

import argparse
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER, PASSWORD = "bench", "bench password 1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on port {port}")


def clean_env():
    """The environment without COFFER_* variables (coffer refuses unknown ones)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}


def start_coffer(work, port):
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


def curl(args):
    start = time.perf_counter()
    subprocess.run(["curl", "-sS", "-k", "--fail", "-o", "/dev/null", *args], check=True)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="coffer-https-bench-")
    big = os.path.join(work, "big")
    subprocess.run(f"head -c {args.size_mib}M /dev/urandom > {big}", shell=True, check=True)

    cport, nport = free_port(), free_port()
    coffer, tls_dir = start_coffer(work, cport)
    nginx, root = start_nginx(work, nport, tls_dir)
    try:
        creds = ["-u", f"{USER}:{PASSWORD}"]
        cbase, nbase = f"https://127.0.0.1:{cport}", f"https://127.0.0.1:{nport}"
        # The download source: the same bytes on both servers.
        curl([*creds, "-T", big, f"{cbase}/api/v1/files/big"])
        shutil.copyfile(big, os.path.join(root, "big"))
        rows = []
        for proto in ["--http1.1", "--http2"]:
            name = "HTTP/1.1" if proto == "--http1.1" else "HTTP/2"
            rows.append((f"download {args.size_mib} MiB {name}",
                         lambda p=proto: curl([p, *creds, f"{cbase}/api/v1/files/big"]),
                         lambda p=proto: curl([p, f"{nbase}/big"])))
            rows.append((f"upload {args.size_mib} MiB {name}",
                         lambda p=proto: curl([p, *creds, "-T", big, f"{cbase}/api/v1/files/up"]),
                         lambda p=proto: curl([p, "-T", big, f"{nbase}/upload/up"])))
        print(f"{args.runs} runs per row, alternating; medians; ratio = Coffer throughput / nginx")
        print(f"{'row':28} {'coffer s':>9} {'MB/s':>7} {'nginx s':>9} {'MB/s':>7} {'ratio':>6}")
        mb = args.size_mib * 1048576 / 1e6
        for label, run_coffer, run_nginx in rows:
            ct, nt = [], []
            for i in range(args.runs):
                order = [(run_coffer, ct), (run_nginx, nt)]
                if i % 2:
                    order.reverse()
                for fn, acc in order:
                    acc.append(fn())
            c, n = statistics.median(ct), statistics.median(nt)
            print(f"{label:28} {c:9.2f} {mb / c:7.0f} {n:9.2f} {mb / n:7.0f} {n / c:6.2f}", flush=True)
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


if __name__ == "__main__":
    main()
