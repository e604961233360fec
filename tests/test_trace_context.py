"""W3C trace context on every request (issue 16): what the demo target received, request by
request, in real runs against it, and the report card's sample trace of each kind of error.

Two short runs against the session's demo target, each read back by its run id: one with
trace context on, a journey of three steps whose first sets its own trace headers and whose
later ones fail in two ways; one with `trace_context: false`.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections import defaultdict
from pathlib import Path
from urllib.parse import unquote, unquote_plus

import pytest
from commands import served

from esr.launcher import RunResult, RunSettings, run
from esr.report.render import write_report_card
from esr.scenario.model import age_band
from esr.wire import baggage, trace_id_in, traceparent

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01")
# The W3C specification's own example: what a step sets by itself.
OWN_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

TRACED = """
scenario: traced
seed: 16
citizens: {template: families, count: 6, behavior: {think_time: 50ms..150ms, retries: 1}}
load_profile: {sustain: 2s}
hitl_skip: true
report: {formats: [json]}
journey:
  - name: form
    request: GET /form
    headers:
      Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01
      baggage: "esr.synthetic=true,esr.run={{ run_id }},esr.cohort=own"
  - name: apply
    request: POST /apply
    json:
      citizen_id: "{{ citizen.citizen_id }}"
      name: "{{ citizen.first_name }}"
      age: "{{ citizen.age }}"
      income: "{{ citizen.income }}"
      veteran: "{{ citizen.veteran }}"
      # Citizens of 45 and over send a household of 0: HTTP 400, one kind of error.
      household_size: "{{ citizen.household_size if citizen.age < 45 else 0 }}"
  - name: lookup
    request: GET /status/no-such-application
