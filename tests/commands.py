"""What the process-level tests share: esr-locust as a command, free ports, the target's count."""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import urllib.request
from pathlib import Path


def esr_locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "esr.cli", *args]


def as_at_a_terminal() -> None:
    """For Popen's preexec_fn: the child takes SIGINT as a program started at a terminal does.
    A process inherits an ignored SIGINT, and Python then keeps ignoring it. A background job
    of a shell without job control starts with SIGINT ignored (POSIX: `bash -c 'cmd &'`, as
    CI runners and nohup scripts start suites), and so does every process of the suite then:
    a Ctrl-C sent to esr-locust went unheard, its run lasting to its end. (No test sets it: a
    plugin read SigIgn in /proc before and after each test of a full run.)"""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


# Servers the tests start take their ports from blocks of this many below the kernel's
# ephemeral range, one block per pytest-xdist worker.
PORT_BLOCK = 1000
FIRST_PORT = 10_000


def free_port() -> int:
    """A port on 127.0.0.1 that is free now, for a server a test is about to start.

    Not from the kernel's ephemeral range (32768-60999 here): every outgoing connection, the
    runs' own in every parallel worker included, takes its local port from there, and could
    take this one before the server binds it. Each xdist worker draws from a block of its
    own, so two never pick the same."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    first = FIRST_PORT + worker * PORT_BLOCK
    if first + PORT_BLOCK <= _ephemeral_ports()[0]:
        for port in random.sample(range(first, first + PORT_BLOCK), PORT_BLOCK):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue  # in use, or a connection on it is still closing
                return port
    with socket.socket() as probe:  # no room below the ephemeral range: any the kernel gives
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def served(target: str, run_id: str | None = None) -> dict:
    """The demo target's own tally of one run's requests, or of every run (/admin/stats)."""
    query = "" if run_id is None else f"?run={run_id}"
    with urllib.request.urlopen(f"{target}/admin/stats{query}", timeout=10) as response:
        return json.loads(response.read())
