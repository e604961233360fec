"""The bundled demo target, run as a real process and spoken to over HTTP with the stdlib."""

from __future__ import annotations

import http.client
import json
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"esr target listening on (http://127\.0\.0\.1:(\d+))\n")
ESR_UA = "esr-locust/0.1.0"
TEST_UA = "esr-tests"
# No proxy from the environment may stand between the tests and 127.0.0.1.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- A target process --------------------------------------------------------------------------

def start_target(*args: str, log: Path) -> tuple[subprocess.Popen, str]:
    """Start `python -m esr.demo.target --port 0 ARGS` and return it with the URL it printed."""
    return launch([sys.executable, "-m", "esr.demo.target", "--port", "0", *args], log)


def launch(command: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """Start a serving process and wait (bounded) for its "listening on" line."""
    with log.open("wb") as stderr:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr)
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout=15)
    line = proc.stdout.readline().decode() if ready else ""
    match = LISTENING.fullmatch(line)
    if not match:
        stop_target(proc)
        pytest.fail(f"target did not start: {line!r}\n{log.read_text()}")
    assert int(match.group(2)) != 0
    return proc, match.group(1)


def stop_target(proc: subprocess.Popen) -> tuple[int, bytes]:
    """End the process we started, by its PID (SIGTERM, then SIGKILL if it hangs).

    Returns its exit code and what it printed after its first line.
    """
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    with proc.stdout:
        return proc.returncode, proc.stdout.read()


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    proc, url = start_target(log=tmp_path_factory.mktemp("target") / "stderr.log")
    yield url
    assert stop_target(proc) == (0, b""), "a clean exit after exactly one line on stdout"


@pytest.fixture
def url(target):
    """The shared target with zeroed counters and its fee service up."""
    call(target, "POST", "/admin/services/svc-fee/restore")
    call(target, "POST", "/admin/reset")
    return target


# --- Speaking to it ----------------------------------------------------------------------------

