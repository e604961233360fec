"""50,000 citizens on one machine: spawn time, memory per citizen, requests/s, sockets.

Runs N citizens (default 50,000) with realistic think times against the bundled demo
target, with a local master and W workers (default 2), as `esr-locust run` does; and,
in the same run, bare Locust FastHttpUser users (one request each, then idle) as the
memory baseline. Memory per citizen = (peak RSS of the master and workers with N
citizens - peak RSS of the same processes with one citizen per worker) / N, for both
ESR and bare Locust. Bare users keep their keep-alive connection, as Locust does, so
at most BARE_USERS_MAX of them fit this machine's limits (open files, ports, the
target's open files); their memory per user does not depend on how many.
Absolute figures drift by tens of percent between runs on shared machines: read the
ratio. Goal (issue 4): ESR's memory per citizen <= 1.2x bare Locust's.

`--one-process` measures memory per citizen alone, quickly: one Locust process for ESR and
one for bare Locust (the same think time), each measuring itself: its RSS when the test
starts, and once every citizen has made its first request and thinks (the plateau); the
peak, sampled from outside every 0.1 s until the process has ended, includes the stop.
A few thousand citizens (default 4,000) keep ESR's one-off costs during the load (two blocks
of citizens, ~0.6 MB each) from weighing per citizen. `--traces K` runs both again under
tracemalloc and prints the K allocation sites whose memory per citizen differs most between
them (RSS is then inflated: read the traces only).

The default think time, 60-120 s a step, asks ~550 requests/s of the target, which it
serves on this 2-core machine; `--think 5s..30s --ramp 30 --seconds 90` asks ~2,900/s,
beyond the target and the machine's two cores (see README, "50,000 citizens").

    .venv/bin/python benchmarks/crowd.py [--citizens 50000] [--workers 2] [--think 60s..120s]
                                         [--seconds 150] [--ramp 90] [--keep DIR]
    .venv/bin/python benchmarks/crowd.py --one-process [--citizens 4000] [--spawn-rate 400]
                                         [--journey two-step] [--traces 25]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import psutil

from esr.demo.process import demo_target
from esr.engine.connections import ephemeral_ports
from esr.launcher import Launch, RunSettings, end_process
from esr.run_directory import EVENTS, LIVE, LOCUST_PREFIX, read_json
from esr.units import parse_span

# Bare users hold one connection each: within the target's 20,000 open files, and the
# ~28,000 ports of 127.0.0.1 towards it that all bare workers share.
BARE_USERS_MAX = 16_000
SAMPLE_EVERY_S = 0.5
SCENARIO = """
esr: 1
scenario: crowd benchmark
seed: 7
citizens:
  - {name: applicants, template: low_income, count: %(citizens)d,
     behavior: {think_time: "%(think)s"}}
load_profile: {ramp_up: %(ramp)ds, sustain: %(sustain)ds}
"""
BARE_LOCUSTFILE = """
from locust import FastHttpUser, constant, task

BODY = {"citizen_id": "c-1", "name": "Ada Doe", "age": 40, "income": 30000.0,
        "veteran": False, "household_size": 2}


class Bare(FastHttpUser):
    wait_time = constant(3600)  # one request, then idle with its keep-alive connection

    @task
    def apply(self):
        self.client.post("/apply", json=BODY, headers={"X-ESR-Synthetic": "%(run)s"})
