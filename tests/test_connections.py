"""How citizens hold connections (esr/engine/connections.py): none while thinking long, own source
addresses on loopback, and failures on the wire named by their cause.

The runs here are real and short: a Locust process against the session's demo target on
127.0.0.1 (tests/conftest.py: 8 applications at once, 5 ms each), its sockets counted from
/proc by psutil while its citizens think.
"""

from __future__ import annotations

import csv
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from esr.engine.connections import (
    KEEPALIVE_IDLE_S,
    SOURCES_PER_WORKER,
    Dialer,
    bindable,
    raise_open_files_limit,
    source_addresses,
)
from esr.launcher import Launch, RunSettings, read_live
from esr.report.summary import load_generator

ROOT = Path(__file__).resolve().parent.parent
CITIZENS = 40
THINKING = """
scenario: thinking citizens
seed: 3
citizens: {template: low_income, count: %(citizens)d, behavior: {think_time: "%(think)s"}}
load_profile: {ramp_up: 500ms, sustain: %(sustain)s}
"""


def connections_to(pid: int, port: int) -> list:
    return [c for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED]


def sockets_while_thinking(tmp_path: Path, target: str, think: str) -> tuple[int, set[str]]:
    """Most connections one Locust process held to the target, sampled for a second once
    every citizen had made its first request; and their source addresses.

    "Made" as ESR counts it (live.json), not as the target does: the target counts a request
    as its answer starts, and a busy load process may take a while to read the answers and
    hang up; its live figures count a request once its citizen is done with it."""
    tmp_path.mkdir()
    path = tmp_path / "thinking.yml"
    path.write_text(THINKING % {"citizens": CITIZENS, "think": think, "sustain": "4s"})
    launch = Launch.prepare(RunSettings(scenario=path, host=target, workers=0,
                                        run_dir=tmp_path / "run"))
    launch.start()
    port = int(target.rsplit(":", 1)[1])
    seen: list[int] = []
    sources: set[str] = set()

    def sample() -> None:
        pid = launch.lead.pid
        deadline = time.monotonic() + 30
        while ((read_live(launch.run_dir) or {}).get("requests", 0) < CITIZENS
               and time.monotonic() < deadline):
            time.sleep(0.1)
        for _ in range(10):
            held = connections_to(pid, port)
            seen.append(len(held))
            sources.update(c.laddr.ip for c in held)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    launch.wait()
    sampler.join()
    assert len(seen) == 10, "the citizens never made their first requests"
    return max(seen), sources


@pytest.mark.slow(reason="two runs whose citizens think past the keep-alive idle time")
def test_citizens_thinking_long_hold_no_connection_and_short_thinkers_keep_theirs(
        tmp_path, target):
    assert KEEPALIVE_IDLE_S < 6
    held, _ = sockets_while_thinking(tmp_path / "long", target, "6s..8s")
    assert held == 0
    # The same citizens pausing briefly keep their keep-alive connections, as browsers do,
    # and connect from this process's own loopback addresses, taking turns.
    held, sources = sockets_while_thinking(tmp_path / "short", target, "2s..3s")
    assert held >= CITIZENS * 3 // 4
    assert len(sources) > 1 and sources <= set(source_addresses(0, 20_000, 28_232))


def test_a_load_generator_out_of_files_says_so(tmp_path, target):
    """EMFILE names the load generator's limit, not a failure of the target: a process whose
    limit leaves no file for citizens fails their requests at once (`esr-locust run` would
    not start them: the pool's capacity; a bare Locust process of the locustfile does), and
    the verdict says what to do."""
    path = tmp_path / "crowded.yml"
    path.write_text(THINKING % {"citizens": 20, "think": "2s..3s", "sustain": "2s"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def few_files() -> None:  # in the child: room for Locust itself, none for citizens
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))

    finished = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "esr.py"),
         "--headless", "--host", target, "--esr-run-dir", str(run_dir), "--esr-run-id", "few",
         "--csv", str(run_dir / "locust"), "--only-summary"],
        env={**os.environ, "ESR_SCENARIO": str(path)}, preexec_fn=few_files,
        capture_output=True, text=True, timeout=60)
    with open(run_dir / "locust_failures.csv") as table:
        errors = {row["Error"]: int(row["Occurrences"]) for row in csv.DictReader(table)}
    assert errors and all("EMFILE" in error for error in errors), (errors,
                                                                   finished.stderr[-2000:])
    found = load_generator({}, 2.0, [{"kind": "EMFILE", "count": sum(errors.values())}])
    assert found["limited"] and found["findings"] == [
        f"{sum(errors.values()):,} requests failed for want of files in the load process "
        "(EMFILE): raise its open-files limit (ulimit -n) or add workers"]


