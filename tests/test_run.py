"""Real runs against the real demo target: ESR's counts equal what the target served, exactly.

Every run here is short (a few seconds of load, scaled), bounded, and aimed at a
target on 127.0.0.1 that this module starts and stops by PID.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from commands import as_at_a_terminal, served

from esr import __version__
from esr.demo.process import demo_target
from esr.launcher import RunSettings, run
from esr.population.citizens import CitizenFactory
from esr.run_directory import new_run_id, read_events
from esr.scenario.reader import load_scenario
from esr.wire import DEFAULT_BODY_FIELDS

ROOT = Path(__file__).resolve().parent.parent

COUNTING = """
scenario: exact counts
seed: 99
citizens:
  - name: seniors
    template: seniors
    count: 12
    behavior: {think_time: 50ms..300ms, retries: 2, patience: 100ms}
  - name: vets
    template: veterans
    count: 8
    behavior: {think_time: 0s..200ms, retries: 1}
load_profile: {ramp_up: 1s, sustain: %(sustain)s}
report: {formats: [json, html]}
"""


@pytest.fixture(scope="module")
def target():
    # Slow enough (4 applications at a time, 40 ms each) that requests queue and are in
    # flight when a run stops.
    with demo_target("--capacity", "4", "--service-ms", "40") as url:
        yield url


def admin(url: str, path: str, method: str = "GET") -> dict:
    request = urllib.request.Request(url + path, method=method, data=b"" if method == "POST"
                                     else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def write_scenario(tmp_path: Path, text: str, name: str = "scenario.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def outage(url: str, run_id: str, at_s: float, for_s: float) -> threading.Thread:
    """Kill the target's fee service mid-run and restore it: 503s, so retries and errors.
    Timed from the run's first request, not from its launch: a loaded machine can take
    longer to start Locust and its workers than the whole outage would last."""
    def act():
        deadline = time.monotonic() + 60
        while served(url, run_id)["requests"]["total"] == 0:
            if time.monotonic() > deadline:
                return  # the run never started: its own assertions say so
            time.sleep(0.1)
        time.sleep(at_s)
        admin(url, "/admin/services/svc-fee/kill", "POST")
        time.sleep(for_s)
        admin(url, "/admin/services/svc-fee/restore", "POST")
    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def assert_counts_match(summary: dict, served: dict) -> None:
    """ESR's summary against the target's own tally of the same run."""
    requests = summary["requests"]
    assert requests["total"] == served["requests"]["total"] > 0
    assert requests["failures"] == served["requests"]["by_status"].get("503", 0)
    assert summary["lost"] == {"workers": [], "requests_unaccounted": 0,
                               "requests_unreported_max": 0}
    # Journeys per cohort and outcome: every decided journey ended on the response the
    # target decided; a 503 either ended a journey (error) or was retried.
    ours = Counter()
    for cohort in summary["cohorts"]:
        for outcome, n in cohort["by_outcome"].items():
            ours[(cohort["age_band"], cohort["veteran"], outcome)] += n
    theirs = Counter({(row["age_band"], row["veteran"], row["outcome"]): row["n"]
                      for row in served["outcomes"]})
    decided = ("approved", "rejected", "blocked", "paused")
    assert {k: v for k, v in ours.items() if k[2] in decided} == \
           {k: v for k, v in theirs.items() if k[2] in decided}
    retries = requests["total"] - summary["citizens"]["total"]
    errors = sum(v for k, v in ours.items() if k[2] == "error")
    assert sum(v for k, v in theirs.items() if k[2] == "error") == errors + retries
    assert set(summary["citizens"]["by_outcome"]) <= {*decided, "error"}


def assert_labelled(served: dict, total: int, hitl_skip: bool) -> None:
    headers = served["headers"]
    assert headers["synthetic"] == headers["citizen"] == total
    assert headers["missing_synthetic"] == headers["missing_citizen"] == 0
    assert headers["user_agents"] == {f"esr-locust/{__version__}": total}
    assert headers["hitl_skip"] == (total if hitl_skip else 0)


def assert_same_citizens(url: str, run_id: str, scenario_path: Path) -> int:
    """Every citizen the target saw is exactly citizen k of its group, however it was made."""
    scenario = load_scenario(scenario_path)
    factories = {group.name: CitizenFactory(scenario, i)
                 for i, group in enumerate(scenario.citizens)}
    applicants = admin(url, f"/admin/applicants?run={run_id}")
    for citizen_id, body in applicants.items():
        group, _, number = citizen_id.rpartition("-")
        expected = factories[group].citizen(int(number))
        assert body == {key: expected[key] for key in DEFAULT_BODY_FIELDS}, citizen_id
    return len(applicants)


@pytest.mark.slow(reason="a 5 s run with an outage in it, to count retries and errors exactly")
@pytest.mark.parametrize("workers", [0, 2])
def test_counts_equal_what_the_target_served(tmp_path, target, workers):
    path = write_scenario(tmp_path, COUNTING % {"sustain": "4s"})
    run_id = new_run_id("exact counts")
    service_outage = outage(target, run_id, at_s=1.0, for_s=1.0)
    result = run(RunSettings(scenario=path, host=target, workers=workers, run_id=run_id,
                             run_dir=tmp_path / "run"))
    service_outage.join(timeout=10)  # restored before the next test
    served = admin(target, f"/admin/stats?run={result.run_id}")
    assert_counts_match(result.summary, served)
    assert result.summary["requests"]["failures"] > 0, "the outage should have caused 503s"
    assert_labelled(served, result.summary["requests"]["total"], hitl_skip=False)
    assert result.summary["workers"] == workers
    assert (tmp_path / "run" / "summary.json").is_file()
    # Locust's own statistics saw the same requests, final ones included.
    with open(tmp_path / "run" / "locust_stats.csv") as stats:
        aggregated = [row for row in csv.DictReader(stats) if row["Name"] == "Aggregated"]
    assert int(aggregated[0]["Request Count"]) == served["requests"]["total"]
    assert assert_same_citizens(target, result.run_id, path) > 20


@pytest.mark.slow(reason="two real runs, one process and one worker, compared citizen by citizen")
def test_one_worker_sends_the_citizens_one_process_sends(tmp_path, target):
    path = write_scenario(tmp_path, COUNTING % {"sustain": "2s"})
    seen = {}
    for workers in (0, 1):
        result = run(RunSettings(scenario=path, host=target, workers=workers,
                                 run_dir=tmp_path / f"run{workers}"))
        assert_same_citizens(target, result.run_id, path)
        seen[workers] = admin(target, f"/admin/applicants?run={result.run_id}")
    common = set(seen[0]) & set(seen[1])
    assert len(common) >= 15  # worker 0 of any run starts where a single process does
    assert all(seen[0][k] == seen[1][k] for k in common)


def test_hitl_skip_header_only_when_asked_and_slo_failure_exits_1(tmp_path, target):
    path = write_scenario(tmp_path, """
