"""A real `esr-locust serve` for tests: started on a free port with its own data folder,
ended by its PID; tokens made with the real `esr-locust tokens create` (in this process)."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from commands import esr_locust

from esr.cli import main
from esr.launcher import end_process

READY_S = 30.0
# A run the demo target serves within its SLOs, for tests that need one to pass (the demo
# fails its SLOs on purpose): 90 citizens applying, 5 s of ramp and 20 s held, no chaos.
STEADY = """
esr: 1
scenario: "Steady applications"
seed: 2026
citizens:
  - {name: applicants, template: low_income, count: 40, behavior: {think_time: 200ms..1s}}
  - {name: seniors, template: seniors, count: 30, behavior: {think_time: 300ms..1500ms}}
  - {name: veterans, template: veterans, count: 20, behavior: {think_time: 200ms..1s}}
load_profile: {ramp_up: 5s, sustain: 20s}
slo: {p95_ms: 500, error_rate: 0.02}
"""
LISTENING = re.compile(r"service on (http://\S+) ")
TOKEN_ID = re.compile(r"\btok_[0-9a-f]+\b")


@dataclass
class RunningService:
    url: str
    data: Path
    process: subprocess.Popen
    log: Path

    def token(self, agency: str, *options: str) -> str:
        """A new token's secret for the agency (`tokens create`, printed alone on stdout)."""
        return make_token(self.data, agency, *options)

    def client(self, token: str | None) -> httpx.Client:
        """An HTTP client for the API, with the token as bearer (none: no header)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def make_token(data: Path, agency: str, *options: str) -> str:
    return new_token(data, agency, *options)[1]


def new_token(data: Path, agency: str, *options: str) -> tuple[str, str]:
    """(id, secret) of a new token: the id as `tokens create` names it on stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["tokens", "create", "--data", str(data), "--agency", agency, *options])
    assert code == 0, f"tokens create failed ({code}): {err.getvalue()}"
    return TOKEN_ID.search(err.getvalue()).group(0), out.getvalue().strip()


def revoke_token(data: Path, token_id: str) -> None:
    """`esr-locust tokens revoke ID`, the real command (in this process)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["tokens", "revoke", token_id, "--data", str(data)])
    assert code == 0, f"tokens revoke {token_id} failed ({code})"


def start_service(data: Path, *options: str) -> RunningService:
    """`esr-locust serve --bind 127.0.0.1:0` (one process per run unless options say) until
    it says where it listens."""
    data.mkdir(parents=True, exist_ok=True)
    log = data / f"serve-{time.monotonic_ns()}.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            esr_locust("serve", "--data", str(data), "--bind", "127.0.0.1:0", "--workers", "0",
                       *options), stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        found = LISTENING.search(log.read_text())
        if found:
            return RunningService(found.group(1), data, process, log)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    end_process(process)
    raise AssertionError(f"esr-locust serve did not start:\n{log.read_text()}")


@contextlib.contextmanager
def running_service(data: Path, *options: str) -> Iterator[RunningService]:
    service = start_service(data, *options)
    try:
        yield service
    finally:
        end_process(service.process, grace_s=60)


def wait_for_status(client: httpx.Client, run_id: str, statuses: tuple[str, ...],
                    timeout_s: float = 120.0) -> dict:
    """Poll GET /v1/runs/{id} until the run stands in one of the statuses; its view then."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = client.get(f"/v1/runs/{run_id}").json()
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
        time.sleep(0.2)
