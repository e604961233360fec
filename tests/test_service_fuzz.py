"""The service's API fuzzed against its own OpenAPI document (/v1/openapi.json).

Schemathesis generates requests from the document, valid and invalid, for every operation;
each is sent to a real `esr-locust serve` with the agency's real token, a read-only token,
a wrong one or none, and sometimes aimed at a run the agency really has (an ended one, with
its report card). Every response must be documented by the document: its status code, its
content type, its body's schema; and none may be a server error.

Bounded and repeatable: a few examples per operation, Hypothesis derandomized. The agency
may only load a port where nothing listens, and queue two runs, so nothing the fuzzer
submits can load anything real or fill the machine.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import pytest
import schemathesis
from commands import free_port
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from services import running_service, wait_for_status

# Whose credentials a case carries: the agency's own most often, then each other kind.
WHO = ("agency", "agency", "agency", "agency", "read-only", "other agency", "wrong", "none")
HEADER, BODY = ParameterLocation.HEADER, ParameterLocation.BODY
ENDED = ("passed", "failed", "cancelled", "error", "interrupted")
EXAMPLES = 20  # per operation and generation mode (valid data, invalid data)
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429"]
CONFIG = schemathesis.Config.from_dict({
    # Schemathesis's defaults, and 413: a body past the size cap is refused as too large.
    "checks": {"negative_data_rejection": {"expected-statuses": [*REJECTIONS, "413"]}},
    # A scenario's validity is more than its schema (a string): a well-formed body whose YAML
    # is no scenario, or aims elsewhere than the agency may, answers 422 with its problems.
    "operations": [{"include-name": "POST /v1/runs", "checks": {
        "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "422", "429"]}}}],
})


@dataclass
class Known:
    """What the fuzzer may aim at besides what it makes up: the agency's runs (an ended one,
    and those it submits itself), a scenario the agency may run, the ended run's links."""

    runs: list[str]  # the first has ended
    scenario: str
    links: dict[str, dict]  # the ended run's signed links: format -> query (expires, signature)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """The service, the agency's credentials by kind, and what it really has."""
    dead = f"http://127.0.0.1:{free_port()}"
    scenario = (f"esr: 1\nscenario: tiny\ntarget: {dead}\nseed: 1\n"
                "citizens: {template: students, count: 2, behavior: {think_time: 100ms..200ms}}\n"
                "load_profile: {ramp_up: 1s, sustain: 1s}\n")
    with running_service(tmp_path_factory.mktemp("fuzzed")) as service:
        secret = service.token("fuzz", "--allow-target", dead, "--max-queued", "2")
        credentials = {
            "agency": {"Authorization": f"Bearer {secret}"},
            "read-only": {"Authorization": "Bearer " + service.token(
                "fuzz", "--scopes", "runs:read", "--allow-target", dead)},
            "other agency": {"Authorization": f"Bearer {service.token('other')}"},
            "wrong": {"Authorization": "Bearer esr_not-a-token"},
            "none": {},
        }
        with service.client(secret) as api:
            answer = api.post("/v1/runs", json={"scenario": scenario, "time_scale": 0.5})
            assert answer.status_code == 202, answer.text
            run_id = answer.json()["id"]
            wait_for_status(api, run_id, ENDED, timeout_s=90)
            links = {ext: dict(parse_qsl(urlsplit(url).query)) for ext, url
                     in api.get(f"/v1/runs/{run_id}/report-links").json().items()
                     if ext in ("html", "json", "xml", "pdf")}
            # The PDF is built on its first request: built now, so no case the fuzzer makes
            # waits seconds for it on a busy machine (Hypothesis calls that flaky).
            assert api.get(f"/v1/runs/{run_id}/report.pdf", timeout=300).status_code == 200
        yield service, credentials, Known([run_id], scenario, links)


def test_every_answer_is_the_one_the_openapi_document_promises(fuzzed):
    service, credentials, known = fuzzed
    document = schemathesis.openapi.from_url(f"{service.url}/v1/openapi.json", config=CONFIG)
    failures, seen = [], defaultdict(set)
    for operation in (result.ok() for result in document.get_all_operations()):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, service.url, credentials, known, seen)
            except Unsatisfiable:  # nothing in this operation can be made invalid
                assert mode == GenerationMode.NEGATIVE
            except (Exception, BaseExceptionGroup) as failure:  # each operation's, not the first
                failures.append(f"{operation.label} ({mode.value}): {str(failure)[:3000]}")
    assert not failures, "\n\n".join(failures)
    # The fuzzer reached the API's core, not only its refusals.
    for label, status in [("POST /v1/runs", 202), ("GET /v1/runs/{run_id}", 200),
                          ("GET /v1/runs/{run_id}/report.{extension}", 200)]:
        assert status in seen[label], (label, dict(seen))


def fuzz(operation, mode: GenerationMode, url: str, credentials: dict, known: Known,
         seen: dict[str, set[int]]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    def answers_as_documented(case, data):
        who = data.draw(st.sampled_from(WHO), label="credentials")
        aim(case, data, known)
        # Invalid headers (a missing or malformed Authorization among them) are sent as made.
        invalid_headers = case.meta is not None and case.meta.is_negative_at(HEADER)
        response = case.call_and_validate(base_url=url,
                                          headers={} if invalid_headers else credentials[who])
        seen[operation.label].add(response.status_code)
        if response.status_code == 202 and case.operation.label == "POST /v1/runs":
            known.runs.append(response.json()["id"])

    answers_as_documented()


def aim(case, data, known: Known) -> None:
    """Half the time, point a case at something real instead of something made up."""
    if not data.draw(st.booleans(), label="aim at something real"):
        return
    path = case.path_parameters or {}
    if "run_id" in path:
        path["run_id"] = data.draw(st.sampled_from(known.runs), label="run")
    if "extension" in path:  # with the bearer token, or the ended run's signed link
        path["extension"] = data.draw(st.sampled_from(sorted(known.links)), label="format")
        signed = path.get("run_id") == known.runs[0] and data.draw(st.booleans(), label="signed")
        case.query = known.links[path["extension"]] if signed else {}
    valid_body = case.meta is not None and not case.meta.is_negative_at(BODY)
    if case.operation.label == "POST /v1/runs" and valid_body:
        case.body = {**case.body, "scenario": known.scenario, "host": None, "time_scale": 0.5,
                     "user_scale": 1.0} if isinstance(case.body, dict) else known.scenario
