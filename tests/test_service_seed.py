"""The seed's example of issue 13, run as a script against a service the test starts.

The agency's code, as the issue shows it, with only its token taken from the environment
(ESR_URL names the service): it prints the job id, the run's live lines while it goes on,
and a report link that a person can open without a token.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
import pytest
from services import running_service

SEED = '''
import os
from esr import EsrClient
esr = EsrClient(token=os.environ["ESR_TOKEN"])   # ESR_URL names the service
job = esr.run("rental_stress.yml")
print("Simulation ID:", job.id)
esr.watch(job.id)                        # streams live stats to the console
report = esr.report(job.id, format="html")
print("Report at:", report.url)          # open it in a browser
'''
# The demo's citizens in a shorter launch: ramp up, hold, a spike.
SCENARIO = """
esr: 1
scenario: "HUD Rental Stress"
target: {target}
seed: 42
citizens:
  - {{template: low_income, count: 20, behavior: {{think_time: 200ms..1s}}}}
  - {{template: seniors, count: 15, behavior: {{think_time: 300ms..1500ms}}}}
  - {{template: veterans, count: 10, behavior: {{think_time: 200ms..1s}}}}
load_profile: {{ramp_up: 2s, sustain: 7s, spike_at: 4s, spike_size: 30, spike_duration: 2s}}
slo: {{p95_ms: 800, error_rate: 0.05}}
"""
CLOCK = re.compile(r"^(\d\d):(\d\d)  ")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("seed")) as running:
        yield running


def test_the_seed_example_prints_the_job_live_lines_and_a_report_link_that_opens(
        service, target, tmp_path):
    (tmp_path / "rental_stress.yml").write_text(SCENARIO.format(target=target))
    (tmp_path / "seed.py").write_text(SEED)
    secret = service.token("hud", "--allow-target", target)
    done = subprocess.run([sys.executable, "seed.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=180,
                          env={**os.environ, "ESR_URL": service.url, "ESR_TOKEN": secret})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()

    first, *live, last = lines
    job_id = first.removeprefix("Simulation ID: ")
    assert first.startswith("Simulation ID: ") and re.fullmatch(r"[\w.-]+", job_id), first
    with service.client(secret) as api:
        assert api.get(f"/v1/runs/{job_id}").json()["status"] == "passed"

    # Live lines, each on the run's clock: its status changes, its figures as it goes on,
    # and its end with the verdict's figures.
    assert live and all(CLOCK.match(line) for line in live), lines
    seconds = [int(m[1]) * 60 + int(m[2]) for m in map(CLOCK.match, live)]
    assert seconds == sorted(seconds) and seconds[-1] >= 5, lines
    figures = [line for line in live if "citizens" in line and "req/s" in line]
    assert len(figures) >= 2, lines
    assert any(line.endswith("  running") for line in live), lines
    assert re.search(r"  run passed: [\d,]+ requests, 0 failed, p95 \d+ ms$", live[-1]), lines

    # A link a person opens in a browser: no token, straight to the report card.
    assert last.startswith(f"Report at: {service.url}/v1/runs/{job_id}/report.html?"), last
    card = httpx.get(last.removeprefix("Report at: "), timeout=30)
    assert card.status_code == 200 and card.headers["content-type"].startswith("text/html")
    assert 'id="verdict"' in card.text
    assert (tmp_path / "reports" / job_id / "report.html").read_bytes() == card.content
