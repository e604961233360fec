"""What the service's API answers, request by request, through real HTTP against a real
`esr-locust serve`: tokens and scopes, agencies kept apart, what a submission may be and
where it may aim, limits, Idempotency-Key, the queue and cancelling.

One service for the module, its only run slot held by a long, light run of an agency of its
own (`holding`), so every run submitted here stays queued: nothing here waits for a load to
run, and each test cancels what it queued. The runs that do run are in
test_service_api_runs.py.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from services import (
    new_token,
    revoke_token,
    running_service,
    wait_for_status,
)

from esr import EsrClient
from esr.errors import Problem
from esr.service_client import _server_sent_events

ROOT = Path(__file__).resolve().parent.parent
DEMO = (ROOT / "examples" / "demo.yml").read_text()
TINY = """\
esr: 1
scenario: api rehearsal
seed: 11
citizens: {template: low_income, count: 4, behavior: {think_time: 100ms..300ms, retries: 0}}
load_profile: {sustain: 3s}
"""
# One citizen for ten minutes, cancelled at the end of the module: the run slot stays taken.
HOLD = """\
esr: 1
scenario: holding the slot
seed: 3
citizens: {template: low_income, count: 1, behavior: {think_time: 1s..2s, retries: 0}}
load_profile: {sustain: 10m}
"""
ENDED = ("passed", "failed", "cancelled", "error", "interrupted")
MAX_SCENARIO_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def service(tmp_path_factory, target):
    with running_service(tmp_path_factory.mktemp("service")) as running:
        _, secret = new_token(running.data, "holding", "--allow-target", target)
        with running.client(secret) as holder:
            answer = holder.post("/v1/runs", json={"scenario": HOLD, "host": target})
            assert answer.status_code == 202, answer.text
            wait_for_status(holder, answer.json()["id"], ("running",), timeout_s=60)
            yield running
            holder.post(f"/v1/runs/{answer.json()['id']}/cancel")


class Agency(httpx.Client):
    """An HTTP client for the API with one agency's token (its name and secret kept)."""

    def __init__(self, url: str, agency: str, secret: str):
        super().__init__(base_url=url, headers={"Authorization": f"Bearer {secret}"},
                         timeout=30)
        self.agency, self.secret = agency, secret


@pytest.fixture
def agency(service, target, request):
    """A client for a new agency (named after the test) allowed the target; what it queued
    is cancelled at the end."""
    clients = []

    def make(*options: str, name: str = "agency") -> Agency:
        test = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[-30:]
        agency_name = f"{name}-{len(clients)}-{test}".strip("-")
        _, secret = new_token(service.data, agency_name, "--allow-target", target, *options)
        clients.append(Agency(service.url, agency_name, secret))
        return clients[-1]

    yield make
    for client in clients:
        for run in client.get("/v1/runs", params={"limit": 200}).json().get("runs", []):
            if run["status"] not in ENDED:
                client.post(f"/v1/runs/{run['id']}/cancel")
        client.close()


def submit(api: httpx.Client, scenario: str = TINY, *, headers: dict | None = None,
           **fields) -> httpx.Response:
    """POST /v1/runs as JSON (the scenario and fields such as host)."""
    return api.post("/v1/runs", json={"scenario": scenario, **fields}, headers=headers)


def queued(api: httpx.Client, target: str, scenario: str = TINY, **fields) -> str:
    answer = submit(api, scenario, host=target, **fields)
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "queued"
    return answer.json()["id"]


