"""A master and workers started as separate commands, as on separate hosts."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from commands import as_at_a_terminal, esr_locust, free_port, served

from esr.launcher import end_process
from esr.run_directory import read_events

SCENARIO = """
scenario: spread out
seed: 31
citizens: {template: students, count: 4, behavior: {think_time: 50ms..150ms}}
load_profile: {sustain: 2m}
report: {formats: [html]}
"""


@pytest.mark.slow(reason="a master and two workers started as separate commands")
def test_the_master_refuses_a_worker_with_another_scenario(tmp_path, target):
    scenario, other = tmp_path / "scenario.yml", tmp_path / "other.yml"
    scenario.write_text(SCENARIO)
    other.write_text(SCENARIO.replace("seed: 31", "seed: 32"))
    port, run_dir = free_port(), tmp_path / "run"
    master = subprocess.Popen(esr_locust(
        "master", str(scenario), "--expect-workers", "1", "--bind", f"127.0.0.1:{port}",
        "--host", target, "--run-dir", str(run_dir)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=as_at_a_terminal)
    good = subprocess.Popen(esr_locust("worker", str(scenario), "--master", f"127.0.0.1:{port}"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (run_dir / "live.json").is_file():
            time.sleep(0.2)
        # A second worker, with another scenario file, joins the running test: refused. The
        # run lasts until then, however long this worker takes to start (Ctrl-C ends it).
        refused = subprocess.run(esr_locust("worker", str(other), "--master",
                                            f"127.0.0.1:{port}"),
                                 capture_output=True, text=True, timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _requests_so_far(run_dir) <= 10:
            time.sleep(0.2)
        master.send_signal(signal.SIGINT)
        out, err = master.communicate(timeout=120)
        good.wait(timeout=30)  # told to quit by the master when the run ended
    finally:
        for process in (master, good):
            end_process(process)
    assert refused.returncode == 0  # told to quit by the master, it leaves cleanly
    assert master.returncode == 0, err
    assert good.returncode == 0
    (event,) = [e for e in read_events(run_dir) if e["event"] == "worker_refused"]
    assert str(other) in event["reason"] and str(scenario) in event["reason"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["requests"]["total"] > 10 and out.strip().endswith("report.html")
    # The refused worker started no citizens: the target saw only what the report counts.
    assert served(target, summary["run_id"])["requests"]["total"] == summary["requests"]["total"]
    # It was never one of the run's workers (it identified itself first: messages.IDENTIFY;
    # tests/test_locust_compat.py shows such a worker is handed no user).
    assert json.loads((run_dir / "esr_counters.json").read_text())["workers"] == 1


WORKER_REPORT_S = 3.0  # locust.runners.WORKER_REPORT_INTERVAL (importing Locust here would
# monkey-patch the test process)
LONGER = """
scenario: a worker dies
seed: 32
citizens: {template: students, count: 30, behavior: {think_time: 50ms..150ms}}
load_profile: {sustain: 32s}
report: {formats: [json]}
"""




@pytest.mark.slow(reason="Locust calls a worker missing only after 8 missed heartbeats, and the "
                  "run must outlast the others taking over its citizens")
def test_a_worker_killed_mid_run_is_recorded_with_a_bound_and_its_citizens_go_on(tmp_path,
                                                                                 target):
    scenario, run_dir, port = tmp_path / "scenario.yml", tmp_path / "run", free_port()
    scenario.write_text(LONGER)
    master = subprocess.Popen(esr_locust(
        "master", str(scenario), "--expect-workers", "3", "--bind", f"127.0.0.1:{port}",
        "--host", target, "--run-dir", str(run_dir)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    workers = [subprocess.Popen(esr_locust("worker", str(scenario), "--master",
                                           f"127.0.0.1:{port}"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(3)]
    try:
        # Every citizen active, then a report interval more: each worker has told the master
        # its pace once all its citizens run (killed in the ramp, on a busy machine, its last
        # report showed a pace its citizens then outran, and the bound was short).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _citizens_active(run_dir) < 30:
            time.sleep(0.2)
        time.sleep(WORKER_REPORT_S + 0.5)
        workers[0].kill()  # no goodbye, no final report: as if its host vanished
        killed_at = time.time()
        _, err = master.communicate(timeout=120)
    finally:
        for process in (master, *workers):
            end_process(process)
    assert master.returncode == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    (lost,) = summary["lost"]["workers"]
    assert lost["reason"] == "missed heartbeats" and lost["citizens"] == 10
    assert summary["lost"]["requests_unreported_max"] == lost["unreported_max"]
    unreported = served(target, summary["run_id"])["requests"]["total"] \
        - summary["requests"]["total"]
    assert 0 <= unreported <= lost["unreported_max"], (unreported, lost)
    # The other two workers took over its citizens within seconds of Locust missing it.
    history = list(csv.DictReader((run_dir / "locust_stats_history.csv").open()))
    after = [int(row["User Count"]) for row in history
             if row["Name"] == "Aggregated" and int(row["Timestamp"]) > killed_at + 14]
    assert after and max(after) == 30, after


def _citizens_active(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "live.json").read_text())["citizens"]
    except (OSError, ValueError, KeyError):
        return 0


def _requests_so_far(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "live.json").read_text())["requests"]
    except (OSError, ValueError, KeyError):
        return 0


def test_bad_master_addresses_and_scenarios_are_bad_input(tmp_path, esr_cli):
    bad = tmp_path / "bad.yml"
    bad.write_text("scenario: x\n")
    for args in (["worker", str(bad), "--master", "127.0.0.1:5557"],
                 ["worker", str(bad), "--master", "nowhere"],
                 ["master", str(bad), "--bind", "127.0.0.1:99999"]):
        result = esr_cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (args, result.stderr)


def test_every_command_the_compose_file_needs_exists(esr_cli):
    for command in ("master", "worker", "target"):
        result = esr_cli(command, "--help")
        assert result.returncode == 0 and "usage" in result.stdout
    assert Path(__file__).resolve().parent.parent.joinpath("locustfiles", "esr.py").is_file()


COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


def test_the_compose_file_is_valid_for_a_real_compose_implementation():
    """Debian's docker-compose (1.29) checks the file without a Docker engine."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (scripts/test installs it)")
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_compose_layout_scales_workers_and_runs_esr_commands(esr_cli):
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    # The target and the standing workers always; the master or the service by profile.
    assert {name for name, service in services.items() if not service.get("profiles")} == \
        {"target", "worker"}
    assert services["master"]["profiles"] == ["master"]
    assert services["service"]["profiles"] == ["service"]
    worker = services["worker"]
    # `docker compose up --scale worker=8` needs no fixed name and no published port.
    assert "container_name" not in worker and "ports" not in worker
    # A standing worker (no scenario), serving run after run, of whichever answers as `pool`.
    assert worker["command"] == ["worker", "--master", "pool:5557"]
    assert esr_cli(*worker["command"][:1], "--help").returncode == 0
    assert worker["restart"] == "unless-stopped" and "depends_on" not in worker
    for name in ("master", "service"):
        assert services[name]["networks"] == {"default": {"aliases": ["pool"]}}
        assert "5557" in services[name]["expose"]
    assert "--expect-workers" in services["master"]["command"]
    serve = services["service"]["command"]
    assert serve[serve.index("--pool") + 1] == "0.0.0.0:5557" and "--min-workers" in serve
    for name in ("target", "master", "worker"):
        assert any(v.endswith(":/esr/examples:ro") for v in services[name]["volumes"])
        assert any(v.endswith(":/esr/reports") for v in services[name]["volumes"])
        assert esr_cli(services[name]["command"][0], "--help").returncode == 0


@pytest.mark.parametrize("mode, expected", [(None, "--web"), ("headless", "--headless")])
def test_the_compose_master_serves_the_web_ui_unless_told_to_run_headless(mode, expected):
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (scripts/test installs it)")
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_MODE", "WORKERS")}
    if mode:
        env["MASTER_MODE"] = mode
    resolved = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config"], env=env,
                              capture_output=True, text=True, timeout=60, check=True).stdout
    master = yaml.safe_load(resolved)["services"]["master"]
    assert expected in master["command"]
    # Published on the host's loopback only: the web UI has no login (docker-compose 1.29
    # resolves a port with a host address to this short form).
    assert master["ports"] == ["127.0.0.1:8089:8089/tcp"]