def call(base, method, path, body=None, *, run=None, citizen=None, skip=False, ua=TEST_UA,
         raw=None, extra=None):
    """One request; returns (status, headers, parsed JSON body) whatever the status."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = {"User-Agent": ua, "Content-Type": "application/json", **(extra or {})}
    if run is not None:
        headers["X-ESR-Synthetic"] = run
    if citizen is not None:
        headers["X-ESR-Citizen"] = citizen
    if skip:
        headers["X-HITL-Skip"] = "true"
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with OPENER.open(req, timeout=10) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, json.loads(err.read())


def stats(base, run=None):
    return call(base, "GET", "/admin/stats" + ("" if run is None else f"?run={run}"))[2]


def bucket(citizen_id: str) -> int:
    return zlib.crc32(citizen_id.encode()) % 100


_ids = count()


def clear_id() -> str:
    """A fresh citizen id that the legal rule does not block."""
    return next(cid for cid in (f"c-{i}" for i in _ids) if bucket(cid) >= 3)


def blocked_id(wanted: int) -> str:
    """A fresh citizen id whose crc32 % 100 is `wanted` (< 3: legally blocked)."""
    return next(cid for cid in (f"b-{i}" for i in _ids) if bucket(cid) == wanted)


def applicant(cid=None, *, age=35, income=30_000, veteran=False, household_size=1):
    return {"citizen_id": cid or clear_id(), "name": "Pat Doe", "age": age, "income": income,
            "veteran": veteran, "household_size": household_size}


# Household of 1: limit 52,000; manual review 46,800..57,200; fast track under 26,000.

# --- Behaviour ---------------------------------------------------------------------------------

def test_health_and_form(url):
    assert call(url, "GET", "/health")[::2] == (200, {"ok": True})
    status, _, body = call(url, "GET", "/form")
    other = call(url, "GET", "/form")[2]
    assert status == 200
    assert re.fullmatch(r"[0-9a-f]{16,}", body["form_token"])
    assert body["form_token"] != other["form_token"]


@pytest.mark.parametrize(("income", "household_size", "status", "route"), [
    (20_000, 1, "approved", "fast_track"),
    (25_900, 1, "approved", "fast_track"),
    (26_100, 1, "approved", "standard"),
    (46_700, 1, "approved", "standard"),
    (46_900, 1, "approved", "manual_review"),
    (52_000, 1, "approved", "manual_review"),  # the limit itself is eligible
    (52_100, 1, "rejected", "manual_review"),
    (57_100, 1, "rejected", "manual_review"),
    (57_300, 1, "rejected", "standard"),
    (70_000, 1, "rejected", "standard"),
    (60_000, 3, "approved", "standard"),  # limit 68,000 for three people
])
def test_apply_decides_by_income_and_household(url, income, household_size, status, route):
    # review skipped so that manual_review cases are decided too
    code, headers, body = call(url, "POST", "/apply", skip=True,
                               body=applicant(income=income, household_size=household_size))
    assert (code, body["status"], body["route"], headers["X-ACT-Route"]) == (
        200, status, route, route)
    assert call(url, "GET", f"/status/{body['application_id']}")[::2] == (200, {"status": status})


def test_unknown_application_and_path_are_404_json(url):
    assert call(url, "GET", "/status/app-nope")[0] == 404
    code, _, body = call(url, "GET", "/no/such/page")
    assert code == 404 and "error" in body


def test_seniors_are_wrongly_rejected(url):
    """The planted bias: the same finances are judged differently from age 62."""
    def decide(age, income, skip=False):
        code, headers, body = call(url, "POST", "/apply", applicant(age=age, income=income),
                                   skip=skip)
        assert code == 200
        return body["status"], headers["X-ACT-Route"]

    assert decide(61, 44_000) == ("approved", "standard")
    assert decide(62, 44_000) == ("rejected", "standard")
    # just under the limit: a manual review case, decided here by skipping the review
    assert decide(40, 51_900, skip=True) == ("approved", "manual_review")
    assert decide(70, 51_900, skip=True) == ("rejected", "standard")


def test_legal_blocks_are_451_with_a_reason(url):
    reasons = {}
    for wanted in (0, 1, 2):
        cid = blocked_id(wanted)
        for _ in range(2):  # deterministic: the same citizen is blocked the same way
            code, headers, body = call(url, "POST", "/apply", applicant(cid, income=10_000))
            assert code == 451
            assert body["status"] == "blocked"
            assert headers["X-ESQ-Verdict"] == f"blocked; reason={body['reason']}"
            assert "X-ACT-Route" not in headers
            reasons.setdefault(wanted, body["reason"])
            assert reasons[wanted] == body["reason"]
    assert sorted(reasons.values()) == ["FERPA", "HIPAA", "PRIVACY_ACT"]
    assert call(url, "POST", "/apply", applicant(blocked_id(3), income=10_000))[0] == 200


def test_manual_review_pauses_unless_skipped(url):
    code, headers, body = call(url, "POST", "/apply", applicant(income=50_000))
    assert (code, body["status"], headers["X-ACT-Route"]) == (202, "pending_review",
                                                              "manual_review")
    assert headers["X-HITL-Pending"] == body["ticket"]
    assert call(url, "GET", f"/status/{body['ticket']}")[::2] == (
        200, {"status": "pending_review"})

    code, headers, body = call(url, "POST", "/apply", applicant(income=50_000), skip=True)
    assert (code, body["status"], headers["X-ACT-Route"]) == (200, "approved", "manual_review")
    assert "X-HITL-Pending" not in headers
    assert stats(url)["hitl"] == {"paused": 1, "skipped": 1}


def test_killed_fee_service_fails_applications_until_restored(url):
    assert call(url, "GET", "/admin/services")[2] == {"svc-fee": "up"}
    assert call(url, "POST", "/admin/services/svc-fee/kill")[::2] == (200, {"svc-fee": "down"})
    assert call(url, "GET", "/admin/services")[2] == {"svc-fee": "down"}
    assert call(url, "POST", "/apply", applicant())[::2] == (
        503, {"error": "fee service unavailable"})
    assert call(url, "GET", "/health")[0] == 200  # only the dependency is down
    assert call(url, "POST", "/admin/services/svc-fee/restore")[::2] == (200, {"svc-fee": "up"})
    assert call(url, "POST", "/apply", applicant())[0] == 200
    assert call(url, "POST", "/admin/services/svc-nope/kill")[0] == 404
    assert stats(url)["outcomes"] == [
        {"age_band": "30-44", "veteran": False, "outcome": "approved", "n": 1},
        {"age_band": "30-44", "veteran": False, "outcome": "error", "n": 1}]


def test_the_demo_journey_checks_applies_pays_and_asks(url):
    """Eligibility (declared income, no bias), the application with its fee paid afterwards,
    the payment through the fee service, the status."""
    senior = applicant(age=70, income=44_000)
    assert call(url, "POST", "/eligibility", {"income": 44_000, "household_size": 1})[::2] == (
        200, {"eligible": True, "income_limit": 52_000})
    assert call(url, "POST", "/eligibility", {"income": 60_000, "household_size": 1})[2][
        "eligible"] is False
    code, _, decided = call(url, "POST", "/apply?fee=later", senior)
    assert (code, decided["status"]) == (200, "rejected")  # the planted bias, as ever
    application = decided["application_id"]
    code, _, paid = call(url, "POST", "/pay", {"application_id": application})
    assert code == 200 and paid["application_id"] == application and paid["paid"] > 0
    assert call(url, "GET", f"/status/{application}")[::2] == (200, {"status": "rejected"})
    assert stats(url)["requests"]["by_endpoint"] == {
        "POST /eligibility": 2, "POST /apply": 1, "POST /pay": 1, "GET /status/{id}": 1}


def test_a_killed_fee_service_fails_payments_but_not_applications_that_pay_later(url):
    application = call(url, "POST", "/apply?fee=later", applicant())[2]["application_id"]
    call(url, "POST", "/admin/services/svc-fee/kill")
    try:
        assert call(url, "POST", "/pay", {"application_id": application})[::2] == (
            503, {"error": "fee service unavailable"})
        assert call(url, "POST", "/apply?fee=later", applicant())[0] == 200
        assert call(url, "POST", "/apply", applicant())[0] == 503
    finally:
        call(url, "POST", "/admin/services/svc-fee/restore")
    assert call(url, "POST", "/pay", {"application_id": application})[0] == 200


@pytest.mark.parametrize(("path", "body", "code", "problem"), [
    ("/eligibility", {"income": -1, "household_size": 1}, 400, "income must be"),
    ("/eligibility", {"income": 1}, 400, "household_size is missing"),
    ("/eligibility", [1], 400, "JSON object"),
    ("/pay", {}, 400, "application_id must be"),
    ("/pay", {"application_id": "app-nope"}, 404, "unknown application"),
])
def test_bad_checks_and_payments(url, path, body, code, problem):
    status, _, answered = call(url, "POST", path, body)
    assert status == code and problem in answered["error"]


def test_the_eligibility_check_slows_then_refuses_as_checks_pile_up():
    """Its capacity model, alone: two workers, 100 ms each, a wait of at most 280 ms."""
    import asyncio

    from esr.demo.target import Workers

    async def burst(n: int, **limits) -> list[tuple[bool, float]]:
        checks = Workers(2, 100, **limits)

        async def one() -> tuple[bool, float]:
            started = time.monotonic()
            return await checks.serve(), time.monotonic() - started

        return await asyncio.gather(*(one() for _ in range(n)))

    few = asyncio.run(burst(2, wait_ms=280, queue=100))
    assert all(ok for ok, _ in few) and max(t for _, t in few) < 0.2
    # 10 at once: two served at a time, so the third pair waits ~200 ms, the fourth would
    # wait ~300 ms and is refused, as is everything after it. (A busy machine only makes the
    # waits longer: 80 ms of margin for the third pair, none needed for the fourth.)
    many = asyncio.run(burst(10, wait_ms=280, queue=100))
    served = sorted(t for ok, t in many if ok)
    assert len(served) == 6 and served[-1] > 2 * served[0]
    assert sum(not ok for ok, _ in many) == 4
    # Beyond the queue, refused at once, without waiting.
    capped = asyncio.run(burst(10, wait_ms=1_000, queue=3))
    refused = [t for ok, t in capped if not ok]
    assert len(refused) == 5 and max(refused) < 0.05


def test_an_overloaded_eligibility_check_answers_503_with_retry_after(url):
    body = json.dumps({"income": 20_000, "household_size": 2}).encode()
    # 200 at once against about 85 a second, each waiting at most half a second.
    with ThreadPoolExecutor(max_workers=200) as pool:
        answers = list(pool.map(lambda _: call(url, "POST", "/eligibility", raw=body),
                                range(200)))
    refused = [(headers, answered) for code, headers, answered in answers if code == 503]
    assert refused and len(refused) < 200
    assert all(h["Retry-After"] == "1" and "overloaded" in a["error"] for h, a in refused)
    assert stats(url)["requests"]["by_status"] == {"200": 200 - len(refused),
                                                    "503": len(refused)}


@pytest.mark.parametrize(("raw", "problem"), [
    (b"{not json", "JSON object"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({k: v for k, v in applicant().items() if k != "income"}).encode(),
     "income is missing"),
    (json.dumps({**applicant(), "veteran": "yes"}).encode(), "veteran must be"),
    (json.dumps({**applicant(), "age": "34"}).encode(), "age must be"),
    (json.dumps({**applicant(), "household_size": 0}).encode(), "household_size must be"),
    (json.dumps({**applicant(), "form_token": 7}).encode(), "form_token must be"),
])
def test_bad_applications_are_400(url, raw, problem):
    code, _, body = call(url, "POST", "/apply", raw=raw)
    assert code == 400
    assert problem in body["error"]
    assert stats(url)["outcomes"] == [
        {"age_band": "unknown", "veteran": None, "outcome": "error", "n": 1}]


# --- Counting ----------------------------------------------------------------------------------

def test_stats_count_exactly_what_was_served(url):
    known = call(url, "POST", "/apply", applicant())[2]["application_id"]
    call(url, "POST", "/admin/reset")
    a, b = {"run": "run-a", "ua": ESR_UA}, {"run": "run-b", "ua": ESR_UA}
    bad = b'{"age": 30'

    def apply(who, cid=None, skip=False, **traits):
        return lambda: call(url, "POST", "/apply", applicant(cid, **traits), citizen="z",
                            skip=skip, **who)

    plan = (
        [lambda: call(url, "GET", "/health", **a)] * 10
        + [lambda: call(url, "GET", "/form", **a)] * 6
        + [apply(a, age=40, income=30_000)] * 12  # standard, approved
        + [apply(a, age=66, veteran=True, income=44_000)] * 4  # the bias: rejected
        + [apply(b, age=20, income=50_000)] * 5  # manual review: paused
        + [apply(b, age=20, income=50_000, skip=True)] * 3  # review skipped: approved
        + [apply(b, blocked_id(0), age=50), apply(b, blocked_id(1), age=50)]  # HIPAA, FERPA
        + [lambda: call(url, "POST", "/apply", raw=bad, **b)] * 3
        + [lambda: call(url, "GET", "/status/app-unknown", **b)] * 2
        + [lambda: call(url, "GET", "/health")] * 4
        + [lambda: call(url, "GET", "/nope")] * 3
        + [lambda: call(url, "GET", f"/status/{known}")] * 2
        + [apply({}, age=45, veteran=True, income=10_000)]  # fast track, approved
    )
    random.Random(7).shuffle(plan)
    assert len(plan) == 57
    statuses = Counter(str(send()[0]) for send in plan)

    got = stats(url)
    assert got["requests"] == {
        "total": 57,
        "by_endpoint": {"GET /health": 14, "GET /form": 6, "POST /apply": 30,
                        "GET /status/{id}": 4, "(unmatched)": 3},
        "by_status": {"200": 42, "202": 5, "451": 2, "400": 3, "404": 5},
    }
    assert got["requests"]["by_status"] == dict(statuses)
    assert got["clients"] == {"127.0.0.1": 57}  # by the address each request came from
    assert got["runs"] == {"run-a": {"requests": 32, "journeys": 16},
                           "run-b": {"requests": 15, "journeys": 13},
                           "": {"requests": 10, "journeys": 1}}
    assert got["outcomes"] == [
        {"age_band": "18-29", "veteran": False, "outcome": "approved", "n": 3},
        {"age_band": "18-29", "veteran": False, "outcome": "paused", "n": 5},
        {"age_band": "30-44", "veteran": False, "outcome": "approved", "n": 12},
        {"age_band": "45-61", "veteran": False, "outcome": "blocked", "n": 2},
        {"age_band": "45-61", "veteran": True, "outcome": "approved", "n": 1},
        {"age_band": "62+", "veteran": True, "outcome": "rejected", "n": 4},
        {"age_band": "unknown", "veteran": None, "outcome": "error", "n": 3},
    ]
    assert got["headers"] == {"synthetic": 47, "missing_synthetic": 10, "citizen": 27,
                              "missing_citizen": 30, "hitl_skip": 3, "traceparent": 0,
                              "missing_traceparent": 57, "invalid_traceparent": 0,
                              "user_agents": {ESR_UA: 47, TEST_UA: 10}}
    assert got["traffic"] == {"synthetic": 0, "real": 57, "synthetic_by_run": {}}
    assert got["hitl"] == {"paused": 5, "skipped": 3}
    assert got["legal_blocks"] == {"HIPAA": 1, "FERPA": 1, "PRIVACY_ACT": 0}
    assert got["routes"] == {"fast_track": 1, "standard": 16, "manual_review": 8}

    run_b = stats(url, "run-b")
    assert run_b["requests"]["total"] == 15
    assert run_b["requests"]["by_endpoint"] == {"POST /apply": 13, "GET /status/{id}": 2}
    assert run_b["runs"] == {"run-b": {"requests": 15, "journeys": 13}}
    assert sum(row["n"] for row in run_b["outcomes"]) == 13
    assert stats(url, "")["runs"] == {"": {"requests": 10, "journeys": 1}}


def test_keep_alive_serves_requests_one_after_another_on_one_connection(url):
    """Locust's FastHttpUser keeps its connection: the target must not close it."""
    connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=10)
    connection.connect()
    first = connection.sock
    try:
        for path in ("/health", "/form", "/health"):
            connection.request("GET", path, headers={"X-ESR-Synthetic": "kept"})
            response = connection.getresponse()
            assert (response.status, response.getheader("Connection")) == (200, None)
            response.read()
            assert connection.sock is first  # http.client drops a socket the server closes
    finally:
        connection.close()
    assert stats(url, "kept")["runs"] == {"kept": {"requests": 3, "journeys": 0}}


