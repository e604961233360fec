"""The ESR service under watchers and readers while a run goes on (issue 13's figures).

Starts the demo target and `esr-locust serve` (local workers, one per core unless
`--workers`) on free loopback ports, with 1,000 ended runs of the agency put straight into
its store, then submits the demo scenario twice:

- once alone, as the baseline: the service's CPU while it follows a run, and its reads;
- once with W clients (default 200) watching the run's live stream by Server-Sent Events.

For each run: submit -> the target's first request of that run (goal < 5 s with local
workers); the service's own CPU (not its Locust children's) over a window of the run,
before any read; then, still during the run, `GET /v1/runs/{id}` N times (goal p99 < 20 ms)
and the agency's 1,000+ runs listed page by page, 200 a page (goal < 100 ms for all of
them). With watchers: each `stats` event's delay, from the moment the service wrote it
(its `at`) to its arrival at each watcher (goal: every event at every watcher within 1 s),
and whether every watcher got every `stats` event the store holds.

Everything runs on this machine, so the watchers and the load compete with the service for
its cores: absolute figures drift on a shared machine; the ratios say more.

    .venv/bin/python benchmarks/service.py [--watchers 200] [--reads 500] [--lists 30]
                                           [--time-scale 1] [--window 5] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from esr.demo.process import demo_target
from esr.launcher import end_process
from esr.run_directory import new_run_id
from esr.service.agencies import Policy, create_token
from esr.service.store import PASSED, Store

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = (ROOT / "examples" / "demo.yml").read_text()
LISTENING = re.compile(r"service on (http://\S+) ")
AGENCY = "bench"
STORED_RUNS = 1_000
PAGE = 200  # the API's largest page


@dataclass
class Watcher:
    """One SSE client's view: when each stats event arrived, and how late."""

    delays_s: dict[int, float] = field(default_factory=dict)  # stats event id -> delay
    done_delay_s: float | None = None  # the run's end, written -> here
    error: str | None = None


@dataclass
class RunFigures:
    submit_to_first_request_s: float
    service_cpu: float  # share of one core, over the window
    get_run_ms: list[float]
    list_all_ms: list[float]
    listed: int
    watchers: list[Watcher]
    stats_ids: list[int]


# ---- the service -------------------------------------------------------------------------------


def fill_store(data: Path, target: str) -> str:
    """The agency's token, and STORED_RUNS ended runs of its own, written straight to the store."""
    store = Store(data)
    _, secret = create_token(store, AGENCY, Policy(targets=(target,), max_queued=10))
    token = store.tokens()[0]
    verdict = {"exit_code": 0, "slo_passed": True, "requests": 1000, "failures": 0,
               "p95_ms": 40.0, "citizens": 90, "checks": []}
    for k in range(STORED_RUNS):
        run_id = new_run_id(f"stored {k}")
        store.add_run(run_id=run_id, agency=AGENCY, token_id=token.id, scenario_name=f"stored {k}",
                      settings={"host": target, "time_scale": 1.0, "user_scale": 1.0,
                                "planned_s": 25.0},
                      run_dir=data / "runs" / AGENCY / run_id, body_sha256="0" * 64,
                      idempotency_key=None)
        store.set_status(run_id, PASSED, verdict=verdict)
    return secret


@contextlib.contextmanager
def service(data: Path, workers: int | None) -> Iterator[tuple[str, psutil.Process]]:
    log = data / "serve.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "esr.cli", "serve", "--data", str(data), "--bind",
             "127.0.0.1:0", *(["--workers", str(workers)] if workers is not None else [])],
            stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (found := LISTENING.search(log.read_text())):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"esr-locust serve did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield found.group(1), psutil.Process(process.pid)
    finally:
        end_process(process, grace_s=60)


# ---- watchers ----------------------------------------------------------------------------------


