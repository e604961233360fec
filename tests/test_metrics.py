"""Prometheus metrics (`--metrics-bind`): scraped during and after real runs, the final
figures equal summary.json and what the target counted; label values stay bounded whatever
the target answers.

The demo scenario's own run is scraped in test_demo.py; here a short run through the
command, as a pipeline starts it (the process must stay for the last scrape), a hostile
target, and bad input."""

from __future__ import annotations

import socket
import socketserver
import subprocess
import threading
import time
from pathlib import Path

import pytest
from commands import esr_locust, free_port, served
from scraping import Scrape, Scraper

from esr.engine.probes import OTHER_ENDPOINTS
from esr.errors import EXIT_BAD_INPUT
from esr.metrics import LABEL_CHARS_MAX, METRICS
from esr.run_directory import SUMMARY, read_json

SHORT = """\
esr: 1
scenario: metrics rehearsal
seed: 5
citizens: {template: low_income, count: 6, behavior: {think_time: 50ms..150ms, retries: 0}}
load_profile: {sustain: 3s}
slo: {p95_ms: 250, error_rate: 0.5}
report: {formats: [json]}
"""
LINGER_S = 30


def run_scraped(tmp_path: Path, scenario: str, host: str, *options: str
                ) -> tuple[subprocess.CompletedProcess, list[Scrape], dict, float]:
    """`esr-locust run --metrics-bind` scraped every 0.25 s: the process, the scrapes, the
    summary, and when the process ended."""
    (tmp_path / "scenario.yml").write_text(scenario)
    port, run_dir = free_port(), tmp_path / "run"
    with Scraper(f"http://127.0.0.1:{port}/metrics") as scraper:
        done = subprocess.run(esr_locust(
            "run", str(tmp_path / "scenario.yml"), "--host", host, "--run-dir", str(run_dir),
            "--metrics-bind", f"127.0.0.1:{port}", "--metrics-linger", str(LINGER_S),
            *options), capture_output=True, text=True, timeout=120)
        ended = time.time()
    return done, scraper.scrapes, read_json(run_dir / SUMMARY), ended