def test_admin_requests_are_not_counted(url):
    call(url, "GET", "/health", run="r")
    for _ in range(3):
        call(url, "GET", "/admin/services", run="r")
        call(url, "POST", "/admin/services/svc-fee/kill", run="r")
        call(url, "POST", "/admin/services/svc-fee/restore", run="r")
        assert call(url, "GET", "/admin/no-such-thing", run="r")[0] == 404
        stats(url)
    got = stats(url)
    assert got["requests"] == {"total": 1, "by_endpoint": {"GET /health": 1},
                               "by_status": {"200": 1}}
    assert got["runs"] == {"r": {"requests": 1, "journeys": 0}}
    assert got["headers"]["synthetic"] == 1


def test_reset_zeroes_every_counter(url):
    empty = stats(url)
    assert empty["requests"]["total"] == 0
    call(url, "POST", "/apply", applicant(income=50_000), run="r", citizen="c", ua=ESR_UA)
    call(url, "POST", "/apply", applicant(blocked_id(2)), run="r", skip=True)
    assert stats(url) != empty
    assert call(url, "POST", "/admin/reset")[::2] == (200, {"ok": True})
    assert call(url, "GET", "/admin/traces?run=r")[2] == []
    assert stats(url) == empty == {
        "requests": {"total": 0, "by_endpoint": {}, "by_status": {}}, "runs": {},
        "outcomes": [],
        "headers": {"synthetic": 0, "missing_synthetic": 0, "citizen": 0, "missing_citizen": 0,
                    "hitl_skip": 0, "traceparent": 0, "missing_traceparent": 0,
                    "invalid_traceparent": 0, "user_agents": {}},
        "traffic": {"synthetic": 0, "real": 0, "synthetic_by_run": {}},
        "clients": {},
        "hitl": {"paused": 0, "skipped": 0},
        "legal_blocks": {"HIPAA": 0, "FERPA": 0, "PRIVACY_ACT": 0},
        "routes": {"fast_track": 0, "standard": 0, "manual_review": 0},
    }