async def watch(client: httpx.AsyncClient, run_id: str, watcher: Watcher) -> None:
    """Follow the run's events to `done`, noting each stats event's delay on arrival."""
    try:
        async with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
            event_id, kind = None, None
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind in ("stats", "done"):
                    written = dt.datetime.fromisoformat(json.loads(line[6:])["at"]).timestamp()
                    if kind == "done":
                        watcher.done_delay_s = time.time() - written
                        return
                    watcher.delays_s[event_id] = time.time() - written
    except httpx.HTTPError as error:
        watcher.error = f"{type(error).__name__}: {error}"


def watchers(url: str, secret: str, run_id: str, count: int) -> list[Watcher]:
    """`count` clients following the run's live stream to its end (in a process of their own,
    so that they do not slow this one's timed reads)."""
    followed = [Watcher() for _ in range(count)]

    async def all_of_them() -> None:
        limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(
                30.0, read=120.0), headers={"Authorization": f"Bearer {secret}"}) as client:
            await asyncio.gather(*(watch(client, run_id, w) for w in followed))

    asyncio.run(all_of_them())
    return followed


# ---- one run -----------------------------------------------------------------------------------


def first_request_at_target(target: str, run_id: str, deadline_s: float = 60.0) -> float:
    """When (time.monotonic) the target first counted a request of this run."""
    with httpx.Client(timeout=10) as client:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if client.get(f"{target}/admin/stats", params={"run": run_id}).json()[
                    "requests"]["total"] > 0:
                return time.monotonic()
            time.sleep(0.02)
    raise SystemExit(f"run {run_id} sent no request to the target in {deadline_s:.0f} s")