scenario: skip review
seed: 5
citizens: {template: low_income, count: 6, behavior: {think_time: 0s..100ms}}
load_profile: {sustain: 3s}
hitl_skip: true
slo: {p95_ms: 0.001, error_rate: 0.5}
""")
    result = run(RunSettings(scenario=path, host=target, workers=0, run_dir=tmp_path / "run"))
    served = admin(target, f"/admin/stats?run={result.run_id}")
    assert_labelled(served, result.summary["requests"]["total"], hitl_skip=True)
    assert served["hitl"]["paused"] == 0 and result.summary["hitl"]["paused"] == 0
    assert result.exit_code == 1
    checks = {c["name"]: c["passed"] for c in result.summary["slo"]["checks"]}
    assert checks == {"p95_ms": False, "error_rate": True}


@pytest.mark.slow(reason="Locust's own user count followed through three 5 s stages "
                  "(test_stages.py checks the table itself in microseconds)")
def test_the_shape_follows_the_stage_table(tmp_path, target):
    path = write_scenario(tmp_path, """
scenario: stages
seed: 3
citizens: {template: students, count: 10, behavior: {think_time: 100ms..200ms}}
load_profile:
  stages:
    - {duration: 5s, citizens: 4, spawn_rate: 50}
    - {duration: 5s, citizens: 12, spawn_rate: 50}
    - {duration: 5s, citizens: 2, spawn_rate: 50}
