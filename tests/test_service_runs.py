"""A run through the service counts exactly what the target served, as `run` does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.commands import served
from tests.services import running_service, wait_for_status

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = (ROOT / "examples" / "demo.yml").read_text()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("service")) as running:
        yield running


def test_a_run_submitted_to_the_service_counts_every_request_the_target_served(service,
                                                                                target):
    secret = service.token("housing", "--allow-target", target)
    with service.client(secret) as api:
        answer = api.post("/v1/runs", json={"scenario": SCENARIO, "host": target,
                                            "time_scale": 0.3, "user_scale": 0.5})
        assert answer.status_code == 202, answer.text
        run_id = answer.json()["id"]
        run = wait_for_status(api, run_id, ("passed", "failed", "error"))
        summary = api.get(f"/v1/runs/{run_id}/summary").json()
    counted = served(target, run_id)
    assert run["status"] == "passed", run
    assert summary["requests"]["total"] == counted["requests"]["total"] > 0
    assert run["verdict"]["requests"] == counted["requests"]["total"]