def timed_ms(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def list_all(api: httpx.Client) -> int:
    """The agency's runs, every page of them; how many."""
    listed, cursor = 0, None
    while True:
        page = api.get("/v1/runs", params={"limit": PAGE, **({"cursor": cursor} if cursor
                                                              else {})}).json()
        listed += len(page["runs"])
        if not (cursor := page["next_cursor"]):
            return listed


def one_run(url: str, process: psutil.Process, target: str, secret: str, args,
            watcher_count: int) -> RunFigures:
    with httpx.Client(base_url=url, timeout=30,
                      headers={"Authorization": f"Bearer {secret}"}) as api:
        submitted = time.monotonic()
        answer = api.post("/v1/runs", json={"scenario": SCENARIO, "host": target,
                                            "time_scale": args.time_scale})
        answer.raise_for_status()
        run_id = answer.json()["id"]
        watching = ProcessPoolExecutor(1)
        followed = watching.submit(watchers, url, secret, run_id, watcher_count)
        first_request = first_request_at_target(target, run_id) - submitted

        # The service's own CPU over a window of the run, before any read.
        before = process.cpu_times()
        window_started = time.monotonic()
        time.sleep(args.window)
        after = process.cpu_times()
        cpu = (after.user + after.system - before.user - before.system) / (
            time.monotonic() - window_started)

        # Reads while the run goes on.
        assert api.get(f"/v1/runs/{run_id}").json()["status"] in ("running", "stopping"), \
            "the run ended before the reads: raise --time-scale"
        get_run = [timed_ms(lambda: api.get(f"/v1/runs/{run_id}").raise_for_status())
                   for _ in range(args.reads)]
        listed = list_all(api)
        list_all_ms = [timed_ms(lambda: list_all(api)) for _ in range(args.lists)]
        if api.get(f"/v1/runs/{run_id}").json()["status"] not in ("running", "stopping"):
            print("  (the run ended during the reads: raise --time-scale for reads under load)")

        deadline = time.monotonic() + 300
        while api.get(f"/v1/runs/{run_id}").json()["status"] not in (
                "passed", "failed", "error", "cancelled", "interrupted"):
            if time.monotonic() > deadline:
                raise SystemExit(f"run {run_id} did not end")
            time.sleep(0.5)
        followers = followed.result(timeout=60)
        watching.shutdown()
        stats_ids = [e["id"] for e in api.get(f"/v1/runs/{run_id}/events",
                                              params={"after": 0}).json()
                     if e["type"] == "stats"]
    return RunFigures(first_request, cpu, get_run, list_all_ms, listed, followers, stats_ids)


# ---- figures -----------------------------------------------------------------------------------


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def report(name: str, run: RunFigures) -> None:
    print(f"{name}:")
    print(f"  submit -> first request at the target: {run.submit_to_first_request_s:.2f} s "
          "(goal < 5 s)")
    print(f"  service CPU (its own process) while following the run: "
          f"{run.service_cpu:.1%} of one core")
    print(f"  GET /v1/runs/{{id}} x{len(run.get_run_ms)}: p50 "
          f"{percentile(run.get_run_ms, 50):.1f} ms, p99 {percentile(run.get_run_ms, 99):.1f} ms, "
          f"max {max(run.get_run_ms):.1f} ms (goal p99 < 20 ms)")
    print(f"  listing all {run.listed:,} runs ({-(-run.listed // PAGE)} pages of {PAGE}) "
          f"x{len(run.list_all_ms)}: p50 {percentile(run.list_all_ms, 50):.0f} ms, p99 "
          f"{percentile(run.list_all_ms, 99):.0f} ms (goal < 100 ms)")
    if not run.watchers:
        return
    delays = [d for w in run.watchers for d in w.delays_s.values()]
    complete = sum(set(w.delays_s) == set(run.stats_ids) and w.done_delay_s is not None
                   for w in run.watchers)
    errors = [w.error for w in run.watchers if w.error]
    late = sum(d > 1.0 for d in delays)
    print(f"  {len(run.watchers)} SSE watchers, {len(run.stats_ids)} stats events written: "
          f"{complete}/{len(run.watchers)} watchers got every one and the end"
          + (f"; errors: {errors[:3]}" if errors else ""))
    print(f"  stats event delay, written -> at a watcher ({len(delays):,} deliveries): "
          f"p50 {percentile(delays, 50) * 1000:.0f} ms, p99 {percentile(delays, 99) * 1000:.0f} "
          f"ms, max {max(delays) * 1000:.0f} ms; over 1 s: {late} (goal: none)")
    ends = [w.done_delay_s for w in run.watchers if w.done_delay_s is not None]
    if ends:
        print(f"  the run's end (done), written -> at a watcher: p50 "
              f"{percentile(ends, 50) * 1000:.0f} ms, max {max(ends) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--reads", type=int, default=500, help="GET /v1/runs/{id} calls")
    parser.add_argument("--lists", type=int, default=30, help="listings of every run")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="of the demo scenario (25 s at 1)")
    parser.add_argument("--window", type=float, default=5.0,
                        help="seconds of the run over which the service's CPU is measured")
    parser.add_argument("--workers", type=int, default=None,
                        help="local Locust workers per run (default: one per core)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="esr-bench-service-") as folder, \
            demo_target() as target:
        data = Path(folder)
        started = time.perf_counter()
        secret = fill_store(data, target)
        print(f"{STORED_RUNS:,} ended runs written to the store in "
              f"{time.perf_counter() - started:.1f} s; the demo scenario at time scale "
              f"{args.time_scale:g}, {args.workers if args.workers is not None else 'one per core'}"
              " local workers")
        with service(data, args.workers) as (url, process):
            with httpx.Client(base_url=url, timeout=30,
                              headers={"Authorization": f"Bearer {secret}"}) as api:
                list_all(api)
                idle = [timed_ms(lambda: list_all(api)) for _ in range(args.lists)]
            print(f"no run in progress: listing all {STORED_RUNS:,} runs x{args.lists}: p50 "
                  f"{percentile(idle, 50):.0f} ms, p99 {percentile(idle, 99):.0f} ms")
            alone = one_run(url, process, target, secret, args, 0)
            report("the run alone", alone)
            watched = one_run(url, process, target, secret, args, args.watchers)
            report(f"the run with {args.watchers} watchers", watched)
        if alone.service_cpu >= 0.005:  # below half a percent the ratio says nothing
            print(f"ratio service CPU with {args.watchers} watchers / alone: "
                  f"{watched.service_cpu / alone.service_cpu:.1f}x")
        print(f"ratio GET /v1/runs/{{id}} p99 with watchers / alone: "
              f"{percentile(watched.get_run_ms, 99) / percentile(alone.get_run_ms, 99):.1f}x")


if __name__ == "__main__":
    main()
