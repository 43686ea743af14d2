"""Helpers shared by the comparison benchmarks under benches/ (ports, environment, CPU time,
and the "server with history" option of the three compare.py scripts).

Imported by a script with `sys.path.insert(0, <benches dir>)`; nothing here starts a server.
"""

import argparse
import os
import shutil
import socket
import sys
import threading
import time


def free_port():
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60):
    """Returns once something accepts on 127.0.0.1:port; exits the script after `timeout` s."""
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


def cpu_seconds(pid):
    """User + system CPU-seconds used so far by process `pid` (not its children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settled_cpu(pid, quiet=0.02, step=0.3, limit=120, measure=None):
    """The process's CPU-seconds once it has gone quiet (under `quiet` CPU-s per `step` s):
    work a transfer causes in the background after the client is answered (an upload's
    replication) belongs to that transfer, not to whichever one runs next. `measure`
    (default `cpu_seconds`) reads the CPU-seconds, e.g. `tree_cpu_seconds` for nginx."""
    measure = measure or cpu_seconds
    before = measure(pid)
    deadline = time.time() + limit
    while time.time() < deadline:
        time.sleep(step)
        now = measure(pid)
        if now - before < quiet:
            return now
        before = now
    return before


# --- Process trees (servers that fork per session: sshd, vsftpd) ---------------------------------


def process_tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    children = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(p))
            except OSError:
                pass
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu_seconds(pid):
    """utime+stime of pid's tree, plus pid's reaped children (per-session processes of sshd
    and vsftpd that have ended)."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:13])
            if p == pid:
                total += sum(int(x) for x in fields[13:15])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def tree_rss_bytes(pid):
    """Resident bytes of pid's tree."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


class PeakRss:
    """Samples the server's process tree RSS every 50 ms while a transfer runs."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        """The sampling loop (the thread's body)."""
        while not self.stop:
            self.peak = max(self.peak, tree_rss_bytes(self.pid))
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()


# --- "Server with history" (issue 16) --------------------------------------------------------
#
# Each compare.py can measure its small-file rows twice: on fresh servers, and again after both
# servers were given the same history through the protocol under test: BIG uploads of one big
# file replacing the same remote name (`history/big.bin`), then SMALL distinct 4 KiB files into
# `history/small/`. The scripts supply the upload commands; what follows is shared.

HISTORY_SUFFIX = " (history)"
HISTORY_SMALL_BYTES = 4096


def history_spec(text):
    """argparse type of `--history BIG_GIB,SMALL_COUNT`: a pair of non-negative integers."""
    try:
        big, small = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--history takes BIG_GIB,SMALL_COUNT (e.g. 30,10000), not {text!r}")
    if big < 0 or small < 0 or big + small == 0:
        raise argparse.ArgumentTypeError(f"--history: counts must be >= 0 and not both 0, not {text!r}")
    return big, small


def add_history_args(ap):
    """Adds `--history BIG_GIB,SMALL_COUNT` and the undocumented `--history-big-mib` (the size
    of the "big" file, 1024 unless a short check wants less) to an ArgumentParser."""
    ap.add_argument("--history", type=history_spec, default=None, metavar="BIG_GIB,SMALL_COUNT",
                    help="after the rows, give both servers BIG_GIB replaced uploads of one 1 GiB file "
                         "and SMALL_COUNT 4 KiB files, then run the small-file rows again")
    ap.add_argument("--history-big-mib", type=int, default=1024, help=argparse.SUPPRESS)


def dir_bytes(path):
    """Bytes `path` takes on disk (allocated blocks of every file below it, links not followed)."""
    total, todo = 0, [path]
    while todo:
        try:
            entries = os.scandir(todo.pop())
        except OSError:
            continue
        with entries:
            for e in entries:
                try:
                    if e.is_dir(follow_symlinks=False):
                        todo.append(e.path)
                    else:
                        total += e.stat(follow_symlinks=False).st_blocks * 512
                except OSError:
                    pass  # deleted meanwhile (garbage collection, a spool file renamed)
    return total


def settled_bytes(path, quiet=4, limit=600):
    """dir_bytes(path) once it has not changed for `quiet` seconds: the server's background work
    (replicating what was just uploaded) is over. Exits the script after `limit` seconds."""
    deadline = time.time() + limit
    last, same_since = dir_bytes(path), time.time()
    while time.time() < deadline:
        time.sleep(1)
        now = dir_bytes(path)
        if now != last:
            last, same_since = now, time.time()
        elif time.time() - same_since >= quiet:
            return now
    sys.exit(f"{path} still changes size after {limit} s")


def wait_until_at_most(path, limit_bytes, timeout=3600):
    """Seconds spent waiting until `path` takes at most `limit_bytes` on disk (the garbage
    collector has deleted a replaced object). Exits the script after `timeout` seconds: Coffer's
    collector takes at most 256 garbage objects a minute, oldest first, so a backlog the rows
    left (thousands of replaced small files) can hold the first replaced big object for many
    minutes."""
    start = time.time()
    while (size := dir_bytes(path)) > limit_bytes:
        if time.time() - start > timeout:
            sys.exit(f"{path} still takes {size / 2**30:.2f} GiB after {timeout} s "
                     f"(waiting for <= {limit_bytes / 2**30:.2f} GiB: is garbage collected?)")
        time.sleep(2)
    return time.time() - start


# Replaced big objects a history lets wait for Coffer's collector at once: uploads go on while
# the collector (once a minute) catches up, and the disk holds at most this many GiB of them.
HISTORY_GARBAGE_FILES = 3


def make_history_files(work, big_mib, small_count):
    """Writes the history's local sources under `work/history`: `big.bin` (`big_mib` MiB of
    random bytes) and `small/f1` … `small/fN` (distinct random 4 KiB each). Returns
    (big path, small dir); remove `work/history` when the history is applied."""
    root = os.path.join(work, "history")
    small = os.path.join(root, "small")
    os.makedirs(small)
    big = os.path.join(root, "big.bin")
    with open(big, "wb") as f:
        for _ in range(big_mib):
            f.write(os.urandom(1 << 20))
    for i in range(1, small_count + 1):
        with open(os.path.join(small, f"f{i}"), "wb") as f:
            f.write(os.urandom(HISTORY_SMALL_BYTES))
    return big, small


class HistoryTarget:
    """One server to give the history to: `upload_big(local_file)` replaces the remote
    `history/big.bin`, `upload_small(local_dir)` uploads the files of `local_dir` into the
    remote `history/small/`, `data_dir` is where the server keeps what it stores.
    `garbage_dir`, for a server whose replaced objects stay on disk until its collector deletes
    them (Coffer's primary store, `<data_dir>/store/primary`): each big upload then waits until
    the object it replaced is gone from there, and the history ends once `data_dir` has stopped
    changing (the replicator is done). None: the server frees a replaced file itself."""

    def __init__(self, name, data_dir, upload_big, upload_small, garbage_dir=None):
        self.name, self.data_dir = name, data_dir
        self.upload_big, self.upload_small = upload_big, upload_small
        self.garbage_dir = garbage_dir


def apply_history(args, work, targets):
    """Gives every target the history `args.history` = (BIG, SMALL), one server after the other
    (the garbage-collecting one should come first: the others then hold nothing of it yet while
    it has the most on disk), printing a line per big upload and one summary line. The local
    sources are removed afterwards.

    Disk: after each big upload to a target with a `garbage_dir`, the script waits until that
    directory takes at most its size before the history plus HISTORY_GARBAGE_FILES + 0.5 big
    files: Coffer's collector (`serve`, every minute, garbage at least a minute old; not
    configurable) deletes a replaced object 60-120 s after the replace, so at most
    HISTORY_GARBAGE_FILES replaced objects wait on disk at a time; then until its data dir has
    been still for 4 s (the new object's replica copy is made). The history's peak: the local
    file, the live object and its replica copy, the waiting replaced objects, the next upload's
    spool file and, for seconds, a replaced object's replica copy."""
    big_count, small_count = args.history
    big_bytes = args.history_big_mib << 20
    big, small = make_history_files(work, args.history_big_mib if big_count else 0, small_count)
    done = []
    try:
        for t in targets:
            done.append(give_history(t, big, small, big_count, big_bytes))
    finally:
        shutil.rmtree(os.path.join(work, "history"), ignore_errors=True)
    parts = [f"{name} {busy:.1f} s uploading" + (f" + {waited:.1f} s waiting" if waited >= 0.05 else "")
             + f", data {size / 2**30:.2f} GiB" for name, busy, waited, size in done]
    print(f"history ({big_count} x {args.history_big_mib} MiB replaced, {small_count} x 4 KiB): "
          + "; ".join(parts), flush=True)


def give_history(t, big, small, big_count, big_bytes):
    """One target's history; returns (name, seconds uploading, seconds waiting for its
    collector and replicator, bytes of its data dir afterwards)."""
    busy = waited = 0.0
    limit = (dir_bytes(t.garbage_dir) + big_bytes * (2 * HISTORY_GARBAGE_FILES + 1) // 2
             if t.garbage_dir else None)
    for i in range(big_count):
        start = time.perf_counter()
        t.upload_big(big)
        took = time.perf_counter() - start
        busy += took
        print(f"history {t.name}: big upload {i + 1}/{big_count} {took:.1f} s", end="", flush=True)
        wait = 0.0
        if limit is not None:
            start = time.perf_counter()
            wait_until_at_most(t.garbage_dir, limit)
            # The replica copy is made before the next upload replaces the object, so the
            # history ends with the state a server that ran it slowly would have.
            settled_bytes(t.data_dir)
            wait = time.perf_counter() - start
        waited += wait
        print(f", then {wait:.0f} s for the collector and the replicator" if limit else "", flush=True)
    start = time.perf_counter()
    t.upload_small(small)
    busy += time.perf_counter() - start
    start = time.perf_counter()
    size = settled_bytes(t.data_dir) if t.garbage_dir else dir_bytes(t.data_dir)
    waited += time.perf_counter() - start
    return t.name, busy, waited, size
