"""Helpers shared by the comparison benchmarks under benches/ (ports, environment, CPU time).

Imported by a script with `sys.path.insert(0, <benches dir>)`; nothing here starts a server.
"""

import os
import socket
import sys
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


def settled_cpu(pid, quiet=0.02, step=0.3, limit=120):
    """The process's CPU-seconds once it has gone quiet (under `quiet` CPU-s per `step` s):
    work a transfer causes in the background after the client is answered (an upload's
    replication) belongs to that transfer, not to whichever one runs next."""
    before = cpu_seconds(pid)
    deadline = time.time() + limit
    while time.time() < deadline:
        time.sleep(step)
        now = cpu_seconds(pid)
        if now - before < quiet:
            return now
        before = now
    return before