"""


class Sampler(threading.Thread):
    """Samples RSS, open files and sockets of some processes, and the host's TIME_WAIT; the
    CPU of those and of a few others (the target)."""

    def __init__(self, pids: list[int], others: list[int] = (), every_s: float = SAMPLE_EVERY_S):
        super().__init__(daemon=True)
        self.pids = pids
        self.every_s = every_s
        self.peak_rss_kb = 0  # of all the processes together, at one instant
        self.peak_files = dict.fromkeys(pids, 0)
        self.peak_sockets = dict.fromkeys(pids, 0)
        self.peak_time_wait = 0
        self.cpu: dict[int, list[tuple[float, float]]] = {pid: [] for pid in [*pids, *others]}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            total = 0
            for pid in self.pids:
                try:
                    total += rss_kb(pid)
                    files = os.listdir(f"/proc/{pid}/fd")
                    sockets = sum(1 for fd in files if _is_socket(pid, fd))
                except OSError:  # the process has ended
                    continue
                self.peak_files[pid] = max(self.peak_files[pid], len(files))
                self.peak_sockets[pid] = max(self.peak_sockets[pid], sockets)
            for pid, samples in self.cpu.items():  # the first and the latest
                with contextlib.suppress(OSError, IndexError, ValueError):
                    samples[1:] = [(time.monotonic(), cpu_seconds(pid))]
                    samples[:1] = samples[:1] or samples[1:]
            self.peak_rss_kb = max(self.peak_rss_kb, total)
            self.peak_time_wait = max(self.peak_time_wait, time_wait())

    def busy(self, pid: int) -> float:
        """The share of one core a process used while sampled."""
        samples = self.cpu.get(pid, [])
        if len(samples) < 2 or samples[1][0] <= samples[0][0]:
            return 0.0
        return (samples[1][1] - samples[0][1]) / (samples[1][0] - samples[0][0])

    def stop(self) -> Sampler:
        self.done.set()
        self.join()
        return self


def _is_socket(pid: int, fd: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    except OSError:
        return False


def rss_kb(pid: int) -> int:
    """Resident memory of a process in KB (0 once it has exited)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def time_wait() -> int:
    tcp = Path("/proc/net/sockstat").read_text().split("\n")[1].split()
    return int(tcp[tcp.index("tw") + 1])


def target_pids() -> list[int]:
    """The demo target this benchmark started (a child process running esr.demo.target)."""
    return [p.pid for p in psutil.Process().children()
            if "esr.demo.target" in " ".join(p.cmdline())]


def served(target: str, run_id: str) -> int:
    try:
        with urllib.request.urlopen(f"{target}/admin/stats?run={run_id}", timeout=30) as answer:
            return json.loads(answer.read())["requests"]["total"]
    except OSError:  # a target too busy to answer has not served them all yet
        return 0


# ---- bare Locust ---------------------------------------------------------------------------


