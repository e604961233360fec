"""A hostile target cannot grow ESR's memory: what it names is kept bounded (issue 11, item 6).

Routes, legal-block reasons and error texts come from the target. A target naming a new
one in every response once grew ESR by 300 MB per 200,000 responses. Here each kind keeps
at most DISTINCT_VALUES_MAX values, cut to VALUE_CHARS_MAX characters, and the rest is
counted as "other (K distinct)" through the run directory, summary.json and the card.

The memory test drives ESR's probes directly with 200,000 responses' worth of values
(a real Locust process does ~1,700 requests/s on this shared machine: two minutes); a
short real run against a hostile HTTP target on 127.0.0.1 checks the path end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gc
import json
import re
import threading
from pathlib import Path

import msgpack
import psutil

from esr.bounded import CUT_MARK, DISTINCT_VALUES_MAX, VALUE_CHARS_MAX
from esr.engine.probes import Probes, Tally
from esr.launcher import RunSettings, run
from esr.report.card import TOP_VALUES
from esr.report.render import write_report_card
from esr.run_directory import (
    COUNTERS,
    RUN_SETTINGS,
    SUMMARY,
    TABLES,
    read_json,
    write_json,
    write_tables,
)

FLOOD = 200_000  # responses, each naming a new 1 KB route and a new block reason
# RSS growth allowed for FLOOD: measured +3 MB with the caps, +305 MB without them.
MEMORY_GROWTH_MAX_MB = 30
DRAIN_EVERY = 5_000  # requests between two drains (a worker reports every 3 s)
ESTIMATE_TOLERANCE = 0.05  # the "other" distinct count is a sketch's: 1.6% standard error
T0 = 1_800_000_000


def route_of(n: int) -> str:
    return f"route-{n:09d}-".ljust(1024, "r")


def respond(probes: Probes, n: int, cohort=("62+", True)) -> None:
    """What ESR's probes get from one hostile response."""
    probes.request("apply", T0 + n / 1000, 10.0, None,
                   {"route": route_of(n), "blocked": f"R{n:09d}"}, cohort)


def shipped(probes: Probes) -> dict:
    """A drain as the master receives it from a worker: through msgpack."""
    return msgpack.unpackb(msgpack.packb(probes.drain()), strict_map_key=False)


def run_dir_of(tmp_path: Path, tally: Tally) -> Path:
    """A run directory holding `tally`, as the load process writes it at the end of a run."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_json(run_dir / RUN_SETTINGS, {
        "run_id": "hostile", "esr_version": "test", "scenario_name": "hostile target",
        "scenario_file": "x.yml", "scenario_sha256": "0" * 64, "seed": 1,
        "host": "http://127.0.0.1:1", "workers": 0, "time_scale": 1, "user_scale": 1,
        "slo": [], "phases": [{"name": "plateau", "start": 0, "end": 5, "citizens": 1,
                                "spawn_rate": 1}]})
    write_tables(run_dir, tally, {"run_id": "hostile", "started_at": "2027-01-15T08:00:00+00:00",
                                  "ended_at": "2027-01-15T08:03:20+00:00", "workers": 0,
                                  "lost_workers": []})
    return run_dir


def table(run_dir: Path, name: str) -> list[dict]:
    with open(run_dir / TABLES[name][0], newline="") as rows:
        return list(csv.DictReader(rows))


def other_entry(counts: dict) -> tuple[str, int]:
    """The one "other (K distinct)" entry of a summary's routes{} or legal_blocks{}."""
    found = [(label, n) for label, n in counts.items() if label.startswith("other (")]
    assert len(found) == 1, f"no single 'other' entry among {len(counts)}: {list(counts)[-3:]}"
    return found[0]


def distinct_in(label: str) -> int:
    match = re.fullmatch(r"other \(≈?([\d,]+) distinct\)", label)
    assert match, label
    return int(match.group(1).replace(",", ""))