def refusal(answer: httpx.Response, status: int) -> dict:
    """The body of a refusal, checked for its status and its shape ({error, problems})."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == {"error", "problems"} and body["error"], body
    return body


# ---- who may ask ---------------------------------------------------------------------------------


def test_the_health_check_needs_no_token(service):
    with service.client(None) as anonymous:
        answer = anonymous.get("/healthz")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"


def test_no_token_a_wrong_one_or_a_revoked_one_answers_401(service, target):
    token_id, secret = new_token(service.data, "revoked", "--allow-target", target)
    with service.client(secret) as api:
        assert api.get("/v1/runs").status_code == 200
    revoke_token(service.data, token_id)
    tried = {
        "none": {},
        "empty": {"Authorization": "Bearer"},
        "another scheme": {"Authorization": f"Basic {secret}"},
        "wrong": {"Authorization": "Bearer esr_" + "x" * 43},
        "revoked": {"Authorization": f"Bearer {secret}"},
    }
    with service.client(None) as anonymous:
        for what, headers in tried.items():
            for method, path in (("GET", "/v1/runs"), ("GET", "/v1/runs/any"),
                                 ("POST", "/v1/runs"), ("POST", "/v1/runs/any/cancel"),
                                 ("GET", "/v1/runs/any/events")):
                answer = anonymous.request(method, path, headers=headers,
                                           json={"scenario": TINY, "host": target})
                body = refusal(answer, 401)
                assert answer.headers["www-authenticate"] == "Bearer", what
        assert "revoked" in body["error"]


def test_a_token_without_the_scope_answers_403(service, agency, target):
    reader = agency("--scopes", "runs:read", name="reader")
    body = refusal(submit(reader, host=target), 403)
    assert "runs:start" in body["error"]
    assert reader.get("/v1/runs").json()["runs"] == []
    starter = agency("--scopes", "runs:start", name="starter")
    run_id = queued(starter, target)
    assert "runs:read" in refusal(starter.get(f"/v1/runs/{run_id}"), 403)["error"]
    assert refusal(starter.get("/v1/runs"), 403)
    assert starter.post(f"/v1/runs/{run_id}/cancel").json()["status"] == "cancelled"


# ---- agencies apart ------------------------------------------------------------------------------


def test_another_agencys_run_answers_404_exactly_as_an_unknown_one_both_ways(agency, target):
    housing, health = agency(name="housing"), agency(name="health")
    ours, theirs = queued(housing, target), queued(health, target)
    unknown = "20260101-000000-api-rehearsal-0000"
    for me, own, other in ((housing, ours, theirs), (health, theirs, ours)):
        assert me.get(f"/v1/runs/{own}").status_code == 200
        for method, path in (("GET", "/v1/runs/{}"), ("GET", "/v1/runs/{}/events"),
                             ("GET", "/v1/runs/{}/events?after=0"),
                             ("GET", "/v1/runs/{}/summary"), ("GET", "/v1/runs/{}/report-links"),
                             ("GET", "/v1/runs/{}/report.html"), ("POST", "/v1/runs/{}/cancel")):
            foreign = me.request(method, path.format(other))
            missing = me.request(method, path.format(unknown))
            assert foreign.status_code == missing.status_code == 404, (path, foreign.text)
            assert foreign.headers["content-type"] == missing.headers["content-type"]
            assert refusal(foreign, 404)["error"].replace(other, "ID") == \
                refusal(missing, 404)["error"].replace(unknown, "ID")
        assert [run["id"] for run in me.get("/v1/runs").json()["runs"]] == [own]
    # The other agency's run was not touched by the refused cancel.
    assert health.get(f"/v1/runs/{theirs}").json()["status"] == "queued"


def test_the_listing_is_the_agencys_own_newest_first_a_page_at_a_time(agency, target):
    housing, health = agency(name="housing"), agency(name="health")
    mine = [queued(housing, target) for _ in range(5)]
    theirs = queued(health, target)
    pages, cursor = [], None
    while True:
        page = housing.get("/v1/runs", params={"limit": 2, **({"cursor": cursor}
                                                                if cursor else {})}).json()
        pages.append([run["id"] for run in page["runs"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [mine[:2:-1][:2], mine[2:0:-1], mine[:1]]
    assert [run["id"] for run in housing.get("/v1/runs").json()["runs"]] == mine[::-1]
    assert [run["id"] for run in health.get("/v1/runs").json()["runs"]] == [theirs]
    for bad in ({"limit": 0}, {"limit": 201}, {"cursor": "abc"}, {"cursor": "-1"}):
        assert refusal(housing.get("/v1/runs", params=bad), 422)["problems"]


# ---- what a submission may be --------------------------------------------------------------------


def test_a_scenario_over_256_kib_answers_413_as_yaml_and_as_json(agency, target):
    api = agency()
    over = TINY + "# " + "x" * (MAX_SCENARIO_BYTES - len(TINY)) + "\n"
    assert len(over.encode()) > MAX_SCENARIO_BYTES
    answers = {
        "yaml": api.post("/v1/runs", content=over, headers={"Content-Type": "application/yaml"}),
        "json": submit(api, over, host=target),
        "json far over": submit(api, over * 2, host=target),
        "yaml streamed": api.post("/v1/runs", content=iter([over.encode()[:1000],
                                                            over.encode()[1000:] * 2]),
                                  headers={"Content-Type": "application/yaml"}),
    }
    for what, answer in answers.items():
        assert "262,144" in refusal(answer, 413)["error"], what
    # Just under the cap is read as any scenario (and here refused for aiming at port 8080).
    under = TINY + "# " + "x" * (MAX_SCENARIO_BYTES - len(TINY) - 10) + "\n"
    assert refusal(api.post("/v1/runs", content=under,
                            headers={"Content-Type": "application/yaml"}), 422)
    assert api.get("/v1/runs").json()["runs"] == []


def test_a_body_of_another_type_answers_415(agency):
    api = agency()
    for content_type in ("text/plain", "application/x-www-form-urlencoded",
                         "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": content_type} if content_type else {}
        body = refusal(api.post("/v1/runs", content=TINY, headers=headers), 415)
        assert "application/yaml" in body["error"], content_type


def test_a_scenario_with_problems_answers_422_with_what_validate_prints(agency, target, esr_cli,
                                                                        tmp_path):
    scenarios = {
        "keys and names": TINY.replace("sustain: 3s", "sustan: 3s")
        .replace("low_income", "low_incme") + "citizen: {template:seniors}\n",
        "flow mapping": "esr: 1\nscenario: x\ncitizens: {template:seniors, count: 3}\n"
        "load_profile: {sustain: 2s}\n",
        "yaml syntax": TINY + "slo: {p95_ms: 500\n",
    }
    api = agency()
    for what, text in scenarios.items():
        path = tmp_path / "scenario.yml"
        path.write_text(text)
        validated = esr_cli("validate", str(path))
        assert validated.returncode == 2
        printed = [line.removeprefix("esr-locust: ")
                   for line in validated.stderr.splitlines()]
        for answer in (api.post("/v1/runs", content=text,
                                headers={"Content-Type": "application/yaml; charset=utf-8"}),
                       submit(api, text, host=target)):
            body = refusal(answer, 422)
            assert body["problems"] and all(set(p) == {"line", "column", "path", "message",
                                                       "hint"} for p in body["problems"])
            assert [str(Problem(str(path), **p)) for p in body["problems"]] == printed, what
            assert str(tmp_path) not in answer.text  # the service's own folders stay its own
    assert api.get("/v1/runs").json()["runs"] == []


def test_a_json_body_that_is_not_a_submission_answers_422_naming_the_field(agency, target):
    api = agency()
    for body, field in (({"host": target}, "scenario"),
                        ({"scenario": TINY, "time_scale": 0}, "time_scale"),
                        ({"scenario": TINY, "user_scale": "lots"}, "user_scale"),
                        ({"scenario": 3}, "scenario")):
        problems = refusal(api.post("/v1/runs", json=body), 422)["problems"]
        assert [p["path"] for p in problems] == [field], body
    assert refusal(api.post("/v1/runs", content=b"{not json",
                            headers={"Content-Type": "application/json"}), 422)
    assert refusal(api.post("/v1/runs", content=b"\xff\xfe",
                            headers={"Content-Type": "application/yaml"}), 422)


# ---- where a run may aim -------------------------------------------------------------------------


def elsewhere(target: str) -> list[str]:
    """URLs that are not the target's origin, though some start with it as text."""
    port = target.rsplit(":", 1)[1]
    return [f"{target}0", f"{target}.evil.example", f"{target}@evil.example",
            f"{target}.evil.example/apply", target.replace("http://", "https://"),
            target.replace("127.0.0.1", "localhost"), "http://127.0.0.1", "http://evil.example",
            f"http://127.0.0.2:{port}", f"http://[::1]:{port}", "ftp://127.0.0.1/", "not a url"]