def bare_peak_rss(work: Path, target: str, users: int, workers: int) -> int:
    """Peak RSS (KB) of a bare Locust master and workers once every user made its request."""
    run_id = f"bare-{users}-{time.monotonic_ns()}"
    locustfile = work / f"{run_id}.py"
    locustfile.write_text(BARE_LOCUSTFILE % {"run": run_id})
    port = _free_port()
    limit_s = 60 + users // 200  # a bound: the target serves ~1,000 requests/s at best
    common = [sys.executable, "-m", "locust", "-f", str(locustfile), "--loglevel", "WARNING"]
    master = subprocess.Popen(
        [*common, "--master", "--headless", "--host", target, "-u", str(users),
         "-r", "2000", "-t", f"{limit_s}s", "--expect-workers", str(workers),
         "--master-bind-port", str(port), "--only-summary"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    others = [subprocess.Popen([*common, "--worker", "--master-port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
              for _ in range(workers)]
    sampler = Sampler([master.pid] + [w.pid for w in others])
    sampler.start()
    try:
        deadline = time.monotonic() + limit_s
        while served(target, run_id) < users and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2 * SAMPLE_EVERY_S)  # idle now: a sample or two more
    finally:
        sampler.stop()
        master.send_signal(signal.SIGTERM)
        for process in (master, *others):
            end_process(process, grace_s=15)
    return sampler.peak_rss_kb


# ---- one process each: memory per citizen alone (--one-process) -----------------------------

# A locustfile that measures the process it runs in: ESR's classes (as esr/engine/locustfile.py
# builds them from ESR_SCENARIO) or a bare FastHttpUser, and a greenlet that notes RSS at the
# test start and once every user has made its first request, then stops the test.
MEASURED_LOCUSTFILE = """
import gc, json, os, time, tracemalloc

import gevent
from locust import FastHttpUser, between, events, task

N, OUT = int(os.environ["CROWD_USERS"]), os.environ["CROWD_OUT"]
if os.environ.get("ESR_SCENARIO"):
    from locust import LoadTestShape, User

    from esr.engine import locustfile as esr_locustfile

    globals().update({name: value for name, value in vars(esr_locustfile).items()
                      if isinstance(value, type) and issubclass(value, (User, LoadTestShape))})
else:
    BODY = {"citizen_id": "c-1", "name": "Ada Doe", "age": 40, "income": 30000.0,
            "veteran": False, "household_size": 2}

    class Bare(FastHttpUser):
        wait_time = between(%(low)r, %(high)r)

        @task
        def apply(self):
            self.client.post("/apply", json=BODY, headers={"X-ESR-Synthetic": "bare"})

requests = [0]
events.request.add_listener(lambda **_: requests.__setitem__(0, requests[0] + 1))


def rss_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def measure(environment, noted):
    runner = environment.runner
    while runner.user_count < N or requests[0] < N:
        gevent.sleep(0.2)
    gevent.sleep(2)  # the last answers read, every citizen thinking
    noted["plateau_kb"] = rss_kb()
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(OUT + ".plateau")
    with open(OUT, "w") as out:
        json.dump(noted, out)
    esr = getattr(environment, "esr", None)
    if esr is not None:  # ESR's graceful stop, as at a run's end or on Ctrl-C
        esr.finish()
        esr.wait_for_finish()
    runner.quit()


@events.test_start.add_listener
def noted_at_start(environment, **_):  # after ESR's own listener (gc.collect, gc.freeze)
    gc.collect()
    noted = {"start_kb": rss_kb()}
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(OUT + ".start")
    gevent.spawn(measure, environment, noted)
"""
TWO_STEP_JOURNEY = """
journey:
  - name: /apply
    request: POST /apply?fee=later
    json: {citizen_id: "{{ citizen.citizen_id }}", name: "{{ citizen.name }}",
           age: "{{ citizen.age }}", income: "{{ citizen.income }}",
           veteran: "{{ citizen.veteran }}", household_size: "{{ citizen.household_size }}"}
    extract: {application: json.application_id}
  - name: /status
    request: GET /status/{{ vars.application }}
"""
ONE_PROCESS_SCENARIO = """
esr: 1
scenario: crowd benchmark, one process
seed: 7
citizens:
  - {name: applicants, template: low_income, count: %(citizens)d,
     behavior: {think_time: "%(think)s"}}
load_profile: {stages: [{duration: 1h, citizens: %(citizens)d, spawn_rate: %(rate)d}]}
"""


def measured(work: Path, target: str, kind: str, users: int, think: str, rate: int,
             journey: str, traces: bool) -> dict:
    """One Locust process (ESR's citizens or bare users) measuring itself: RSS (KB) at the test
    start, at the plateau, and the peak until it ended; with traces, tracemalloc snapshots."""
    span = parse_span(think)
    locustfile = work / "measured.py"
    locustfile.write_text(MEASURED_LOCUSTFILE % {"low": span.low, "high": span.high})
    out = work / f"{kind}.json"
    env = {**os.environ, "CROWD_USERS": str(users), "CROWD_OUT": str(out)}
    env.pop("ESR_SCENARIO", None)
    if kind == "esr":
        scenario = work / "one-process.yml"
        scenario.write_text(ONE_PROCESS_SCENARIO % {"citizens": users, "think": think,
                                                    "rate": rate}
                            + (TWO_STEP_JOURNEY if journey == "two-step" else ""))
        env["ESR_SCENARIO"] = str(scenario)
    process = subprocess.Popen(
        [sys.executable, *(["-X", "tracemalloc=1"] if traces else []), "-m", "locust", "-f",
         str(locustfile), "--headless", "--host", target, "-u", str(users), "-r", str(rate),
         "--loglevel", "WARNING", "--only-summary"], cwd=work, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = Sampler([process.pid], every_s=0.1)
    sampler.start()
    try:
        _, errors = process.communicate(timeout=120 + users / rate * 2)
    finally:
        sampler.stop()
        end_process(process, grace_s=15)
    if not out.is_file():
        raise SystemExit(f"the {kind} process measured nothing:\n{errors[-3000:]}")
    return {**json.loads(out.read_text()), "peak_kb": sampler.peak_rss_kb, "out": str(out)}


def top_differences(esr: dict, bare: dict, users: int, count: int) -> list[str]:
    """The allocation sites (file:line) whose memory per citizen differs most between ESR and
    bare Locust, from test start to plateau (tracemalloc, the innermost frame)."""
    import tracemalloc

    def per_site(figures: dict) -> Counter:
        start = tracemalloc.Snapshot.load(figures["out"] + ".start")
        plateau = tracemalloc.Snapshot.load(figures["out"] + ".plateau")
        sites: Counter = Counter()
        for stat in plateau.compare_to(start, "lineno"):
            frame = stat.traceback[0]
            sites[f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"] += \
                stat.size_diff / 1024 / users
        return sites

    ours, theirs = per_site(esr), per_site(bare)
    sites = sorted(set(ours) | set(theirs), key=lambda k: -abs(ours[k] - theirs[k]))
    lines = [f"{'ESR':>7} {'bare':>7} {'ESR-bare':>8}  KB per citizen, traced (tracemalloc)",
             f"{sum(ours.values()):7.2f} {sum(theirs.values()):7.2f} "
             f"{sum(ours.values()) - sum(theirs.values()):8.2f}  all"]
    lines += [f"{ours[k]:7.3f} {theirs[k]:7.3f} {ours[k] - theirs[k]:8.3f}  {k}"
              for k in sites[:count]]
    return lines


def one_process(args) -> None:
    if args.citizens > BARE_USERS_MAX:
        raise SystemExit(f"--one-process: at most {BARE_USERS_MAX:,} citizens (bare users each "
                         "keep a connection)")
    with tempfile.TemporaryDirectory() as temp, \
            demo_target("--capacity", str(args.target_capacity)) as target:
        work = Path(temp)
        run = (args.citizens, args.think, args.spawn_rate, args.journey)
        bare = measured(work, target, "bare", *run, traces=False)
        esr = measured(work, target, "esr", *run, traces=False)
        traced = []
        if args.traces:
            traced = top_differences(measured(work, target, "esr", *run, traces=True),
                                     measured(work, target, "bare", *run, traces=True),
                                     args.citizens, args.traces)

    def per_citizen(figures: dict, key: str) -> float:
        return (figures[key] - figures["start_kb"]) / args.citizens

    print(f"one process each: {args.citizens:,} citizens thinking {args.think}, spawned at "
          f"{args.spawn_rate}/s, {args.journey} journey, against the demo target (capacity "
          f"{args.target_capacity}); KB per citizen = (RSS - RSS at the test start) / citizens")
    print(f"{'':16}{'plateau':>10}{'peak (with the stop)':>24}")
    for name, figures in (("ESR", esr), ("bare Locust", bare)):
        print(f"{name:16}{per_citizen(figures, 'plateau_kb'):10.1f}"
              f"{per_citizen(figures, 'peak_kb'):24.1f}    (RSS at test start "
              f"{figures['start_kb'] / 1024:,.0f} MB)")
    plateau = per_citizen(esr, "plateau_kb") / per_citizen(bare, "plateau_kb")
    peak = per_citizen(esr, "peak_kb") / per_citizen(bare, "peak_kb")
    print(f"{'ratio ESR / bare':16}{plateau:10.2f}{peak:24.2f}    "
          f"(goal <= 1.1 at plateau: {'met' if plateau <= 1.1 else 'NOT met'})")
    for line in traced:
        print(line)


# ---- ESR --------------------------------------------------------------------------------------


def esr_run(work: Path, target: str, citizens: int, workers: int, think: str, ramp: int,
            seconds: int) -> tuple[Sampler, Launch, dict]:
    """One `esr-locust run`, sampled; returns the sampler, the launch and its summary."""
    scenario = work / f"crowd-{citizens}.yml"
    scenario.write_text(SCENARIO % {"citizens": citizens, "think": think, "ramp": ramp,
                                    "sustain": max(1, seconds - ramp)})
    launch = Launch.prepare(RunSettings(scenario=scenario, host=target, workers=workers,
                                        run_dir=work / f"run-{citizens}"))
    launch.start()
    sampler = Sampler([p.pid for p in launch.processes], target_pids())
    sampler.start()
    try:
        result = launch.wait()
    finally:
        sampler.stop()
    return sampler, launch, result.summary


def history(run_dir: Path) -> tuple[float, list[dict]]:
    """The test start (epoch seconds) and Locust's aggregated per-second rows."""
    with open(run_dir / EVENTS) as events:
        start = next(json.loads(line)["at"] for line in events if '"test_start"' in line)
    with open(run_dir / f"{LOCUST_PREFIX}_stats_history.csv") as table:
        rows = [r for r in csv.DictReader(table) if r["Name"] == "Aggregated"]
    return dt.datetime.fromisoformat(start).timestamp(), rows


def spawned(run_dir: Path, citizens: int, seconds: int) -> tuple[float | None, int, float]:
    """From the test start until Locust counted every citizen active (1 s resolution); the
    fewest citizens active after that; requests/s from then to the end of the plateau."""
    started, rows = history(run_dir)
    full = next((i for i, r in enumerate(rows) if int(r["User Count"]) >= citizens), None)
    if full is None:
        return None, 0, 0.0
    plateau = [r for r in rows[full:] if int(r["Timestamp"]) <= started + seconds]
    first, last = plateau[0], plateau[-1]
    elapsed = int(last["Timestamp"]) - int(first["Timestamp"])
    count = int(last["Total Request Count"]) - int(first["Total Request Count"])
    return (max(0.0, int(first["Timestamp"]) - started),
            min(int(r["User Count"]) for r in plateau), count / elapsed if elapsed else 0.0)


def spawn_line(spawn: float | None, fewest: int, citizens: int, ramp: int) -> str:
    """What spawned() found, as the benchmarks print it."""
    return (f"spawn: every citizen active after "
            f"{f'{spawn:.0f} s' if spawn is not None else 'NEVER'} (ramp asked: {ramp} s)"
            + (f"; later as few as {fewest:,} active" if spawn is not None and fewest < citizens
               else ""))


def failures(run_dir: Path) -> Counter:
    kinds: Counter = Counter()
    with open(run_dir / f"{LOCUST_PREFIX}_failures.csv") as table:
        for row in csv.DictReader(table):
            inner = re.search(r"\('(.*)'\)", row["Error"])
            kinds[inner.group(1) if inner else row["Error"]] += int(row["Occurrences"])
    return kinds


def silent_master_stops(run_dir: Path) -> int:
    """How many workers stopped their citizens for want of news from the master."""
    return sum(log.read_text(errors="replace").count("no report of this worker acknowledged")
               for log in run_dir.glob("worker-*.log"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _sysctl(name: str) -> str:
    try:
        return Path("/proc/sys/" + name.replace(".", "/")).read_text().strip()
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.dedent(__doc__).splitlines()[0])
    parser.add_argument("--citizens", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--think", default="60s..120s",
                        help="the citizens' think time (default: a page of a long form)")
    parser.add_argument("--seconds", type=int, default=150, help="the whole run, ramp included")
    parser.add_argument("--ramp", type=int, default=90, help="seconds to bring every citizen in")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="copy the ESR run directory here (logs, CSVs) to look into")
    parser.add_argument("--target-capacity", type=int, default=8,
                        help="applications the demo target serves at once")
    parser.add_argument("--one-process", action="store_true",
                        help="memory per citizen alone: ESR and bare Locust, one process each "
                             "(default --citizens 4000)")
    parser.add_argument("--spawn-rate", type=int, default=400,
                        help="--one-process: citizens started a second")
    parser.add_argument("--journey", choices=("one-step", "two-step"), default="one-step",
                        help="--one-process: the default journey (POST /apply), or POST "
                             "/apply then GET /status (citizens think mid-journey)")
    parser.add_argument("--traces", type=int, default=0, metavar="K",
                        help="--one-process: also the K allocation sites that differ most")
    args = parser.parse_args()
    if args.one_process:
        if "--citizens" not in sys.argv:
            args.citizens = 4000
        return one_process(args)
    bare_users = min(args.citizens, BARE_USERS_MAX)
    with tempfile.TemporaryDirectory() as temp, \
            demo_target("--capacity", str(args.target_capacity)) as target:
        work = Path(temp)
        bare_base = bare_peak_rss(work, target, args.workers, args.workers)
        bare_full = bare_peak_rss(work, target, bare_users, args.workers)
        esr_base = esr_run(work, target, args.workers, args.workers, args.think, 1, 6)[0]
        sampler, launch, summary = esr_run(work, target, args.citizens, args.workers,
                                           args.think, args.ramp, args.seconds)
        run_dir = launch.run_dir
        spawn, fewest, rps = spawned(run_dir, args.citizens, args.seconds)
        kinds = failures(run_dir)
        silenced = silent_master_stops(run_dir)
        if args.keep:
            shutil.copytree(run_dir, args.keep, dirs_exist_ok=True)
    bare_kb = (bare_full - bare_base) / (bare_users - args.workers)
    esr_kb = (sampler.peak_rss_kb - esr_base.peak_rss_kb) / (args.citizens - args.workers)
    ratio = esr_kb / bare_kb
    workers = launch.processes[1:]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    requests = summary["requests"]
    error_rate = requests["failures"] / requests["total"] if requests["total"] else 0.0

    print(f"machine: {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB; "
          f"open files per process {soft:,} (hard {hard:,}); {ephemeral_ports():,} ephemeral "
          f"ports; net.ipv4.tcp_tw_reuse={_sysctl('net.ipv4.tcp_tw_reuse')}")
    print(f"run: {args.citizens:,} citizens thinking {args.think}, ramp {args.ramp}s, "
          f"{args.seconds}s in all, a master and {args.workers} workers, against the demo "
          f"target (capacity {args.target_capacity})")
    print(spawn_line(spawn, fewest, args.citizens, args.ramp))
    print(f"memory per citizen: ESR {esr_kb:.1f} KB (peak RSS {sampler.peak_rss_kb / 1024:,.0f} "
          f"MB, {esr_base.peak_rss_kb / 1024:,.0f} MB with {args.workers} citizens); bare "
          f"FastHttpUser {bare_kb:.1f} KB per idle user ({bare_users:,} users: "
          f"{bare_full / 1024:,.0f} MB, {bare_base / 1024:,.0f} MB with {args.workers})")
    print(f"ratio ESR / bare:    {ratio:.2f}    "
          f"(goal <= 1.2: {'met' if ratio <= 1.2 else 'NOT met'})")
    print(f"requests: {rps:,.0f} req/s once every citizen was active ({requests['rps']:,.0f} "
          f"over the run), p95 {requests['p95_ms']:,.0f} ms, errors {error_rate:.1%} of "
          f"{requests['total']:,}" + (": " + ", ".join(f"{k} {n:,}" for k, n in
                                                    kinds.most_common(4)) if kinds else ""))
    sockets = ", ".join(f"{sampler.peak_sockets[w.pid]:,}" for w in workers)
    files = ", ".join(f"{sampler.peak_files[w.pid]:,}" for w in workers)
    print(f"sockets: peak open per worker {sockets} (open files {files}; limit {soft:,}); "
          f"TIME_WAIT peak {sampler.peak_time_wait:,}; EMFILE {kinds['EMFILE']}, "
          f"EADDRNOTAVAIL {kinds['EADDRNOTAVAIL']}")
    target_cpu = sum(sampler.busy(pid) for pid in sampler.cpu if pid not in sampler.pids)
    print(f"CPU (share of one core): master {sampler.busy(launch.lead.pid):.0%}, workers "
          + ", ".join(f"{sampler.busy(w.pid):.0%}" for w in workers) + f", target {target_cpu:.0%}")
    if silenced:
        print(f"note: {silenced} time(s) a worker stopped its citizens, not hearing from the "
              "master (its reports unacknowledged: esr/engine/lost_workers.py silence_limit_s)")
    live = read_json(run_dir / LIVE) if (run_dir / LIVE).is_file() else {}
    if live.get("workers") not in (None, args.workers):
        print(f"note: {live.get('workers')} workers at the end")


if __name__ == "__main__":
    main()
