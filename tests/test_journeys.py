"""Journeys beyond the default: several steps, the open model, jitter, and the Python API.

`target` is the session's demo target (tests/conftest.py: 8 applications at once, 5 ms each);
the tests that need a slower one start their own.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from commands import free_port, served

from esr import EsrClient
from esr.demo.process import demo_target
from esr.engine.journey import decision_of
from esr.launcher import RunSettings, run

ROOT = Path(__file__).resolve().parent.parent


def scenario(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yml"
    path.write_text(text)
    return path


def test_a_multi_step_journey_carries_values_between_steps(tmp_path, target):
    path = scenario(tmp_path, """
scenario: three steps
seed: 8
citizens: {template: families, count: 6, behavior: {think_time: 50ms..150ms, retries: 0}}
load_profile: {sustain: 4s}
hitl_skip: true
journey:
  - name: form
    request: GET /form
    extract: {token: json.form_token}
  - name: apply
    request: POST /apply
    headers: {X-Form-Token: "{{ vars.token }}"}
    json:
      citizen_id: "{{ citizen.citizen_id }}"
      name: "{{ citizen.first_name }} {{ citizen.last_name }}"
      age: "{{ citizen.age }}"
      income: "{{ citizen.income }}"
      veteran: "{{ citizen.veteran }}"
      household_size: "{{ citizen.household_size }}"
      form_token: "{{ vars.token }}"
    expect: [200, 451]
    extract: {application: json.application_id}
  - name: status
    request: "GET /status/{{ vars.application }}"
    expect: [200]
""")
    result = run(RunSettings(scenario=path, host=target, workers=0, run_dir=tmp_path / "run"))
    seen = served(target, result.run_id)
    by_endpoint = seen["requests"]["by_endpoint"]
    summary = result.summary
    assert by_endpoint["GET /form"] >= by_endpoint["POST /apply"] > 5
    assert seen["requests"]["total"] == summary["requests"]["total"]
    assert {e["name"] for e in summary["endpoints"]} == {"form", "apply", "status"}
    # Typed values survive templating: no 400s, so age/income/veteran arrived as JSON types.
    assert "400" not in seen["requests"]["by_status"]
    # A blocked application has no id: its journey ends at apply, as blocked.
    outcomes = summary["citizens"]["by_outcome"]
    blocked_at_target = sum(r["n"] for r in seen["outcomes"] if r["outcome"] == "blocked")
    assert outcomes.get("blocked", 0) == blocked_at_target
    # Every approved or rejected application is looked up, unless the run ended first.
    looked_up = by_endpoint["POST /apply"] - blocked_at_target
    incomplete = outcomes.get("incomplete", 0)
    assert looked_up - incomplete <= by_endpoint["GET /status/{id}"] <= looked_up
    # The journey's outcome is its last response's: the status lookup names the decision.
    decided = outcomes.get("approved", 0) + outcomes.get("rejected", 0)
    assert decided == by_endpoint["GET /status/{id}"]
    assert set(outcomes) <= {"approved", "rejected", "blocked", "incomplete"}


class Answer:
    def __init__(self, content: bytes):
        self.content = content


@pytest.mark.parametrize(("content", "decision"), [
    (b'{"status": "approved"}', "approved"),
    (b' {"status":"rejected", "reason": "income"}\n', "rejected"),
    (b'{"status": "approved", "id": 123456789012345678901234567890}', "approved"),  # > 64 bits
    (b'{"status": "rejected", "score": NaN}', "rejected"),  # Python's json reads NaN
    (b'{"status": "pending"}', None),
    (b'{"result": {"status": "approved"}}', None),  # only the top level decides
    (b'["status", "approved"]', None),
    (b'{"status": "approved"', None),  # cut short
    (b'\xff{"status": "approved"}', None),  # not UTF-8
    (b"", None),
])
def test_the_decision_is_the_top_level_status_of_a_json_answer(content, decision):
    assert decision_of(Answer(content), {}) == decision
    assert decision_of(Answer(content), {"blocked": "HIPAA"}) == "blocked"


@contextmanager
def cookie_service():
    """A service that hands each visitor a cookie naming it, and notes the cookies it is sent:
    (path, citizen, Cookie header) for every request."""
    seen: list[tuple[str, str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            citizen = self.headers.get("X-ESR-Citizen", "")
            seen.append((self.path, citizen, self.headers.get("Cookie", "")))
            body = b'{"status": "approved"}'
            self.send_response(200)
            self.send_header("Set-Cookie", f"visitor={citizen}; Path=/")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("steps", [1, 2])
def test_cookies_stay_with_the_citizen_they_were_given_to(tmp_path, steps):
    """A citizen is a new person: it never arrives with the cookie of the citizen the same
    Locust user played before; within its own visit, its cookies come back to the service."""
    journey = "\n".join(f"  - {{name: step{k}, request: GET /step{k}}}" for k in range(steps))
    path = scenario(tmp_path, f"""