def test_a_host_outside_the_allow_list_answers_422_naming_the_allowed_ones(agency, target):
    api = agency()
    for host in elsewhere(target):
        body = refusal(submit(api, host=host), 422)
        assert f"may not load {host}" in body["error"], host
        assert body["error"].endswith(f"its allowed targets: {target}"), host
    assert api.get("/v1/runs").json()["runs"] == []


def test_a_scenario_target_outside_the_allow_list_answers_422(agency, target):
    api = agency()
    for url in elsewhere(target)[:6]:
        scenario = TINY.replace("seed: 11", f"seed: 11\ntarget: {url}")
        body = refusal(api.post("/v1/runs", content=scenario,
                                headers={"Content-Type": "application/yaml"}), 422)
        assert f"may not load {url}" in body["error"] and target in body["error"], url
    # With the target allowed, the same scenario is queued; --host names the origin likewise.
    allowed = TINY.replace("seed: 11", f"seed: 11\ntarget: {target}")
    assert api.post("/v1/runs", content=allowed,
                    headers={"Content-Type": "application/yaml"}).status_code == 202
    for same_origin in (f"{target}/", f"{target}/some/path", target.upper().replace("HTTP:",
                                                                                    "http:")):
        assert submit(api, host=same_origin).status_code == 202, same_origin
    assert len(api.get("/v1/runs").json()["runs"]) == 4


