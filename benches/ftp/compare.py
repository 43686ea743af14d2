#!/usr/bin/env python3
"""Side-by-side FTPES benchmark: Coffer vs vsftpd (explicit TLS) on loopback.

Starts a release `coffer serve` and a `vsftpd` (run as root in the foreground with its own
config file, explicit TLS required on control and data) on spare loopback ports, then runs the
same clients against each, alternating, RUNS times per row: a SIZE MiB upload and download with
curl (`--ssl-reqd`), and SMALL x 4 KiB upload and download with lftp `mirror`
(`ftp:ssl-force`). Prints the median wall time as throughput, the ratio Coffer / vsftpd
(throughput; >= 1.0 means Coffer is at least as fast), server CPU seconds and peak server RSS
per row.

vsftpd authenticates a local account: the script creates the system user `coffer-ftpbench`
(password login, home under the work directory) if it is missing, and leaves it in place.

Usage (from the repository root, as root; needs vsftpd, curl, lftp, openssl; COFFER_BIN
overrides the binary):
    cargo build --release -p coffer
    python3 benches/ftp/compare.py [--runs 3] [--size-mib 1024] [--small 1000] [--only LABEL]
        [--history BIG_GIB,SMALL_COUNT]

`--history 30,10000` (issue 16): after the selected rows, both servers get the same history over
FTPES (30 curl `-T` uploads of one 1 GiB file replacing `history/big.bin`, then lftp
`mirror -R` of 10,000 distinct 4 KiB files into `history/small/`; Coffer first, and each of its
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
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from common import (HISTORY_SUFFIX, HistoryTarget, add_history_args, apply_history,  # noqa: E402
                    PeakRss, clean_env, free_port, tree_cpu_seconds, tree_rss_bytes, wait_port)
USER = "coffer-ftpbench"
PASSWORD = "bench-Passw0rd-ftp"


def passive_range():
    """20 consecutive free loopback ports."""
    while True:
        p = free_port()
        if p > 65000:
            continue
        ok = True
        for q in range(p, p + 20):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", q))
                except OSError:
                    ok = False
                    break
        if ok:
            return p, p + 19


def start_coffer(work, port):
    """A `coffer serve` with FTPES only on `port`, user `bench` with PASSWORD."""
    coffer = os.environ.get("COFFER_BIN") or os.path.join(ROOT, "target", "release", "coffer")
    if not os.path.exists(coffer):
        sys.exit("build it first: cargo build --release -p coffer")
    p0, p1 = passive_range()
    conf = os.path.join(work, "coffer.toml")
    with open(conf, "w") as f:
        f.write(
            f'data_dir = "{work}/coffer-data"\n'
            f'[log]\nlevel = "warn"\n'
            f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
            f"[sftp]\nenabled = false\n"
            f'[ftp]\nlisten = "127.0.0.1:{port}"\npassive_ports = "{p0}-{p1}"\n'
            f"[https]\nenabled = false\n"
        )
    subprocess.run([coffer, "--config", conf, "user", "add", "bench", "--password-stdin"], check=True,
                   input=(PASSWORD + "\n").encode(), stdout=subprocess.DEVNULL, env=clean_env())
    log = open(os.path.join(work, "coffer.log"), "w")
    proc = subprocess.Popen([coffer, "--config", conf, "serve"], stdout=log, stderr=log, env=clean_env())
    wait_port(port)
    return proc


def ensure_user(home):
    """The system user USER with PASSWORD and `home` (created if missing)."""
    if subprocess.run(["id", USER], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["useradd", "-M", "-s", "/bin/bash", "-d", home, USER], check=True)
    subprocess.run(["usermod", "-d", home, USER], check=True)
    subprocess.run(["chpasswd"], input=f"{USER}:{PASSWORD}\n".encode(), check=True)
    os.makedirs(home, exist_ok=True)
    shutil.chown(home, USER, USER)


def start_vsftpd(work, port):
    """A foreground vsftpd on `port`, explicit TLS required; returns (process, USER's home)."""
    vsftpd = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
    if not os.path.exists(vsftpd):
        sys.exit("vsftpd is required: apt-get install vsftpd")
    home = os.path.join(work, "vsftpd-home")
    ensure_user(home)
    os.chmod(work, 0o755)
    cert, key = os.path.join(work, "vsftpd.crt"), os.path.join(work, "vsftpd.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p0, p1 = passive_range()
    empty = os.path.join(work, "vsftpd-empty")
    os.makedirs(empty, exist_ok=True)
    conf = os.path.join(work, "vsftpd.conf")
    with open(conf, "w") as f:
        f.write(
            f"listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\n"
            "anonymous_enable=NO\nlocal_enable=YES\nwrite_enable=YES\nlocal_umask=022\n"
            "pam_service_name=vsftpd\nseccomp_sandbox=NO\nuse_localtime=NO\n"
            f"secure_chroot_dir={empty}\nxferlog_enable=NO\nmax_per_ip=0\nmax_clients=0\n"
            f"pasv_enable=YES\npasv_min_port={p0}\npasv_max_port={p1}\npasv_address=127.0.0.1\n"
            f"ssl_enable=YES\nrsa_cert_file={cert}\nrsa_private_key_file={key}\n"
            "force_local_logins_ssl=YES\nforce_local_data_ssl=YES\nallow_anon_ssl=NO\n"
            "ssl_tlsv1=NO\nssl_sslv2=NO\nssl_sslv3=NO\nrequire_ssl_reuse=NO\nssl_ciphers=HIGH\n"
        )
    proc = subprocess.Popen([vsftpd, conf], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, "vsftpd.log"), "w"))
    wait_port(port)
    return proc, home