scenario: cookies
citizens: {{template: families, count: 3, behavior: {{think_time: 5ms..20ms, retries: 0}}}}
load_profile: {{sustain: 2s}}
journey:
{journey}
""")
    with cookie_service() as (url, seen):
        result = run(RunSettings(scenario=path, host=url, workers=0, run_dir=tmp_path / "run"))
    assert result.summary["requests"]["total"] == len(seen) > 30
    first_steps = [(citizen, cookie) for path, citizen, cookie in seen if path == "/step0"]
    assert all(cookie == "" for _, cookie in first_steps), first_steps[:5]
    later = [(citizen, cookie) for path, citizen, cookie in seen if path != "/step0"]
    assert all(cookie == f"visitor={citizen}" for citizen, cookie in later), later[:5]
    assert len(later) >= (len(first_steps) - 3 if steps > 1 else 0)


def test_the_open_model_keeps_arrivals_on_time_while_the_target_falls_behind(tmp_path):
    # One application at a time, 100 ms each: at most ~10/s, while 30/s arrive. The pool
    # grows, so arrivals still start on time: the target's slowness shows as citizens who
    # walk away, not as a backlog of ESR's own passed off as the target's latency.
    with demo_target("--capacity", "1", "--service-ms", "100") as slow:
        path = scenario(tmp_path, """
scenario: open model
seed: 4
citizens: {template: students, count: 1, behavior: {patience: 100ms, retries: 0}}
load_profile: {arrival_rate: 30/s, sustain: 4s}
""")
        result = run(RunSettings(scenario=path, host=slow, workers=0, run_dir=tmp_path / "run"))
        seen = served(slow, result.run_id)
    arrivals = result.summary["arrivals"]
    assert arrivals["started"] == result.summary["citizens"]["total"] == \
        seen["requests"]["total"]
    assert arrivals["started"] + arrivals["dropped"] == arrivals["scheduled"] >= 110
    # A few may drop while new citizens start on a busy machine; none waits past 100 ms.
    assert arrivals["dropped"] <= 6 and arrivals["late_ms_max"] < 150, arrivals
    assert result.summary["citizens"]["frustrated"] > 0


def test_jitter_is_part_of_the_latency_citizens_experience(tmp_path, target):
    path = scenario(tmp_path, """
scenario: jitter
seed: 2
citizens: {template: students, count: 4, behavior: {think_time: 0s..50ms}}
load_profile: {sustain: 3s}
network_jitter_ms: 400
""")
    result = run(RunSettings(scenario=path, host=target, workers=0, run_dir=tmp_path / "run"))
    # Uniform extra delay of 0-400 ms on a ~5 ms service: the mean must sit near 200 ms.
    assert 120 < result.summary["requests"]["avg_ms"] < 300
    assert result.summary["requests"]["max_ms"] > 300


def test_the_python_api_runs_in_the_background_and_can_be_watched(tmp_path, target):
    path = scenario(tmp_path, """
scenario: api
seed: 1
citizens: {template: veterans, count: 5, behavior: {think_time: 50ms..100ms}}
load_profile: {ramp_up: 1s, sustain: 3s}
""")
    client = EsrClient(reports_dir=tmp_path / "reports")
    job = client.run(path, host=target)
    assert not job.done and job.run_dir.parent == tmp_path / "reports"
    snapshots = list(client.live(job.id, interval=0.5))
    assert snapshots and snapshots[-1]["final"]
    assert {"phase", "citizens", "rps", "p95_ms", "outcomes"} <= set(snapshots[-1])
    result = job.wait(timeout=60)
    assert result.exit_code == 0 and client.job(job.id) is job
    assert result.summary["requests"]["total"] == served(target, job.id)["requests"]["total"]


@pytest.mark.slow(reason="Locust's web UI started, polled until all citizens run, left to quit")
def test_locust_web_ui_runs_the_same_classes_and_shape(tmp_path, target):
    """`locust -f locustfiles/esr.py` with ESR_SCENARIO: Locust's own UI drives ESR's run."""
    path = scenario(tmp_path, """