def test_a_chaos_http_action_aimed_elsewhere_answers_422(agency, target):
    api = agency()
    for url in elsewhere(target)[:6]:
        scenario = TINY + f"chaos:\n  - {{action: http, target: '{url}/admin', after: 1s}}\n"
        body = refusal(submit(api, scenario, host=target), 422)
        assert f"may not load {url}/admin" in body["error"], url
    assert api.get("/v1/runs").json()["runs"] == []
    # On the target itself, as a full URL or as a path relative to it, the action may run.
    for aimed in (f"{target}/admin/services/svc-fee/restore", "/admin/services/svc-fee/restore"):
        scenario = TINY + f"chaos:\n  - {{action: http, target: '{aimed}', after: 1s}}\n"
        assert submit(api, scenario, host=target).status_code == 202, (aimed, api)


def test_command_and_signal_chaos_actions_are_refused_whatever_the_scenario_asks(agency, target):
    api = agency()
    for action in ("{action: command, command: 'touch /tmp/esr-was-here', after: 1s}",
                   "{action: signal, target: /tmp/esr.pid, signal: TERM, after: 1s}",
                   "{action: kill_pod, target: svc-fee, after: 1s, compose_project: esr}"):
        body = refusal(submit(api, TINY + f"chaos:\n  - {action}\n", host=target), 422)
        (problem,) = body["problems"]
        assert problem["path"] == "chaos[0]" and problem["line"] == 7, problem
        assert "HTTP requests and nothing else" in problem["message"]
    assert api.get("/v1/runs").json()["runs"] == []


def test_a_request_that_names_its_own_host_answers_422(agency, target):
    """On a shared address (a CDN, virtual hosts) a Host header picks another site."""
    api = agency()
    journey = "journey:\n  - {{name: form, request: GET /form, headers: {{{header}: {value}}}}}\n"
    for header in ("Host", "host", " HOST "):
        scenario = TINY + journey.format(header=f"'{header}'", value="victim.example")
        body = refusal(submit(api, scenario, host=target), 422)
        assert body["error"].startswith("journey step 'form' sets the Host header"), header
    action = "chaos:\n  - {action: http, target: /admin, after: 1s, headers: {Host: x.example}}\n"
    body = refusal(submit(api, TINY + action, host=target), 422)
    assert body["error"].startswith("chaos[0] sets the Host header")
    assert api.get("/v1/runs").json()["runs"] == []
    fine = TINY + journey.format(header="X-Agency", value="housing")
    assert submit(api, fine, host=target).status_code == 202


# ---- limits --------------------------------------------------------------------------------------


def test_runs_over_the_agencys_citizens_or_duration_are_refused_saying_so(agency, target):
    api = agency("--max-citizens", "50", "--max-duration", "30s")
    # The demo peaks at 270 citizens (135, and a spike of 135) and lasts 20 s.
    body = refusal(submit(api, DEMO, host=target), 422)
    assert body["error"] == f"the run peaks at 270 citizens; agency '{api.agency}' may run " \
        "up to 50 (lower user_scale or the counts)"
    body = refusal(submit(api, DEMO, host=target, user_scale=0.15, time_scale=2), 422)
    assert body["error"] == f"the run lasts 40s; agency '{api.agency}' may run up to " \
        "30s (lower time_scale or the load profile)"
    assert api.get("/v1/runs").json()["runs"] == []
    assert submit(api, DEMO, host=target, user_scale=0.15).status_code == 202


def test_queued_runs_beyond_the_agencys_limit_answer_429_with_retry_after(agency, target):
    api = agency("--max-queued", "2")
    first, second = queued(api, target), queued(api, target)
    answer = submit(api, host=target)
    body = refusal(answer, 429)
    assert "2 runs queued" in body["error"]
    assert answer.headers["retry-after"].isdigit() and int(answer.headers["retry-after"]) >= 1
    assert [run["id"] for run in api.get("/v1/runs").json()["runs"]] == [second, first]
    # Another agency is not held back by this one's queue.
    assert queued(agency(name="other"), target)
    api.post(f"/v1/runs/{first}/cancel")
    assert queued(api, target)


