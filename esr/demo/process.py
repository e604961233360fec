"""The bundled demo target as a child process, for the demo and the tests."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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


SERVICE_LISTENING = re.compile(r"service on (http://\S+) ")
SERVICE_READY_S = 30.0


@contextlib.contextmanager
def local_service(data: Path, workers: int) -> Iterator[str]:
    """Start `esr-locust serve` on a free loopback port; yield its URL; stop it by its PID
    (runs in progress then stop gracefully and keep their report cards)."""
    data.mkdir(parents=True, exist_ok=True)
    log = data / "serve.log"
    with open(log, "w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "esr.cli", "serve", "--data", str(data),
                                    "--bind", "127.0.0.1:0", "--workers", str(workers)],
                                   stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVICE_READY_S
        while not (found := SERVICE_LISTENING.search(log.read_text())):
            if process.poll() is not None or time.monotonic() > deadline:
                raise EsrError(f"the ESR service did not start; see {log}")
            time.sleep(0.1)
        yield found.group(1)
    finally:
        end_process(process, grace_s=60)