def assert_near(estimate: int, exact: int) -> None:
    assert abs(estimate - exact) <= ESTIMATE_TOLERANCE * exact, (estimate, exact)


def test_200000_new_routes_and_reasons_keep_memory_bounded(tmp_path):
    process = psutil.Process()
    tally = Tally()
    probes = Probes(bucket_s=5.0)
    warm_up = 2 * DRAIN_EVERY  # imports, the first folds and sketches, allocator pools
    for n in range(warm_up):
        respond(probes, n)
    tally.merge(shipped(probes))
    gc.collect()
    before = process.memory_info().rss
    for n in range(warm_up, warm_up + FLOOD):
        respond(probes, n)
        if n % DRAIN_EVERY == 0:
            tally.merge(shipped(probes))
    tally.merge(shipped(probes))
    gc.collect()
    growth_mb = (process.memory_info().rss - before) / 2**20
    assert growth_mb < MEMORY_GROWTH_MAX_MB, f"memory grew {growth_mb:.0f} MB"

    run_dir = run_dir_of(tmp_path, tally)
    routes = table(run_dir, "routes")
    assert len(routes) <= DISTINCT_VALUES_MAX
    assert len(table(run_dir, "legal_blocks")) <= DISTINCT_VALUES_MAX
    responses = warm_up + FLOOD
    write_report_card(run_dir, ("html", "json"))
    summary = read_json(run_dir / SUMMARY)
    for kind in ("routes", "legal_blocks"):
        label, count = other_entry(summary[kind])
        kept = {k: n for k, n in summary[kind].items() if k != label}
        assert len(kept) <= DISTINCT_VALUES_MAX
        assert count + sum(kept.values()) == responses  # nothing lost, nothing counted twice
        assert_near(distinct_in(label), responses - len(kept))
    assert "other (≈" in (run_dir / "report.html").read_text()


def test_two_workers_disjoint_values_merge_to_at_most_n_and_other(tmp_path):
    """Each worker sees N + N/2 values of its own (so workers fold too); the master keeps N."""
    tally = Tally()
    per_worker = DISTINCT_VALUES_MAX + DISTINCT_VALUES_MAX // 2
    for worker in range(2):
        probes = Probes(bucket_s=5.0)
        for i in range(per_worker):
            n = worker * per_worker + i
            respond(probes, n, cohort=("18-25", worker == 1))
            probes.request("apply", T0, 10.0, f"HTTP 500 at {n}", {}, None)
        tally.merge(shipped(probes))
    run_dir = run_dir_of(tmp_path, tally)
    total = 2 * per_worker
    for kind in ("routes", "legal_blocks", "errors"):
        rows = table(run_dir, kind)
        assert len(rows) <= DISTINCT_VALUES_MAX, f"{kind}: {len(rows)} rows"
        kept = sum(int(row["count"]) for row in rows)
        folded = read_json(run_dir / COUNTERS)["folded"][kind]
        assert kept + folded["count"] == total
        assert_near(folded["distinct"], total - len(rows))
    summary = write_report_card(run_dir, ("json",))["json"]
    errors = json.loads(summary.read_text())["errors"]
    assert len(errors) <= DISTINCT_VALUES_MAX + 1 and errors[-1]["kind"].startswith("other (≈")


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_long_values_are_cut_visibly_and_markup_is_escaped_on_the_card(tmp_path):
    probes = Probes(bucket_s=1.0)
    long = HOSTILE + "A" * 5_000
    for i in range(30):
        probes.request("apply", T0 + i / 10, 20.0, f"HTTP 500 {long}",
                       {"route": f"route {long}", "blocked": f"HIPAA{long}"}, ("62+", True))
        probes.journey("g", "62+", True, "error", False)
    tally = Tally()
    tally.merge(shipped(probes))
    run_dir = run_dir_of(tmp_path, tally)
    for kind, column in (("routes", "route"), ("legal_blocks", "reason"), ("errors", "kind")):
        [row] = table(run_dir, kind)
        assert len(row[column]) <= VALUE_CHARS_MAX and row[column].endswith(CUT_MARK), kind
        assert HOSTILE in row[column]  # cut at the end: the start is still there to read
    files = write_report_card(run_dir, ("html", "json"))
    html = files["html"].read_text()
    assert "<script>" not in html and "<img" not in html
    assert html.count("&lt;script&gt;") >= 3  # route, reason and error, shown as text
    assert "A" * (VALUE_CHARS_MAX + 1) not in html and CUT_MARK in html
    summary = json.loads(files["json"].read_text())
    assert all(len(value) <= VALUE_CHARS_MAX for value in
               [*summary["routes"], *summary["legal_blocks"],
                *(e["kind"] for e in summary["errors"])])