# ---- Idempotency-Key ----------------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_give_the_same_run(agency, target):
    api = agency()
    key = {"Idempotency-Key": "release-2026-04-01"}
    first = submit(api, host=target, headers=key)
    again = submit(api, host=target, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert [run["id"] for run in api.get("/v1/runs").json()["runs"]] == [first.json()["id"]]
    # The same key with another body is a mistake, not a new run.
    for changed in ({"host": target, "time_scale": 0.5}, {"host": f"{target}/"}):
        body = refusal(submit(api, headers=key, **changed), 422)
        assert "Idempotency-Key" in body["error"]
    yaml = api.post("/v1/runs", content=TINY, headers={**key, "Content-Type": "application/yaml"})
    assert refusal(yaml, 422)
    # Another key is another run; another agency's same key is its own.
    other_key = submit(api, host=target, headers={"Idempotency-Key": "release-2026-04-02"})
    other_agency = submit(agency(name="other"), host=target, headers=key)
    assert len({first.json()["id"], other_key.json()["id"], other_agency.json()["id"]}) == 3
    assert len(api.get("/v1/runs").json()["runs"]) == 2


# ---- cancelling ----------------------------------------------------------------------------------


def test_a_queued_run_is_cancelled_at_once_and_a_second_cancel_answers_409(agency, target):
    api = agency()
    run_id = queued(api, target)
    answer = api.post(f"/v1/runs/{run_id}/cancel")
    assert answer.status_code == 202
    assert answer.json()["status"] == "cancelled" and answer.json()["ended_at"]
    run = api.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "cancelled" and run["queue_position"] is None
    events = api.get(f"/v1/runs/{run_id}/events", params={"after": 0}).json()
    assert [e["data"]["status"] for e in events if e["type"] == "status"] == \
        ["queued", "cancelled"]
    body = refusal(api.post(f"/v1/runs/{run_id}/cancel"), 409)
    assert "already ended (cancelled)" in body["error"]
    assert refusal(api.get(f"/v1/runs/{run_id}/report.html"), 404)


def test_the_queue_position_counts_the_runs_ahead(agency, target):
    api = agency()
    first, second = queued(api, target), queued(api, target)
    one, two = (api.get(f"/v1/runs/{i}").json()["queue_position"] for i in (first, second))
    assert two == one + 1 and one >= 1
    listed = {run["id"]: run for run in api.get("/v1/runs").json()["runs"]}
    assert [listed[first], listed[second]] == [api.get(f"/v1/runs/{i}").json()
                                               for i in (first, second)]
    api.post(f"/v1/runs/{first}/cancel")
    assert api.get(f"/v1/runs/{second}").json()["queue_position"] == one


def test_the_event_stream_of_a_cancelled_queued_run_ends_with_done(agency, target):
    api = agency()
    run_id = queued(api, target)
    api.post(f"/v1/runs/{run_id}/cancel")
    events = api.get(f"/v1/runs/{run_id}/events", params={"after": 0}).json()
    assert events[-1]["type"] == "done" and events[-1]["data"]["status"] == "cancelled"


def test_waiting_for_a_queued_run_gives_up_at_its_timeout(service, agency, target):
    """EsrClient.wait(timeout=…) on a run that stays queued, its stream quiet but for the
    service's keep-alives: a TimeoutError at the timeout, not a wait for the run."""
    api = agency()
    run_id = queued(api, target)
    client = EsrClient(url=service.url, token=api.secret)
    outcome = []

    def wait() -> None:
        started = time.monotonic()
        try:
            client.wait(run_id, timeout=1.0)
        except TimeoutError as error:
            outcome.append((error, time.monotonic() - started))

    waiting = threading.Thread(target=wait, daemon=True)
    waiting.start()
    waiting.join(30)
    assert not waiting.is_alive(), "EsrClient.wait went on past its timeout"
    ((error, took),) = outcome
    assert "still queued" in str(error) and took < 5


# ---- odd input answers 4xx, never 5xx ----------------------------------------------------------


def test_scales_must_be_finite_and_within_bounds(agency, target):
    api = agency()
    for field in ("time_scale", "user_scale"):
        for value in ("Infinity", "-Infinity", "NaN", "1e308", "1000001", "0", "-1"):
            body = f'{{"scenario": {json.dumps(TINY)}, "host": "{target}", "{field}": {value}}}'
            answer = api.post("/v1/runs", content=body,
                              headers={"Content-Type": "application/json"})
            assert [p["path"] for p in refusal(answer, 422)["problems"]] == [field], value
    assert api.get("/v1/runs").json()["runs"] == []
    # Within bounds, the agency's own limits decide: 1e6 times the duration is too long.
    body = refusal(submit(api, host=target, time_scale=1e6), 422)
    assert body["error"].startswith("the run lasts ")


def test_a_json_scenario_under_the_cap_is_taken_however_much_json_escapes_it(agency, target):
    """JSON escapes a newline as 2 bytes and a non-ASCII character as up to 6 (\\u00e9): the
    cap is on the scenario, not on its envelope."""
    api = agency()
    padding = MAX_SCENARIO_BYTES - len(TINY) - 100
    for filler in ("#\n", "# é\n", "# \U0001f3e0\n"):
        scenario = TINY + filler * (padding // len(filler.encode()))
        assert len(scenario.encode()) < MAX_SCENARIO_BYTES
        escaped = json.dumps({"scenario": scenario, "host": target}).encode()
        assert len(escaped) > MAX_SCENARIO_BYTES + 4096
        answer = api.post("/v1/runs", content=escaped,
                          headers={"Content-Type": "application/json"})
        assert answer.status_code == 202, (repr(filler), answer.text)
        over = scenario + filler * 60
        answer = api.post("/v1/runs", content=json.dumps({"scenario": over, "host": target}),
                          headers={"Content-Type": "application/json"})
        assert "262,144" in refusal(answer, 413)["error"], repr(filler)
    assert len(api.get("/v1/runs").json()["runs"]) == 3


def test_odd_link_signatures_expiries_and_event_ids_answer_4xx(service, agency, target):
    api = agency()
    run_id = queued(api, target)
    links = api.get(f"/v1/runs/{run_id}/report-links").json()
    with httpx.Client(base_url=service.url, timeout=30) as browser:
        # A genuine link to a run that has not ended: valid, and the card is not there yet.
        assert refusal(browser.get(links["html"]), 409)
        base = f"/v1/runs/{run_id}/report.html"
        for expires, signature in (("9999999999", "é"), ("²", "ab"), ("9" * 20, "ab"),
                                   ("-5", "ab"), ("", ""), ("9999999999", "")):
            answer = browser.get(base, params={"expires": expires, "signature": signature})
            assert "not valid" in refusal(answer, 404)["error"], (expires, signature)
        for cookie in ("tok_x.9999999999.é", "tok_x.².x", "..", "tok_x.9999999999"):
            page = browser.get("/runs", headers={"Cookie": f"esr_session={cookie}".encode()})
            assert page.status_code == 200 and "sign in" in page.text.lower(), cookie
    for last_event_id in ("9" * 30, "-5", "1.5", "²".encode()):
        with api.stream("GET", f"/v1/runs/{run_id}/events",
                        headers={"Last-Event-ID": last_event_id}) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            first = next(line for line in lines if line.startswith("id:"))
            assert first == "id: 1", last_event_id  # replayed from the start


def test_esr_client_waits_no_longer_for_a_run_that_has_ended(service, agency, target):
    api = agency()
    run_id = queued(api, target)
    client = EsrClient(url=service.url, token=api.secret)
    assert client.stop(run_id).status == "cancelled"
    started = time.monotonic()
    assert client.wait(run_id, timeout=30).status == "cancelled"
    assert time.monotonic() - started < 5


def test_the_clients_event_reader_takes_the_services_stream_apart():
    lines = ["retry: 2000", "", "id: 1", "event: status", 'data: {"status": "queued"}', "",
             ": keep-alive", "", "id: 2", "event: alert", 'data: {"message":', 'data: "x"}', "",
             "id: 3", "event: done", "data: {}", ""]
    assert list(_server_sent_events(iter(lines), deadline=None)) == [
        {"type": "status", "id": 1, "status": "queued"}, None,
        {"type": "alert", "id": 2, "message": "x"}, {"type": "done", "id": 3}]
    assert list(_server_sent_events(iter(lines), deadline=time.monotonic() - 1)) == []