"""

UNTRACED = """
scenario: untraced
seed: 17
citizens: {template: low_income, count: 4, behavior: {think_time: 50ms..150ms, retries: 0}}
load_profile: {sustain: 2s}
trace_context: false
journey: {name: lookup, request: GET /status/none}
report: {formats: [json]}
"""


def admin(target: str, path: str) -> object:
    with urllib.request.urlopen(target + path, timeout=10) as response:
        return json.loads(response.read())


def run_scenario(tmp: Path, text: str, target: str, workers: int = 0) -> RunResult:
    path = tmp / "scenario.yml"
    path.write_text(text)
    return run(RunSettings(scenario=path, host=target, workers=workers, run_dir=tmp / "run"))


@pytest.fixture(scope="module")
def traced(tmp_path_factory, target) -> tuple[RunResult, list[dict]]:
    """The traced run (a master and one worker, so error traces cross the wire) and every
    request the target received in it, with its trace headers."""
    result = run_scenario(tmp_path_factory.mktemp("traced"), TRACED, target, workers=1)
    requests = admin(target, f"/admin/traces?run={result.run_id}")
    assert len(requests) == served(target, result.run_id)["requests"]["total"] > 20
    return result, requests


def members(header: str) -> dict[str, str]:
    return {key: unquote(value) for key, _, value in
            (member.partition("=") for member in header.split(","))}


# ---- the headers on the wire ----------------------------------------------------------------


def test_every_request_is_marked_synthetic_for_its_run(traced, target):
    result, requests = traced
    seen = served(target, result.run_id)
    total = seen["requests"]["total"]
    assert seen["traffic"] == {"synthetic": total, "real": 0,
                               "synthetic_by_run": {result.run_id: total}}
    assert seen["headers"]["traceparent"] == total
    for request in requests:
        bag = members(request["baggage"])
        assert (bag["esr.synthetic"], bag["esr.run"]) == ("true", result.run_id), request


def test_one_trace_per_journey_a_new_span_per_request(traced, target):
    result, requests = traced
    ours = [r for r in requests if r["endpoint"] != "GET /form"]  # the form step sets its own
    traces, spans = defaultdict(set), []
    for request in ours:
        match = TRACEPARENT.fullmatch(request["traceparent"])
        assert match, request
        trace_id, span_id = match.groups()
        assert trace_id != "0" * 32 and span_id != "0" * 16
        traces[request["citizen"]].add(trace_id)
        spans.append(span_id)
    # Each citizen makes one journey: one trace for its requests, retries included, and a
    # trace of its own; every request a span of its own.
    assert all(len(ids) == 1 for ids in traces.values()), traces
    assert len({next(iter(ids)) for ids in traces.values()}) == len(traces) > 10
    assert len(set(spans)) == len(spans)
    assert len(ours) > len(traces)  # journeys of several requests: the check means something
    # The cohort in the baggage is the citizen's age band, as its application says.
    applicants = admin(target, f"/admin/applicants?run={result.run_id}")
    for request in ours:
        if request["citizen"] in applicants:
            age = applicants[request["citizen"]]["age"]
            assert members(request["baggage"])["esr.cohort"] == age_band(age), request


def test_a_steps_own_trace_headers_win(traced):
    result, requests = traced
    forms = [r for r in requests if r["endpoint"] == "GET /form"]
    assert forms and all(r["traceparent"] == OWN_TRACEPARENT for r in forms)
    assert all(r["baggage"] == f"esr.synthetic=true,esr.run={result.run_id},esr.cohort=own"
               for r in forms)


def test_trace_context_false_sends_neither_header_and_keeps_no_trace(tmp_path, target):
    result = run_scenario(tmp_path, UNTRACED, target)
    seen = served(target, result.run_id)
    total = seen["requests"]["total"]
    assert total > 5 and seen["headers"]["missing_traceparent"] == total
    assert seen["traffic"] == {"synthetic": 0, "real": total, "synthetic_by_run": {}}
    requests = admin(target, f"/admin/traces?run={result.run_id}")
    assert len(requests) == total
    assert all(r["traceparent"] is None and r["baggage"] is None for r in requests)
    assert seen["headers"]["synthetic"] == total  # ESR's own label stays
    # Its errors (every request is a 404) have no trace to show.
    assert [(e["endpoint"], e["kind"], e["count"], e["trace_id"])
            for e in result.summary["errors"]] == [("lookup", "HTTP 404", total, None)]


# ---- the report card ------------------------------------------------------------------------


def test_each_kind_of_error_shows_a_trace_the_target_received_failing(traced):
    result, requests = traced
    errors = {(e["endpoint"], e["kind"]): e for e in result.summary["errors"]}
    assert set(errors) == {("apply", "HTTP 400"), ("lookup", "HTTP 404")}, errors
    received = {(r["endpoint"], r["status"], TRACEPARENT.fullmatch(r["traceparent"])[1])
                for r in requests if r["endpoint"] != "GET /form"}
    for (step, kind), endpoint in ((("apply", "HTTP 400"), "POST /apply"),
                                   (("lookup", "HTTP 404"), "GET /status/{id}")):
        trace_id = errors[(step, kind)]["trace_id"]
        assert (endpoint, int(kind.split()[1]), trace_id) in received, (step, trace_id)
    html = write_report_card(result.run_dir, ("html",))["html"].read_text()
    for error in errors.values():
        assert f"<code>{error['trace_id']}</code>" in html


# ---- the header values ----------------------------------------------------------------------


def test_header_values_are_w3cs():
    assert traceparent("4bf92f3577b34da6a3ce929d0e0e4736", 0x00F067AA0BA902B7) == \
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert traceparent("1" * 32, 0).endswith("-0000000000000001-01")  # never a zero span
    assert trace_id_in(OWN_TRACEPARENT) == "0af7651916cd43dd8448eb211c80319c"
    for bad in (None, "", OWN_TRACEPARENT.upper(), "00-" + "0" * 32 + "-b7ad6b7169203331-01",
                "ff" + OWN_TRACEPARENT[2:], OWN_TRACEPARENT + "-extra"):
        assert trace_id_in(bad) is None, bad
    text = baggage("20261201-rent 62+ ü,x;y", "62+")
    assert text.isascii() and " " not in text and ";" not in text
    # Read back the same by a W3C decoder and by OpenTelemetry for Python's (unquote_plus).
    for decode in (unquote, unquote_plus):
        assert {k: decode(v) for k, _, v in (m.partition("=") for m in text.split(","))} == {
            "esr.synthetic": "true", "esr.run": "20261201-rent 62+ ü,x;y", "esr.cohort": "62+"}