# ---- a real run against a hostile target -------------------------------------------------------


class HostileTarget:
    """HTTP/1.1 on 127.0.0.1, keep-alive: every response names a new 1 KB route and a new
    legal-block reason. asyncio in a thread: several times faster than http.server."""

    def __init__(self):
        self.served = 0

    def _response(self) -> bytes:
        self.served += 1
        body = b'{"status": "blocked"}'
        return (f"HTTP/1.1 451 Unavailable For Legal Reasons\r\n"
                f"X-ACT-Route: {route_of(self.served)}\r\n"
                f"X-ESQ-Verdict: blocked; reason=R{self.served:09d}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body

    async def _converse(self, reader, writer) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError,
                                 asyncio.LimitOverrunError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                writer.write(self._response())
                await writer.drain()
        writer.close()

    @contextlib.contextmanager
    def serving(self):
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        ready = threading.Event()
        address = []

        async def serve():
            server = await asyncio.start_server(self._converse, "127.0.0.1", 0, backlog=4096)
            address.append(server.sockets[0].getsockname()[1])
            ready.set()
            async with server:
                await stop.wait()

        thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
        thread.start()
        assert ready.wait(10), "the hostile target did not start"
        try:
            yield f"http://127.0.0.1:{address[0]}"
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)
            loop.close()


SCENARIO = """
scenario: hostile target
seed: 11
citizens:
  - {template: low_income, count: 20, behavior: {think_time: 0s..0s}}
load_profile: {ramp_up: 1s, sustain: 1s}
track_legal_blocks: true
report: {formats: [json, html]}
"""


def test_a_real_run_against_a_hostile_target_reports_top_values_and_other(tmp_path):
    (tmp_path / "scenario.yml").write_text(SCENARIO)
    target = HostileTarget()
    with target.serving() as url:
        result = run(RunSettings(scenario=tmp_path / "scenario.yml", host=url, workers=0,
                                 run_dir=tmp_path / "run"))
    assert target.served > DISTINCT_VALUES_MAX, "too few responses to test the cap"
    summary = result.summary
    responses = summary["requests"]["total"]
    assert len(table(result.run_dir, "routes")) <= DISTINCT_VALUES_MAX
    for kind in ("routes", "legal_blocks"):
        label, count = other_entry(summary[kind])
        assert len(summary[kind]) <= DISTINCT_VALUES_MAX + 1
        assert count + sum(n for k, n in summary[kind].items() if k != label) == responses
    html = write_report_card(result.run_dir, ("html",))["html"].read_text()
    routes = re.search(r'<table id="route-table">(.*?)</table>', html, re.S).group(1)
    assert routes.count("<tr") == 1 + TOP_VALUES + 1  # heading, the top routes, other
    other = re.search(r"other \(≈?[\d,]+ distinct\)", routes)
    assert other, routes[-400:]
    legal = re.search(r'<table id="legal-table">(.*?)</table>', html, re.S).group(1)
    assert re.search(r"other \(≈?[\d,]+ distinct\)", legal)
