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
from esr.demo.target import MAX_RUN_LABELS, MAX_USER_AGENTS, OTHER

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