def test_baggage_tells_synthetic_traffic_apart_and_trace_headers_are_kept(url):
    """As a service traced with OpenTelemetry would: W3C baggage says what is synthetic."""
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ours = "esr.synthetic=true,esr.run=run%2Dt,esr.cohort=62%2B"
    call(url, "GET", "/health", run="run-t", citizen="c1",
         extra={"traceparent": tp, "baggage": ours})
    # Spaces around members, a property, another party's member: still synthetic, of the run
    # the baggage names. A trace id of zeros is no W3C traceparent.
    call(url, "GET", "/health", run="run-t", extra={
        "traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
        "baggage": "tenant=a , esr.synthetic = true;p=1, esr.run=other"})
    call(url, "GET", "/health", run="run-t",
         extra={"traceparent": tp.upper(), "baggage": "esr.synthetic=false"})
    call(url, "GET", "/nope", run="run-t")
    # Several baggage headers make one list.
    connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=10)
    try:
        connection.putrequest("GET", "/health")
        for name, value in (("X-ESR-Synthetic", "run-t"), ("baggage", "a=1"),
                            ("baggage", "esr.synthetic=true,esr.run=run-t")):
            connection.putheader(name, value)
        connection.endheaders()
        assert connection.getresponse().status == 200
    finally:
        connection.close()

    got = stats(url, "run-t")
    assert {key: got["headers"][key] for key in (
        "traceparent", "invalid_traceparent", "missing_traceparent")} == {
        "traceparent": 1, "invalid_traceparent": 2, "missing_traceparent": 2}
    assert got["traffic"] == {"synthetic": 3, "real": 2,
                              "synthetic_by_run": {"run-t": 2, "other": 1}}
    traces = call(url, "GET", "/admin/traces?run=run-t")[2]
    assert len(traces) == 5
    assert traces[0] == {"endpoint": "GET /health", "status": 200, "citizen": "c1",
                         "traceparent": tp, "baggage": ours}
    assert traces[3] == {"endpoint": "(unmatched)", "status": 404, "citizen": None,
                         "traceparent": None, "baggage": None}
    assert traces[4]["baggage"] == "a=1,esr.synthetic=true,esr.run=run-t"
    assert call(url, "GET", "/admin/traces?run=elsewhere")[2] == []


