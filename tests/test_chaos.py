"""Chaos on the load's timeline, against the real demo target: faults, their windows, recovery."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from esr.demo.process import demo_target
from esr.launcher import RunSettings, run
from esr.report.card import read_report_card
from esr.run_directory import read_table


@pytest.fixture(scope="module")
def target():
    with demo_target() as url:
        yield url


def scenario(tmp_path: Path, chaos: str, sustain: str = "8s", slo: str = "") -> Path:
    path = tmp_path / "scenario.yml"
    path.write_text(f"""
scenario: chaos rehearsal
seed: 21
citizens: {{template: low_income, count: 6, behavior: {{think_time: 50ms..150ms, retries: 0}}}}
load_profile: {{sustain: {sustain}}}
report: {{formats: [html]}}
{slo}
chaos:
{chaos}
""")
    return path


def services(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/admin/services", timeout=10) as response:
        return json.loads(response.read())


def test_a_killed_service_fails_requests_only_inside_its_window(tmp_path, target):
    path = scenario(tmp_path, "  - kill_pod svc-fee after 3s for 2s",
                    slo="slo: {error_rate: 0.05, recovery_time_s: 3}")
    result = run(RunSettings(scenario=path, host=target, workers=0, run_dir=tmp_path / "run"))
    (action,) = result.summary["chaos"]
    assert action["action"] == "kill_pod" and action["ok"] is True
    assert action["at_s"] == pytest.approx(3, abs=0.5)
    assert action["until_s"] == pytest.approx(5, abs=0.5) and action["undo"]["ok"] is True
    assert services(target) == {"svc-fee": "up"}
    failing = [float(row["bucket_start"]) for row in read_table(tmp_path / "run", "latency")
               if int(row["failures"])]
    started = min(float(row["bucket_start"]) for row in read_table(tmp_path / "run", "latency"))
    assert failing, "the outage should show as failed requests"
    # Errors only inside the window, give or take one 1-second bucket.
    assert all(action["at_s"] - 1.5 <= t - started <= action["until_s"] + 1.5 for t in failing)
    card = read_report_card(tmp_path / "run")
    (effect,) = card["chaos"]
    assert effect["during"]["error_rate"] > 0.5 and effect["before"]["error_rate"] == 0
    assert effect["recovery_s"] is not None and effect["recovery_s"] <= 2
    checks = {c["name"]: c for c in result.summary["slo"]["checks"]}
    assert checks["recovery_time_s"]["passed"] and checks["recovery_time_s"]["actual"] <= 2
    scopes = {scope["scope"].split(" (")[0]: scope["passed"] for scope in card["slo_scopes"]}
    assert scopes["during kill_pod svc-fee"] is False
    assert scopes["before kill_pod svc-fee"] is True and scopes["after kill_pod svc-fee"] is True


def test_a_failing_action_is_recorded_and_the_run_goes_on(tmp_path, target):
    path = scenario(tmp_path, "\n".join([
        "  - {action: http, target: 'http://127.0.0.1:9/nowhere', method: POST, after: 1s}",
        "  - kill_pod svc-fee after 2s for 10m"]), sustain="4s")
    result = run(RunSettings(scenario=path, host=target, workers=0, run_dir=tmp_path / "run"))
    failed, outlived = result.summary["chaos"]
    assert failed["ok"] is False and "127.0.0.1:9" in failed["detail"]
    assert result.summary["requests"]["total"] > 10 and result.exit_code in (0, 1)
    # Killed "for 10 minutes" in a 4-second run: restored when the run ended.
    assert outlived["undo"] == {"ok": True, "detail": outlived["undo"]["detail"], "early": True}
    assert services(target) == {"svc-fee": "up"}


def test_client_side_latency_counts_in_the_window(tmp_path, target):
    path = scenario(tmp_path, "  - {action: latency, delay: 300ms, endpoint: apply, after: 2s, "
                    "duration: 2s}", sustain="6s")
    result = run(RunSettings(scenario=path, host=target, workers=2, run_dir=tmp_path / "run"))
    (effect,) = read_report_card(tmp_path / "run")["chaos"]
    # Buckets at the window's edges mix in undelayed requests: the p95 shows the delay.
    assert effect["ok"] and effect["during"]["p95_ms"] >= 300 > effect["before"]["p95_ms"]
    assert result.summary["lost"]["requests_unaccounted"] == 0


def test_commands_need_the_flag(tmp_path, target, esr_cli_run):
    path = scenario(tmp_path, "  - {action: command, command: 'echo chaos-was-here', after: 1s}",
                    sustain="2s")
    refused = esr_cli_run("run", str(path), "--host", target, "--workers", "0", "--run-dir",
                          str(tmp_path / "refused"))
    assert refused.returncode == 2 and "--allow-chaos-commands" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "refused").exists()
    result = run(RunSettings(scenario=path, host=target, workers=0, run_dir=tmp_path / "run",
                             allow_chaos_commands=True))
    (action,) = result.summary["chaos"]
    assert action["ok"] and "chaos-was-here" in action["detail"]


def test_a_bad_minute_cannot_hide_in_a_good_run(tmp_path, target):
    """Sliding windows: the whole run is within its error budget, its worst window is not."""
    path = scenario(tmp_path, "  - kill_pod svc-fee after 3s for 2s", sustain="10s",
                    slo="slo: {error_rate: 0.4, window: 2s}")
    result = run(RunSettings(scenario=path, host=target, workers=0, run_dir=tmp_path / "run"))
    checks = {c["name"]: c for c in result.summary["slo"]["checks"]}
    assert checks["error_rate"]["passed"] is True
    windowed = checks["error_rate (every 2s window)"]
    assert windowed["passed"] is False and windowed["actual"] > 0.4
    assert 1.5 <= windowed["worst_at_s"] <= 5.5
    assert result.exit_code == 1


def test_abort_on_fail_stops_a_failing_run_early(tmp_path, target, esr_cli_run):
    urllib.request.urlopen(urllib.request.Request(
        f"{target}/admin/services/svc-fee/kill", method="POST", data=b""), timeout=10).close()
    try:
        path = scenario(tmp_path, "  - restore_service svc-fee after 50s", sustain="60s",
                        slo="slo: {error_rate: 0.05, window: 2s, abort_on_fail: true}")
        result = esr_cli_run("run", str(path), "--host", target, "--workers", "0",
                             "--run-dir", str(tmp_path / "run"))
    finally:
        urllib.request.urlopen(urllib.request.Request(
            f"{target}/admin/services/svc-fee/restore", method="POST", data=b""),
            timeout=10).close()
    assert result.returncode == 1, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["aborted"] and "error_rate" in summary["aborted"]["reason"]
    assert summary["duration_s"] < 20
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Stopped early by abort_on_fail" in html and ">FAIL<" in html


def test_a_compose_project_is_driven_with_docker_compose(tmp_path, target, monkeypatch):
    """No Docker engine runs here: a stand-in `docker` on PATH records what ESR asks of it."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "docker-calls.txt"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho done\n')
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    path = scenario(tmp_path, "  - {action: kill_pod, target: svc-fee, compose_project: esr, "
                    "after: 1s, duration: 1s}", sustain="3s")
    result = run(RunSettings(scenario=path, host=target, workers=0, run_dir=tmp_path / "run",
                             allow_chaos_containers=True))
    (action,) = result.summary["chaos"]
    assert action["ok"] and action["undo"]["ok"]
    assert calls.read_text().splitlines() == ["compose -p esr kill svc-fee",
                                              "compose -p esr start svc-fee"]
    assert result.summary["requests"]["failures"] == 0  # the demo target was left alone


def test_injected_failures_and_signals(tmp_path, target):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        pid_file = tmp_path / "sleeper.pid"
        pid_file.write_text(f"{sleeper.pid}\n")
        path = scenario(tmp_path, "\n".join([
            "  - {action: error_rate, rate: 1.0, endpoint: apply, after: 1s, duration: 1s}",
            f"  - {{action: signal, target: '{pid_file}', signal: SIGTERM, after: 2s}}"]),
            sustain="3s")
        result = run(RunSettings(scenario=path, host=target, workers=0,
                                 run_dir=tmp_path / "run", allow_chaos_signals=True))
        assert sleeper.wait(timeout=10) == -15  # the signal reached the process
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    injected, signalled = result.summary["chaos"]
    assert injected["ok"] and signalled["ok"] and f"pid {sleeper.pid}" in signalled["detail"]
    errors = {e["kind"]: e["count"] for e in result.summary["errors"]}
    assert errors.get("injected failure (chaos)", 0) > 0
    # Injected failures are still real requests: the target served every one.
    served = json.loads(urllib.request.urlopen(
        f"{target}/admin/stats?run={result.run_id}", timeout=10).read())
    assert served["requests"]["total"] == result.summary["requests"]["total"]
