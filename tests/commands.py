"""What the process-level tests share: esr-locust as a command, free ports, the target's count."""

from __future__ import annotations

import json
import socket
import sys
import urllib.request


def esr_locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "esr.cli", *args]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def served(target: str, run_id: str | None = None) -> dict:
    """The demo target's own tally of one run's requests, or of every run (/admin/stats)."""
    query = "" if run_id is None else f"?run={run_id}"
    with urllib.request.urlopen(f"{target}/admin/stats{query}", timeout=10) as response:
        return json.loads(response.read())