def test_a_run_scraped_during_and_after_counts_what_its_summary_and_the_target_count(
        tmp_path, target):
    done, scrapes, summary, ended = run_scraped(tmp_path, SHORT, target, "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "esr-locust: metrics on http://127.0.0.1:" in done.stderr
    written = (tmp_path / "run" / SUMMARY).stat().st_mtime
    final = scrapes[-1]
    # Scraped while citizens ran, with fewer requests than at the end; then once more after
    # the summary was written, and the process left at that scrape, not at the linger's end.
    during = [s for s in scrapes if s.at < written and s.total("esr_citizens_active") > 0]
    assert during and during[0].total("esr_requests_total") < final.total("esr_requests_total")
    assert final.at > written and ended - final.at < LINGER_S / 2
    # Counters never go down from one scrape to the next.
    for before, after in zip(scrapes, scrapes[1:], strict=False):
        for key, value in before.samples.items():
            if key[0].endswith(("_total", "_count", "_bucket")) and key in after.samples:
                assert after.samples[key] >= value, key

    run_id = summary["run_id"]
    assert final.series("esr_run_info") == [{"run": run_id, "scenario": "metrics rehearsal",
                                             "esr_version": summary["esr_version"]}]
    assert final.total("esr_requests_total") == summary["requests"]["total"] == \
        served(target, run_id)["requests"]["total"] > 0
    assert final.by("esr_requests_total", "endpoint", "method") == {("apply", "POST"): summary[
        "requests"]["total"]}
    assert final.by("esr_request_failures_total", "endpoint") == {
        (e["name"],): e["failures"] for e in summary["endpoints"]}
    assert final.by("esr_request_duration_seconds_count", "endpoint") == {
        (e["name"],): e["requests"] for e in summary["endpoints"]}
    # The SLO's 250 ms is a bucket bound of its own, beside Prometheus's defaults.
    bounds = {s["le"] for s in final.series("esr_request_duration_seconds_bucket")}
    assert {"0.25", "0.1", "+Inf"} <= bounds
    assert final.total("esr_citizens_started_total") == summary["citizens"]["total"]
    assert final.by("esr_journeys_total", "age_band", "veteran", "outcome") == {
        (c["age_band"], str(c["veteran"]).lower(), outcome): n
        for c in summary["cohorts"] for outcome, n in c["by_outcome"].items()}
    assert final.by("esr_slo_passing", "check") == {
        (c["name"],): float(c["passed"]) for c in summary["slo"]["checks"]}
    # Each load process's CPU is in the summary, for its verdict on whether ESR was the limit.
    processes = {p["process"]: p for p in summary["load_generator"]["processes"]}
    assert "master" in processes and len(processes) == 2, processes
    assert all(p["cpu_s"] > 0 and 2 < p["wall_s"] < 60 for p in processes.values()), processes
    # Gauges are the moment's: one worker while it ran, none once it ended.
    assert {s.total("esr_workers") for s in during} == {1} and final.total("esr_workers") == 0


def test_nothing_scraped_means_no_waiting_at_the_end(tmp_path, target):
    """Without a Prometheus scraping, the run ends as it would without the endpoint."""
    (tmp_path / "scenario.yml").write_text(SHORT.replace("3s}", "1s}"))
    started = time.monotonic()
    done = subprocess.run(esr_locust(
        "run", str(tmp_path / "scenario.yml"), "--host", target, "--workers", "0",
        "--run-dir", str(tmp_path / "run"), "--metrics-bind", str(free_port()),
        "--metrics-linger", "600"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 60


# ---- a hostile target --------------------------------------------------------------------------

STEPS = 110  # beyond the 100 endpoints live figures name one by one
LONG_NAME = "n" * 300


ODD_ANSWERS = (b"299 x", b"302 x", b"404 x", b"503 " + b"x" * 500, b"777 x", b"999 x",
               b"banana", None)  # None: the connection closed without an answer


class Hostile(socketserver.BaseRequestHandler):
    """Answers every step but the last with 200, and the last with one odd answer after
    another (ODD_ANSWERS; not below 200, where a client rightly waits for a final answer:
    a slow target, not a hostile one); counts what it received."""

    received = closed = odd = 0
    lock = threading.Lock()

    def handle(self) -> None:
        stream = self.request.makefile("rb")
        while True:
            head = [stream.readline()]
            while head[-1] not in (b"\r\n", b"\n", b""):
                head.append(stream.readline())
            if head[-1] == b"":
                return
            length = next((int(line.split(b":")[1]) for line in head
                           if line.lower().startswith(b"content-length:")), 0)
            stream.read(length)
            last = head[0].split()[1] == f"/s/{STEPS - 1}".encode()
            with Hostile.lock:
                Hostile.received += 1
                answer = ODD_ANSWERS[Hostile.odd % len(ODD_ANSWERS)] if last else b"200 OK"
                Hostile.odd += last
                Hostile.closed += answer is None
            if answer is None:
                return
            self.request.sendall(b"HTTP/1.1 %s\r\nContent-Length: 0\r\nX-ACT-Route: r%d\r\n\r\n"
                                 % (answer, Hostile.received))


def test_what_a_hostile_target_answers_cannot_grow_the_series_past_the_caps(tmp_path):
    steps = "".join(f"  - name: /step{i}{LONG_NAME if i == 0 else ''}\n"
                    f"    request: {'POST' if i % 2 else 'GET'} /s/{i}\n" for i in range(STEPS))
    scenario = ("esr: 1\nscenario: hostile\nseed: 2\n"
                "citizens: {template: low_income, count: 8, behavior: {think_time: 0s..0s, "
                "retries: 0}}\nload_profile: {sustain: 3s}\nreport: {formats: [json]}\n"
                f"journey:\n{steps}")
    Hostile.received = Hostile.closed = Hostile.odd = 0
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done, scrapes, summary, _ = run_scraped(
            tmp_path, scenario, f"http://127.0.0.1:{server.server_address[1]}", "--workers", "0")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode in (0, 1), done.stderr
    final = scrapes[-1]
    # Every request once, whatever came back; none lost to the caps.
    assert final.total("esr_requests_total") == summary["requests"]["total"] > 0
    # A request whose connection closed unanswered may be sent again by the HTTP client on
    # a new one (the target sees it twice); up to 8 are cut off by the stop.
    counted = final.total("esr_requests_total")
    assert Hostile.received - Hostile.closed - 8 <= counted <= Hostile.received
    classes = {s["status_class"] for s in final.series("esr_requests_total")}
    assert {"2xx", "3xx", "4xx", "5xx", "none"} <= classes <= {"1xx", "2xx", "3xx", "4xx", "5xx",
                                                            "none"}
    endpoints = {s["endpoint"] for s in final.series("esr_requests_total")}
    assert OTHER_ENDPOINTS in endpoints and len(endpoints) <= 101
    for scrape_ in scrapes:
        for name, labels in scrape_.samples:
            assert all(len(value) <= LABEL_CHARS_MAX for _, value in labels), name
        requests = scrape_.series("esr_requests_total")
        assert len(requests) <= 101 * 2 * 6
        assert len(scrape_.samples) <= 101 * 2 * 6 * 3 + 101 * 20 + 200


def test_every_family_is_declared_with_its_labels():
    """The names dashboards rely on are exported as declared (esr/metrics.py's METRICS)."""
    for name, metric in METRICS.items():
        assert name.startswith("esr_") and metric.kind in ("counter", "gauge", "histogram")
        assert name.endswith("_total") == (metric.kind == "counter"), name


def test_a_metrics_port_in_use_is_bad_input_before_anything_starts(tmp_path, target, esr_cli):
    (tmp_path / "scenario.yml").write_text(SHORT)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = esr_cli("run", str(tmp_path / "scenario.yml"), "--host", target, "--workers", "0",
                       "--run-dir", str(tmp_path / "run"), "--metrics-bind", f"127.0.0.1:{port}")
    assert done.returncode == EXIT_BAD_INPUT
    assert f"--metrics-bind 127.0.0.1:{port}: cannot listen there" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "live.json").exists()


@pytest.mark.parametrize("text", ["host:", "abc", "70000", "1.2.3.4:x"])
def test_a_bad_metrics_address_is_refused_by_the_parser(esr_cli, text):
    result = esr_cli("run", "examples/demo.yml", "--metrics-bind", text)
    assert result.returncode == 2 and "--metrics-bind" in result.stderr
