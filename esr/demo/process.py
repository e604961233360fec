"""The bundled demo target as a child process, for the demo and the tests."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

from esr.errors import EsrError
from esr.launcher import end_process

READY_PREFIX = "esr target listening on "


@contextlib.contextmanager
def demo_target(*arguments: str) -> Iterator[str]:
    """Start `esr.demo.target` on a free loopback port; yield its URL; stop it by its PID."""
    process = subprocess.Popen([sys.executable, "-m", "esr.demo.target", "--port", "0", *arguments],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        line = process.stdout.readline()
        if not line.startswith(READY_PREFIX):
            raise EsrError(f"the demo target did not start: {line}{process.stderr.read()}")
        yield line[len(READY_PREFIX):].strip()
    finally:
        end_process(process, grace_s=10)