def test_concurrent_requests_are_counted_exactly(url):
    def citizen(n):
        codes = [call(url, "POST", "/apply", applicant(income=30_000), run="conc")[0]
                 for _ in range(5)]
        return codes + [call(url, "GET", "/health", run="conc")[0] for _ in range(5)]

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = [c for codes in pool.map(citizen, range(20)) for c in codes]
    assert codes == [200] * 200
    got = stats(url)
    assert got["requests"]["total"] == 200
    assert got["requests"]["by_endpoint"] == {"POST /apply": 100, "GET /health": 100}
    assert got["runs"] == {"conc": {"requests": 200, "journeys": 100}}
    assert got["outcomes"] == [
        {"age_band": "30-44", "veteran": False, "outcome": "approved", "n": 100}]


# --- The process -------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_after_requests_in_flight(tmp_path, sig):
    proc, base = start_target("--service-ms", "400", log=tmp_path / "stderr.log")
    try:
        answer = {}
        slow = threading.Thread(target=lambda: answer.update(
            code=call(base, "POST", "/apply", applicant())[0]))
        slow.start()
        time.sleep(0.15)  # the application is now being served
        started = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 3
        slow.join(timeout=5)
        assert answer == {"code": 200}
        assert (tmp_path / "stderr.log").read_text() == ""
    finally:
        stop_target(proc)  # a no-op once it has exited; closes its stdout


