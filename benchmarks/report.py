"""How long the report card takes for a big run, and how big its HTML gets.

A synthetic run directory — 30 minutes, 50 endpoints, one million requests — is
written with ESR's own probes and table writer, then the report card is built
from it in all four formats. Goal (issue 4): under 10 s, HTML under 3 MB.

    .venv/bin/python benchmarks/report.py [--requests 1000000] [--endpoints 50]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from esr.engine.probes import Probes, Tally, bucket_width
from esr.report.render import write_report_card
from esr.run_directory import RUN_SETTINGS, write_json, write_tables

START = 1_800_000_000.0
BANDS = ("18-29", "30-44", "45-61", "62+")
OUTCOMES = ("approved", "approved", "approved", "rejected", "blocked", "paused", "error")


def synthetic_run(run_dir: Path, requests: int, endpoints: int, seconds: int) -> None:
    rng = random.Random(1)
    duration_bucket = bucket_width(seconds)
    probes, tally = Probes(duration_bucket), Tally()
    names = [f"GET /api/v1/resource-{i:02d}" for i in range(endpoints)]
    for k in range(requests):
        t = START + seconds * k / requests
        name = names[k % endpoints]
        slow = 1 + (k % endpoints) / 10 + (3 if 600 < t - START < 700 else 0)
        failure = "HTTP 503" if rng.random() < 0.002 else None
        cohort = (BANDS[k % 4], k % 7 == 0)
        probes.request(name, t, rng.lognormvariate(3, 0.5) * slow, failure,
                       {"route": ("fast_track", "standard")[k % 2]}, cohort)
        if k % 3 == 0:
            probes.journey(f"group-{k % 3}", *cohort, OUTCOMES[k % len(OUTCOMES)], k % 11 == 0)
        if k % 100_000 == 99_999:  # as a worker would: drained every few seconds
            tally.merge(probes.drain())
    tally.merge(probes.drain())
    write_json(run_dir / RUN_SETTINGS, {
        "run_id": "synthetic", "esr_version": "benchmark", "scenario_name": "synthetic big run",
        "scenario_file": "synthetic.yml", "scenario_sha256": "0" * 64, "seed": 1,
        "host": "http://127.0.0.1:8080", "workers": 8, "time_scale": 1, "user_scale": 1,
        "slo": [{"metric": "p95_ms", "threshold": 100.0, "endpoint": None},
                {"metric": "error_rate", "threshold": 0.01, "endpoint": None},
                {"metric": "p99_ms", "threshold": 200.0, "endpoint": names[0]}],
        "phases": [{"name": "ramp_up", "start": 0, "end": 300, "citizens": 5000,
                    "spawn_rate": 16.7},
                   {"name": "plateau", "start": 300, "end": seconds, "citizens": 5000,
                    "spawn_rate": 16.7}]})
    write_tables(run_dir, tally, {"run_id": "synthetic",
                                  "started_at": "2027-01-15T08:00:00+00:00",
                                  "ended_at": f"2027-01-15T{8 + seconds // 3600:02d}:"
                                              f"{seconds % 3600 // 60:02d}:00+00:00",
                                  "workers": 8, "lost_workers": []})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--endpoints", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=1800)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        run_dir = Path(temp)
        started = time.perf_counter()
        synthetic_run(run_dir, args.requests, args.endpoints, args.seconds)
        made = time.perf_counter() - started
        started = time.perf_counter()
        files = write_report_card(run_dir)
        built = time.perf_counter() - started
        sizes = {fmt: path.stat().st_size for fmt, path in files.items()}
        rows = len((run_dir / "esr_latency.csv").read_text().splitlines()) - 1
    print(f"synthetic run: {args.requests:,} requests, {args.endpoints} endpoints, "
          f"{args.seconds}s, {rows:,} latency rows (made in {made:.1f}s)")
    print(f"report card, all four formats: {built:.2f}s   (goal < 10s: "
          f"{'met' if built < 10 else 'NOT met'})")
    print(f"report.html: {sizes['html'] / 1e6:.2f} MB   (goal < 3 MB: "
          f"{'met' if sizes['html'] < 3e6 else 'NOT met'}); report.pdf: "
          f"{sizes['pdf'] / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