scenario: in the web UI
seed: 6
citizens:
  - {template: seniors, count: 3, behavior: {think_time: 100ms..200ms}}
  - {template: students, count: 2, behavior: {think_time: 100ms..200ms}}
load_profile: {sustain: 4s}
report: {formats: [json]}
""")
    port = free_port()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "esr.py"),
         "--autostart", "--autoquit", "1", "--web-host", "127.0.0.1", "--web-port", str(port),
         "--host", target, "--esr-run-dir", str(run_dir), "--esr-run-id", "web-ui-test"],
        env={**os.environ, "ESR_SCENARIO": str(path)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        stats = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (stats and stats["user_count"] == 5):
            time.sleep(0.3)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/requests",
                                            timeout=2) as response:
                    stats = json.loads(response.read())
            except OSError:
                continue
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert stats and stats["user_count"] == 5, output
    assert process.returncode == 0, output
    journeys = (run_dir / "esr_journeys.csv").read_text().splitlines()
    assert journeys[0].startswith("group,") and len(journeys) > 2
    with open(run_dir / "esr_latency.csv") as latency:
        ours = sum(int(row["requests"]) for row in csv.DictReader(latency))
    assert ours == served(target, "web-ui-test")["requests"]["total"] > 10


def test_citizens_walk_away_from_a_step_far_beyond_their_patience(tmp_path):
    # Every application takes 60 ms; these citizens' patience is 20 ms, so each is
    # frustrated by /apply and walks away before looking its application up.
    with demo_target("--capacity", "8", "--service-ms", "60") as slow:
        path = scenario(tmp_path, """
scenario: impatient
seed: 12
citizens: {template: students, count: 4, behavior: {think_time: 0s..50ms, patience: 20ms,
           retries: 0}}
load_profile: {sustain: 3s}
journey:
  - {name: apply, request: POST /apply, json: {citizen_id: "{{ citizen.citizen_id }}",
     name: "{{ citizen.name }}", age: "{{ citizen.age }}", income: "{{ citizen.income }}",
     veteran: "{{ citizen.veteran }}", household_size: "{{ citizen.household_size }}"}}
  - {name: status, request: "GET /status/{{ vars.id }}"}
""")
        result = run(RunSettings(scenario=path, host=slow, workers=0, run_dir=tmp_path / "run"))
        seen = served(slow, result.run_id)
    outcomes = result.summary["citizens"]["by_outcome"]
    assert outcomes.get("abandoned", 0) > 5
    assert set(outcomes) <= {"abandoned", "blocked", "paused", "incomplete"}
    assert "GET /status/{id}" not in seen["requests"]["by_endpoint"]
    assert result.summary["citizens"]["frustrated"] == result.summary["citizens"]["total"]


def test_a_citizen_adds_nothing_to_locust_s_instance_dict(tmp_path):
    """A citizen's own state is in slots: added to the attributes Locust keeps in a user's
    __dict__, it made that dict a larger one of each citizen's own (464 bytes, not 136)."""
    from types import SimpleNamespace

    from locust import FastHttpUser, task
    from locust.env import Environment

    from esr.engine.compiler import user_classes
    from esr.scenario.reader import load_scenario

    class Bare(FastHttpUser):
        host = "http://127.0.0.1:9"

        @task
        def apply(self):
            pass

    (citizens,) = user_classes(load_scenario(scenario(tmp_path, """
scenario: one group
target: http://127.0.0.1:9
citizens: {template: students, count: 1}
load_profile: {sustain: 1s}
"""))).values()
    environment = Environment(user_classes=[citizens, Bare])
    runner = environment.create_local_runner()
    environment.esr = SimpleNamespace(renderers=["a step"], random=None, arrivals=None)  # on_start
    citizen, bare = citizens(environment), Bare(environment)
    citizen.on_start()
    citizen.stop_asked = True  # as a stop does
    assert vars(citizen).keys() == vars(bare).keys()
    runner.quit()
