"""The demo target's memory is bounded whatever its clients send (issue 11, item 6).

Each test starts its own target process: the hostile labels here would otherwise fill the
label table of a target that other tests share.
"""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from commands import served

from esr.demo.process import demo_target
from esr.demo.target import (
    MAX_LABEL_CHARS,
    MAX_RUN_LABELS,
    MAX_USER_AGENTS,
    OTHER,
    Journey,
    ServedCounts,
    TraceLog,
    record,
)

HOSTILE_REQUESTS = 5_000
APPLY_EVERY = 10  # every tenth hostile request is an application, the rest GET /health
SENDERS = 8


@pytest.fixture
def target():
    with demo_target() as url:
        yield url


def send_all(url: str, requests: list[tuple[str, str, bytes | None, dict]]) -> list[int]:
    """Send the requests over SENDERS keep-alive connections; return their statuses in order."""
    parts = urlsplit(url)

    def send_share(share: int) -> list[int]:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        statuses = []
        try:
            for method, path, body, headers in requests[share::SENDERS]:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                statuses.append(response.status)
        finally:
            connection.close()
        return statuses

    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        shares = list(pool.map(send_share, range(SENDERS)))
    return [shares[i % SENDERS][i // SENDERS] for i in range(len(requests))]


def application(citizen_id: str, **extra: object) -> bytes:
    return json.dumps({"citizen_id": citizen_id, "name": "Pat Doe", "age": 35,
                       "income": 20_000, "veteran": False, "household_size": 1,
                       **extra}).encode()


def hostile(i: int) -> tuple[str, str, bytes | None, dict]:
    """Request i, with a run label and a User-Agent no other request has."""
    headers = {"X-ESR-Synthetic": f"hostile-run-{i}", "User-Agent": f"hostile-agent-{i}",
               "Content-Type": "application/json"}
    if i % APPLY_EVERY:
        return "GET", "/health", None, headers
    return "POST", "/apply", application(f"c-{i}"), headers


def test_distinct_labels_beyond_the_cap_are_counted_as_other(target):
    statuses = send_all(target, [hostile(i) for i in range(HOSTILE_REQUESTS)])
    applications = HOSTILE_REQUESTS // APPLY_EVERY
    assert len(statuses) == HOSTILE_REQUESTS and set(statuses) <= {200, 451}

    got = json.loads(http_get(target, "/admin/stats"))
    runs, agents = got["runs"], got["headers"]["user_agents"]
    assert len(runs) <= MAX_RUN_LABELS + 1 and OTHER in runs
    # One User-Agent for each run label kept; the run labelled "(other)" keeps a few more.
    assert len(agents) <= MAX_RUN_LABELS + MAX_USER_AGENTS + 1 and OTHER in agents
    others = served(target, OTHER)["headers"]["user_agents"]
    assert len(others) <= MAX_USER_AGENTS + 1 and others[OTHER] > 0
    # Nothing is lost: the labels kept and "(other)" add up to every request and journey.
    assert got["requests"]["total"] == HOSTILE_REQUESTS
    assert sum(run["requests"] for run in runs.values()) == HOSTILE_REQUESTS
    assert sum(run["journeys"] for run in runs.values()) == applications
    assert sum(agents.values()) == HOSTILE_REQUESTS
    assert got["headers"]["synthetic"] == HOSTILE_REQUESTS
    assert sum(row["n"] for row in got["outcomes"]) == applications
    # The labels kept are counted exactly, each under its own name.
    kept = [label for label in runs if label != OTHER]
    assert kept and all(runs[label]["requests"] == 1 for label in kept)
    assert served(target, kept[0])["requests"]["total"] == 1
    # Who applied is kept under the same labels: no more than the cap plus "(other)".
    assert json.loads(http_get(target, f"/admin/applicants?run={OTHER}"))


def test_a_label_too_long_is_counted_as_other(target):
    long_label = "x" * 10_000
    assert send_all(target, [("GET", "/health", None, {"X-ESR-Synthetic": long_label,
                                                       "User-Agent": long_label})]) == [200]
    got = json.loads(http_get(target, "/admin/stats"))
    assert got["runs"] == {OTHER: {"requests": 1, "journeys": 0}}
    assert got["headers"]["user_agents"] == {OTHER: 1}


def test_large_application_bodies_are_served_but_not_kept(target):
    headers = {"X-ESR-Synthetic": "bodies", "Content-Type": "application/json"}
    small, large = application("c-small"), application("c-large", notes="n" * 100_000)
    assert send_all(target, [("POST", "/apply", small, headers),
                             ("POST", "/apply", large, headers)]) == [200, 200]
    kept = json.loads(http_get(target, "/admin/applicants?run=bodies"))
    assert kept == {"c-small": json.loads(small)}
    assert served(target, "bodies")["runs"] == {"bodies": {"requests": 2, "journeys": 2}}


def http_get(url: str, path: str) -> bytes:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().read()
    finally:
        connection.close()


def test_hostile_baggage_and_trace_headers_stay_bounded():
    """A baggage header may name any run, a traceparent may be any text: the runs are counted
    under the cap of run labels, and the trace log keeps at most its share of each run and
    of all runs (the older runs' first to go), each value cut."""
    tally = ServedCounts()
    tally.traces = TraceLog(per_run=50, total=200)
    sent = 2 * MAX_RUN_LABELS
    for i in range(sent):
        record(tally, {"type": "http", "method": "GET", "path": "/health", "headers": [
            (b"x-esr-synthetic", f"run-{i % 10}".encode()),
            (b"baggage", f"esr.synthetic=true,esr.run=bag-{i}".encode() + b",x=1" * 1000),
            (b"traceparent", b"00-" + b"a" * 5000)]}, 200, Journey())
    got = tally.snapshot()
    by_run = got["traffic"]["synthetic_by_run"]
    assert len(by_run) <= MAX_RUN_LABELS + 1 and OTHER in by_run
    assert sum(by_run.values()) == got["traffic"]["synthetic"] == sent
    assert got["headers"]["invalid_traceparent"] == sent
    kept = tally.traces.runs
    assert tally.traces.size == sum(map(len, kept.values())) <= 200
    assert all(len(entries) <= 50 for entries in kept.values()) and "run-9" in kept
    assert all(len(value) <= MAX_LABEL_CHARS for entries in kept.values()
               for entry in entries for value in entry[3:])