def test_a_burst_of_connects_fits_the_listen_queue(tmp_path):
    """1,000 connects at once while the target cannot accept: the kernel queues them all.

    A short listen queue would drop the rest, and each would retry only after a second.
    """
    proc, base = start_target(log=tmp_path / "stderr.log")
    port = int(base.rsplit(":", 1)[1])
    sockets, connected = [], 0
    proc.send_signal(signal.SIGSTOP)  # only the kernel's listen queue can take them now
    try:
        with selectors.DefaultSelector() as selector:
            for _ in range(1000):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                sockets.append(sock)
                selector.register(sock, selectors.EVENT_WRITE)
            deadline = time.monotonic() + 5
            while connected < len(sockets) and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.1):
                    selector.unregister(key.fileobj)
                    connected += key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    finally:
        proc.send_signal(signal.SIGCONT)
        for sock in sockets:
            sock.close()
        stop_target(proc)
    assert connected == 1000


def test_importing_the_module_does_not_monkey_patch():
    code = ("import esr.demo.target, gevent.monkey, sys; "
            "sys.exit(gevent.monkey.is_module_patched('socket'))")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=30).returncode == 0


def test_the_target_imports_neither_locust_nor_gevent():
    """Only the engine may import them (issue 12); the target is an asyncio app."""
    code = ("import esr.demo.target, sys; "
            "print(sorted({'locust', 'gevent', 'flask'} & set(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=30,
                            capture_output=True, text=True, check=True).stdout
    assert loaded == "[]\n"


def test_serve_calls_on_ready_and_queues_beyond_capacity(tmp_path):
    """serve() itself: the callback gets the URL, and one slot makes applications wait in turn."""
    code = ("from esr.demo.target import serve; serve(port=0, capacity=1, service_ms=100, "
            "on_ready=lambda url: print('ready', url, flush=True))")
    proc, base = launch([sys.executable, "-c", code], tmp_path / "stderr.log")
    try:
        assert proc.stdout.readline().decode() == f"ready {base}\n"
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=3) as pool:
            codes = list(pool.map(lambda _: call(base, "POST", "/apply", applicant())[0],
                                  range(3)))
        assert codes == [200] * 3
        assert time.monotonic() - started >= 0.3  # 3 x 100 ms, one at a time
    finally:
        assert stop_target(proc) == (0, b"")
