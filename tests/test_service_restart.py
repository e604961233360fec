"""The service stopped under a run, and started again on the same data folder.

`kill -9` during a run with a second run queued: after a restart the interrupted run has
its partial report card, counting everything the target served for it (the orphaned load
process is stopped gracefully by the new service, so nothing it sent is lost), the queued
run runs to its end, and the store passes SQLite's integrity check — with local workers, and
with a pool's standing worker (whose address the master left behind holds). A graceful stop
(SIGTERM) ends a run in progress as interrupted, with its report card. A store written by
a newer service is refused; an older one is upgraded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from commands import esr_locust, free_port, served
from services import (
    STEADY,
    make_token,
    running_service,
    start_service,
    wait_for_status,
)

from esr.launcher import Launch, RunSettings, end_process
from esr.report.summary import build_summary
from esr.service.dispatcher import stop_orphans
from esr.service.server import open_store
from esr.service.store import MIGRATIONS, SCHEMA_VERSION, STORE_FILE, Run

ENDED = ("passed", "failed", "cancelled", "error", "interrupted")


def submit(api, target: str, time_scale: float) -> str:
    answer = api.post("/v1/runs", json={"scenario": STEADY, "host": target,
                                        "time_scale": time_scale, "user_scale": 0.5})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def wait_for_live_figures(api, run_id: str) -> dict:
    """The run once the load process has reported at least once (it is really under way)."""
    run = wait_for_status(api, run_id, ("running",) + ENDED, timeout_s=60)
    while run["status"] == "running" and not (run["live"] or {}).get("requests"):
        run = wait_for_status(api, run_id, ("running",) + ENDED, timeout_s=60)
    assert run["status"] == "running", run
    return run


def store_row(data: Path, run_id: str) -> sqlite3.Row:
    with sqlite3.connect(f"file:{data / STORE_FILE}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def integrity(data: Path) -> str:
    """PRAGMA integrity_check on the store, opened read-only once no service has it open."""
    with sqlite3.connect(f"file:{data / STORE_FILE}?mode=ro", uri=True) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def assert_partial_report_card(api, target: str, run_id: str) -> dict:
    """An interrupted run's report card is served, and counts what the target served."""
    run = api.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "interrupted", run
    assert "the service stopped during the run" in run["reason"], run
    card = api.get(f"/v1/runs/{run_id}/report.html")
    assert card.status_code == 200, card.text
    assert card.headers["content-type"].startswith("text/html")
    summary = api.get(f"/v1/runs/{run_id}/summary").json()
    counted = served(target, run_id)
    assert summary["requests"]["total"] == counted["requests"]["total"] > 0, (summary, counted)
    assert run["verdict"]["requests"] == counted["requests"]["total"]
    return run


@contextlib.contextmanager
def workers_of(kind: str) -> Iterator[tuple[str, ...]]:
    """The service's options for its runs' workers: one it starts for each run, or one
    standing worker of its pool, started here and outliving any service."""
    if kind == "local":
        yield ("--workers", "1")
        return
    port = free_port()
    worker = subprocess.Popen(esr_locust("worker", "--master", f"127.0.0.1:{port}"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield ("--pool", f"127.0.0.1:{port}", "--min-workers", "1")
    finally:
        end_process(worker)


@pytest.mark.slow(reason="a run killed under the service, recovered, then a second run to its end")
@pytest.mark.parametrize("workers", ["local", "pool"])
def test_kill_9_during_a_run_with_one_queued_keeps_both_and_the_store(tmp_path, target,
                                                                       workers):
    """With a pool, the master left behind holds the pool address: the new service stops it
    before its lobby takes the address, and the standing worker serves the queued run."""
    data = tmp_path / "data"
    secret = make_token(data, "housing", "--allow-target", target)
    with workers_of(workers) as options:
        first = start_service(data, *options)  # a master (and a local worker) left behind
        try:
            with first.client(secret) as api:
                interrupted = submit(api, target, time_scale=0.6)
                queued = submit(api, target, time_scale=0.2)
                wait_for_live_figures(api, interrupted)
                assert api.get(f"/v1/runs/{queued}").json()["queue_position"] == 1
            os.kill(first.process.pid, signal.SIGKILL)
            first.process.wait()
            left = json.loads(store_row(data, interrupted)["pids"])
            assert len(left) == (2 if workers == "local" else 1)
            assert all(alive(pid) for pid in left), "the load outlives the service"
        finally:
            end_process(first.process)

        with running_service(data, *options) as second, second.client(secret) as api:
            wait_for_status(api, interrupted, ENDED, timeout_s=90)
            assert not any(alive(pid) for pid in left)
            run = assert_partial_report_card(api, target, interrupted)
            assert run["verdict"]["requests"] > 0
            done = wait_for_status(api, queued, ENDED, timeout_s=120)
            assert done["status"] == "passed", done
            summary = api.get(f"/v1/runs/{queued}/summary").json()
            assert summary["requests"]["total"] == served(target, queued)["requests"]["total"]
            kinds = [e["type"] for e in api.get(f"/v1/runs/{interrupted}/events",
                                                params={"after": 0}).json()]
            assert kinds[-1] == "done" and kinds.count("done") == 1, kinds
    assert integrity(data) == "ok"


def test_a_graceful_stop_during_a_run_ends_it_interrupted_with_its_report_card(tmp_path,
                                                                               target):
    data = tmp_path / "data"
    secret = make_token(data, "housing", "--allow-target", target)
    service = start_service(data)
    try:
        with service.client(secret) as api:
            run_id = submit(api, target, time_scale=0.6)
            wait_for_live_figures(api, run_id)
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=90) == 0, service.log.read_text()
    finally:
        end_process(service.process)
    assert store_row(data, run_id)["status"] == "interrupted"
    assert integrity(data) == "ok"
    with running_service(data) as again, again.client(secret) as api:
        assert_partial_report_card(api, target, run_id)


def test_a_graceful_stop_while_the_report_card_is_built_keeps_the_run_as_it_ended(tmp_path,
                                                                                  target):
    """The load ran to its end: the service stopping during the report card does not make
    the run interrupted."""
    data = tmp_path / "data"
    secret = make_token(data, "housing", "--allow-target", target)
    service = start_service(data)
    try:
        with service.client(secret) as api:
            run_id = submit(api, target, time_scale=0.2)
            run = wait_for_status(api, run_id, ("reporting",) + ENDED, timeout_s=90)
            assert run["status"] == "reporting", run
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=90) == 0, service.log.read_text()
    finally:
        end_process(service.process)
    row = store_row(data, run_id)
    assert row["status"] == "passed", dict(row)
    assert json.loads(row["verdict"])["requests"] == served(target, run_id)["requests"]["total"]