def test_a_citizen_waits_for_a_file_then_fails_naming_its_process_s_limit(monkeypatch):
    """Within a budget of one file, a new socket is always over it: the citizen waits for a
    file (its request's timeout, shortened here) and then fails with EMFILE."""
    import errno
    import socket

    from esr.engine import connections

    monkeypatch.setattr(connections, "REQUEST_TIMEOUT_S", 0.3)
    budget = connections.FileBudget(open_files=connections.FILES_KEPT + 1)
    started = time.monotonic()
    with pytest.raises(OSError) as raised:
        budget.open(socket.socket)
    assert raised.value.errno == errno.EMFILE and "(1 for citizens)" in str(raised.value)
    assert 0.3 <= time.monotonic() - started < 5


def test_an_unreachable_target_is_named_by_its_cause(tmp_path):
    path = tmp_path / "nobody.yml"
    path.write_text(THINKING % {"citizens": 2, "think": "100ms..200ms", "sustain": "1s"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "esr.py"),
         "--headless", "--host", "http://127.0.0.1:9", "--esr-run-dir", str(run_dir),
         "--csv", str(run_dir / "locust"), "--only-summary"],
        env={**os.environ, "ESR_SCENARIO": str(path)}, capture_output=True, timeout=60)
    errors = (run_dir / "locust_failures.csv").read_text()
    assert "ConnectionRefusedError" in errors and "RetriesExceeded" not in errors


# ---- the parts ---------------------------------------------------------------------------------


def test_each_worker_has_loopback_addresses_of_its_own_enough_for_its_files():
    first = source_addresses(0, 20_000, 28_232)
    assert first == tuple(f"127.1.0.{n}" for n in range(1, SOURCES_PER_WORKER + 1))
    assert source_addresses(1, 20_000, 28_232)[0] == "127.1.1.1"
    assert len(source_addresses(7, 28_232 * 40, 28_232)) == max(40, SOURCES_PER_WORKER)
    assert len(source_addresses(3, 10**9, 28_232)) == 254  # 127.1.3.1 … 127.1.3.254
    # Used only where the host lets sockets bind them (lo holds 127.0.0.0/8 on Linux).
    assert bindable(source_addresses(5, 60_000, 28_232))
    assert not bindable(("192.0.2.1",))  # TEST-NET-1: no address of this host


def test_the_dialer_binds_only_loopback_ipv4_and_takes_turns():
    import socket

    dialer = Dialer(("127.1.0.1", "127.1.0.2"))
    turns = [dialer.source_for(socket.AF_INET, ("127.0.0.1", 80)) for _ in range(4)]
    assert sorted(turns) == ["127.1.0.1", "127.1.0.1", "127.1.0.2", "127.1.0.2"]
    assert dialer.source_for(socket.AF_INET, ("10.0.0.5", 80)) is None
    assert dialer.source_for(socket.AF_INET6, ("::1", 80, 0, 0)) is None
    assert Dialer(()).source_for(socket.AF_INET, ("127.0.0.1", 80)) is None


def test_the_dialer_resolves_once_per_time_to_live(monkeypatch):
    from esr.engine import connections

    dialer = Dialer()
    lookups = []

    def lookup():
        lookups.append(1)
        return [("address", len(lookups))]

    assert dialer.resolve(("host", 80, False), lookup) == [("address", 1)]
    assert dialer.resolve(("host", 80, False), lookup) == [("address", 1)]
    monkeypatch.setattr(connections, "RESOLVE_TTL_S", -1.0)  # every answer stale at once
    assert dialer.resolve(("other", 80, False), lookup) == [("address", 2)]
    assert dialer.resolve(("other", 80, False), lookup) == [("address", 3)]


def test_the_open_files_limit_is_raised_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if soft > 1024:
            resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        raised = raise_open_files_limit()
        assert raised == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert raised == hard or hard == resource.RLIM_INFINITY and raised > 1024
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