""")
    result = run(RunSettings(scenario=path, host=target, workers=0, run_dir=tmp_path / "run"))
    start = next(dt.datetime.fromisoformat(e["at"]) for e in read_events(tmp_path / "run")
                 if e["event"] == "test_start").timestamp()
    with open(tmp_path / "run" / "locust_stats_history.csv") as history:
        rows = [(float(r["Timestamp"]) - start, int(r["User Count"]))
                for r in csv.DictReader(history) if r["Name"] == "Aggregated"]
    # The last row is the one Locust writes as it quits, its citizens stopped: on a busy
    # machine it came up to a second early by the clock of the test_start event, stamped 14.
    assert rows[-1][1] == 0
    rows = rows[:-1]
    for begin, end, citizens in ((0, 5, 4), (5, 10, 12), (10, 15, 2)):
        # From one second after each transition to the stage's end, the count is the stage's.
        # A row stamped t (Locust truncates to the second) was written within a second after
        # t: to be the stage's, t + 1 <= end. Locust writes one about once a second: 5 s stages
        # leave room for at least one when the process is held up a while, as on a machine
        # busy with a parallel suite.
        inside = [count for t, count in rows if begin + 1.0 <= t <= end - 1.0]
        assert inside and set(inside) == {citizens}, (begin, rows)
    phases = [e["name"] for e in read_events(tmp_path / "run") if e["event"] == "phase"]
    assert phases == ["stage 1", "stage 2", "stage 3"]
    assert result.summary["requests"]["total"] > 0


@pytest.mark.slow(reason="a master and two workers until 50 requests, then a graceful stop")
def test_ctrl_c_stops_gracefully_and_loses_nothing(tmp_path, target):
    path = write_scenario(tmp_path, COUNTING % {"sustain": "2m"})
    run_dir = tmp_path / "run"
    # faulthandler: should it not end, SIGABRT makes it print where each thread stands.
    process = subprocess.Popen(
        [sys.executable, "-m", "esr.cli", "run", str(path), "--host", target, "--workers", "2",
         "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"}, preexec_fn=as_at_a_terminal)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            live = run_dir / "live.json"
            if live.is_file() and json.loads(live.read_text()).get("requests", 0) > 50:
                break
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            out, err = process.communicate(timeout=30)
            pytest.fail(f"still running 120 s after Ctrl-C; where it stood:\n{err[-8000:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "Traceback" not in err and "stopping gracefully" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["duration_s"] < 60
    assert_counts_match(summary, admin(target, f"/admin/stats?run={summary['run_id']}"))
    assert out.strip().endswith("report.html")


def test_unreachable_target_is_a_run_error(tmp_path, esr_cli_run):
    path = write_scenario(tmp_path, """
scenario: nobody home
citizens: {template: students, count: 2, behavior: {think_time: 100ms, retries: 0}}
load_profile: {sustain: 2s}
report: {formats: [json]}
""")
    result = esr_cli_run("run", str(path), "--host", "http://127.0.0.1:9", "--workers", "0",
                         "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 3, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["requests"]["total"] == summary["requests"]["failures"] > 0


def test_bad_input_exits_2_before_anything_runs(tmp_path, esr_cli):
    path = write_scenario(tmp_path, "scenario: x\ncitizens: {template: seniors, count: 0}\n"
                                    "load_profile: {sustain: 1m}\n")
    for args in (["run", str(path)], ["run", str(ROOT / "examples/demo.yml"), "--workers", "-1"],
                 ["run", str(ROOT / "examples/demo.yml"), "--time-scale", "0"]):
        result = esr_cli(*args, "--run-dir", str(tmp_path / "never"))
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "never").exists()


def test_workers_that_never_connect_are_a_run_error(tmp_path, target, monkeypatch):
    """Workers that die before connecting (here: started as `locust --version`)."""
    from esr import launcher as launch

    spawn = launch.Launch._spawn
    monkeypatch.setattr(launch.Launch, "_spawn", lambda self, role, arguments: spawn(
        self, role, arguments if role == "master" else ["--version"]))
    path = write_scenario(tmp_path, COUNTING % {"sustain": "2s"})
    with pytest.raises(launch.RunError, match="workers never connected") as raised:
        run(RunSettings(scenario=path, host=target, workers=2, run_dir=tmp_path / "run",
                        workers_wait_s=3))
    assert raised.value.exit_code == 3