def user_of(name):
    """The login on server `name`."""
    return "bench" if name == "coffer" else USER


def curl(name, port, args, cwd):
    """Wall seconds of one curl run (`args(port)` after the TLS and login options)."""
    cmd = ["curl", "--ssl-reqd", "-k", "-s", "-S", "--user", f"{user_of(name)}:{PASSWORD}"] + args(port)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def lftp(name, port, script, cwd):
    """Wall seconds of one lftp session running `script` over FTPES."""
    full = ("set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:verify-certificate no; "
            "set net:max-retries 1; set xfer:clobber true; "
            f"open -u {user_of(name)},{PASSWORD} -p {port} 127.0.0.1; {script}")
    start = time.perf_counter()
    subprocess.run(["lftp", "-c", full], check=True, cwd=cwd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


SERVERS = {}
FOLDERS = iter(range(1_000_000))


def fresh_folder():
    """A remote folder name not used before in this run."""
    return f"up{next(FOLDERS)}"


def main():
    """Parses the options, starts both servers, runs the rows and cleans up."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--only", default="", help="run only the rows whose label contains this")
    add_history_args(ap)
    args = ap.parse_args()
    if args.history and not any(args.only in label and is_small(label) for label, *_ in build_rows(args, "")):
        ap.error("--history re-runs the small-file rows, and --only selects none of them")
    work = tempfile.mkdtemp(prefix="coffer-ftp-bench-")
    local = os.path.join(work, "local")
    os.makedirs(os.path.join(local, "small"))
    big = os.path.join(local, "big")
    subprocess.run(f"head -c {args.size_mib}M /dev/urandom > {big}", shell=True, check=True)
    for i in range(args.small):
        with open(os.path.join(local, "small", f"s{i:04}"), "wb") as f:
            f.write(os.urandom(4096))

    cport, vport = free_port(), free_port()
    coffer = start_coffer(work, cport)
    vsftpd, home = start_vsftpd(work, vport)
    time.sleep(1)
    idle = {"coffer": tree_rss_bytes(coffer.pid), "vsftpd": tree_rss_bytes(vsftpd.pid)}
    print(f"idle RSS: coffer {idle['coffer'] / 2**20:.0f} MiB, vsftpd {idle['vsftpd'] / 2**20:.0f} MiB")
    SERVERS["coffer"] = (coffer, cport)
    SERVERS["vsftpd"] = (vsftpd, vport)
    try:
        run_rows(args, local, big, work, home)
    finally:
        for proc in (coffer, vsftpd):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def build_rows(args, local):
    """Every row: (label, run(server name, port) -> seconds, bytes moved)."""
    url = lambda port, path: f"ftp://127.0.0.1:{port}/{path}"
    mib = args.size_mib
    return [
        (f"{mib} MiB upload (curl)", lambda n, p: curl(n, p, lambda port: ["-T", "big", url(port, "big")], local), mib << 20),
        (f"{mib} MiB download (curl)", lambda n, p: curl(n, p, lambda port: [url(port, "big"), "-o", "big.back"], local), mib << 20),
        # Each timed upload goes to a folder of its own: `mirror -R` skips files the server
        # already has, so a second run into the same folder would upload nothing.
        (f"{args.small} x 4 KiB upload (lftp mirror -R)", lambda n, p: lftp(n, p, f"mirror -R --no-perms small {fresh_folder()}", local), args.small * 4096),
        (f"{args.small} x 4 KiB download (lftp mirror)", lambda n, p: lftp(n, p, "mirror small small.back", local), args.small * 4096),
    ]


def is_small(label):
    """Whether a row is one of the small-file rows (run again on the servers with history)."""
    return " x 4 KiB " in label


def run_rows(args, local, big, work, home):
    """Measures the selected rows (and, with --history, the small ones again after the
    history) and prints the markdown table."""
    rows = build_rows(args, local)
    skipped = [r for r in rows if args.only not in r[0]]
    rows = [r for r in rows if args.only in r[0]]
    # The downloads need their files: the big one is uploaded untimed when its row is filtered
    # out, the small ones always go to `small` once, untimed.
    for name in ["coffer", "vsftpd"]:
        port = SERVERS[name][1]
        lftp(name, port, "mirror -R --no-perms small small", local)
        for label, run, _ in skipped:
            if "MiB upload" in label:
                run(name, port)
    results = [measure_row(args, local, *row) for row in rows]
    back = os.path.join(local, "big.back")
    if os.path.exists(back) and subprocess.run(["cmp", "-s", big, back]).returncode != 0:
        sys.exit("the downloaded file differs from the upload")
    if args.history:
        apply_history(args, work, history_targets(local, work, home))
        results += [measure_row(args, local, label + HISTORY_SUFFIX, *rest)
                    for label, *rest in rows if is_small(label)]

    print(f"\n| Row | Coffer MB/s | vsftpd MB/s | Coffer / vsftpd | CPU s Coffer | CPU s vsftpd | peak RSS Coffer | peak RSS vsftpd |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print_row(*r, table=True)


def measure_row(args, local, label, run, nbytes):
    """Runs one row RUNS times on each server, alternating; prints and returns its figures."""
    samples = {"coffer": [], "vsftpd": []}
    cpu = {"coffer": [], "vsftpd": []}
    peak = {"coffer": 0, "vsftpd": 0}
    for _ in range(args.runs):
        for name in ["coffer", "vsftpd"]:
            proc, port = SERVERS[name]
            shutil.rmtree(os.path.join(local, "small.back"), ignore_errors=True)
            c0 = tree_cpu_seconds(proc.pid)
            with PeakRss(proc.pid) as pk:
                samples[name].append(run(name, port))
            cpu[name].append(tree_cpu_seconds(proc.pid) - c0)
            peak[name] = max(peak[name], pk.peak)
    print_row(label, nbytes, samples, cpu, peak, flush=True)
    return label, nbytes, samples, cpu, peak


def history_targets(local, work, home):
    """Coffer and vsftpd as `apply_history` targets: the big file with curl `-T`, the small
    ones with lftp `mirror -R`, as the rows upload."""

    def target(name, data_dir, garbage_dir=None):
        """The server `name`, its `history/small/` folder made."""
        port = SERVERS[name][1]
        lftp(name, port, "mkdir -p history/small", local)
        return HistoryTarget(
            name, data_dir,
            lambda f: curl(name, port, lambda p: ["-T", f, f"ftp://127.0.0.1:{p}/history/big.bin"], local),
            lambda d: lftp(name, port, f"mirror -R --no-perms {d} history/small", local),
            garbage_dir)

    data = os.path.join(work, "coffer-data")
    return [target("coffer", data, os.path.join(data, "store", "primary")), target("vsftpd", home)]


def print_row(label, nbytes, samples, cpu, peak, table=False, flush=False):
    """One row's medians: a live line, or a markdown table row with `table`."""
    mbps = {k: nbytes / statistics.median(v) / 1e6 for k, v in samples.items()}
    ratio = mbps["coffer"] / mbps["vsftpd"]
    cells = [label, f"{mbps['coffer']:.2f}", f"{mbps['vsftpd']:.2f}", f"{ratio:.2f}",
             f"{statistics.median(cpu['coffer']):.2f}", f"{statistics.median(cpu['vsftpd']):.2f}",
             f"{peak['coffer'] / 2**20:.0f} MiB", f"{peak['vsftpd'] / 2**20:.0f} MiB"]
    if table:
        print("| " + " | ".join(cells) + " |")
    else:
        print("  ".join(cells), flush=flush)


if __name__ == "__main__":
    main()