# ---- the store's schema ----------------------------------------------------------------------


def test_a_store_from_a_newer_service_is_refused_clearly(tmp_path):
    data = tmp_path / "data"
    make_token(data, "housing")
    with sqlite3.connect(data / STORE_FILE) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for command in (["serve", "--bind", "127.0.0.1:0"], ["tokens", "list"], ["audit"]):
        done = subprocess.run(esr_locust(*command, "--data", str(data)), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, (command, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert f"schema version {SCHEMA_VERSION + 1}" in done.stderr, done.stderr
        assert "newer esr-locust" in done.stderr, done.stderr
    with sqlite3.connect(data / STORE_FILE) as db:  # left as it was
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_an_empty_store_of_version_0_is_brought_to_the_current_schema(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sqlite3.connect(data / STORE_FILE).close()
    with running_service(data) as service:
        secret = service.token("housing")
        with service.client(secret) as api:
            assert api.get("/v1/runs").json()["runs"] == []
    with sqlite3.connect(data / STORE_FILE) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert integrity(data) == "ok"


def test_a_store_of_the_first_schema_is_upgraded_and_keeps_its_tokens_and_runs(tmp_path):
    """A store as the first migration left it, with a token and an ended run in it."""
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / STORE_FILE) as db:
        db.executescript(MIGRATIONS[0])
        db.execute("PRAGMA user_version = 1")
    old_data = tmp_path / "old"
    secret = make_token(old_data, "housing")  # a token and its hash, made as usual
    with sqlite3.connect(old_data / STORE_FILE) as old, \
            sqlite3.connect(data / STORE_FILE) as db:
        db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?)", old.execute(
            "SELECT id, agency, hash, policy, created_at, revoked_at FROM tokens").fetchone())
        db.execute("INSERT INTO runs (id, agency, token_id, status, scenario_name, settings, "
                   "body_sha256, run_dir, created_at, ended_at) VALUES ('r1', 'housing', 't', "
                   "'passed', 'old run', '{}', '', '/nowhere', '2026-01-01T00:00:00+00:00', "
                   "'2026-01-01T00:01:00+00:00')")
    with running_service(data) as service, service.client(secret) as api:
        runs = api.get("/v1/runs").json()["runs"]
        assert [(r["id"], r["status"], r["scenario"]) for r in runs] == [
            ("r1", "passed", "old run")]
    with sqlite3.connect(data / STORE_FILE) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert integrity(data) == "ok"


def test_a_data_folder_named_relatively_is_kept_absolute(tmp_path, monkeypatch):
    """Run directories are recorded under the store's folder: a service started again from
    another working directory must still find them."""
    monkeypatch.chdir(tmp_path)
    store = open_store(Path("data"))
    assert store.path == tmp_path / "data" / STORE_FILE


@pytest.mark.parametrize("recorded", [True, False], ids=["pids recorded", "pids unrecorded"])
def test_a_load_process_left_starting_is_stopped_gracefully_once_it_can_be(tmp_path, target,
                                                                           recorded):
    """stop_orphans at once on a load process still importing Locust (as if the service had
    been killed just after starting it, before or after recording its pid): it waits until
    the process takes a graceful stop, which then writes everything the target served."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "scenario.yml").write_text(STEADY)
    launch = Launch.prepare(RunSettings(scenario=run_dir / "scenario.yml", host=target,
                                        workers=0, time_scale=0.3, user_scale=0.5,
                                        run_dir=run_dir))
    launch.start()
    try:
        stop_orphans(Run(n=1, id=launch.run_id, agency="housing", token_id="tok", status="running",
                         scenario_name="demo", settings={}, run_dir=run_dir,
                         created_at="", started_at="", ended_at=None, cancel_requested=False,
                         pids=[p.pid for p in launch.processes] if recorded else None,
                         live=None, verdict=None, reason=None, idempotency_key=None,
                         body_sha256=""))
        assert launch.lead.wait(timeout=10) == 0
    finally:
        for process in launch.processes:
            end_process(process)
    summary = build_summary(run_dir)  # the results were written
    assert summary["requests"]["total"] == served(target, launch.run_id)["requests"]["total"]
