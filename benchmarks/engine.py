"""ESR citizens against bare Locust: requests per second per core, and memory per citizen.

Both send POST /apply with a JSON body to the same fast target (nginx answering
from memory, so the load generator is what is measured), each from one Locust
process. Throughput is counted per CPU-second the Locust process itself used
(requests between two moments of the steady state / its CPU time between them).

The two processes run at the same time, pinned to the same core (nginx to another):
whatever the machine does meanwhile (other tenants, frequency changes) it does to
both, so their ratio holds still where absolute figures drift by tens of percent
between moments on shared machines (alternating rounds gave ratios of 0.71 to 0.98
for the same code here; simultaneous ones mostly stay within a few hundredths, now and
then one strays by a tenth: the median of the rounds is the figure). Sharing a
core costs the process with the larger working set a little more cache: if anything,
the ratio is conservative for ESR. Goal (issue 3): ESR at 0.9x bare Locust or better.

Bare Locust runs as a Locust user is usually written: json= (Python's json module) and
its session's cookie jar. ESR encodes with orjson and gives a one-request journey no
cookie jar (each citizen is a new person): both are ESR's own choices, and part of how
it keeps up while doing a citizen's bookkeeping on every request.

    apt-get install -y nginx-light      # once
    .venv/bin/python benchmarks/engine.py [--seconds 10] [--users 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STARTUP_S = 3.5  # Locust's imports (about 1.5 s) and the spawn are over by then
BARE_LOCUSTFILE = '''
from random import getrandbits

from locust import FastHttpUser, constant, task

# One ESR citizen's body and headers: the same request ESR sends, W3C trace context included
# (a trace id per user, a span id per request, as ESR's journeys send them).
BODY = %(body)s
HEADERS = {"X-ESR-Synthetic": "benchmark", "X-ESR-Citizen": BODY["citizen_id"],
           "User-Agent": "esr-locust/benchmark",
           "baggage": "esr.synthetic=true,esr.run=benchmark,esr.cohort=30-44"}


class Bare(FastHttpUser):
    wait_time = constant(%(think)s)

    def on_start(self):
        self.trace_id = f"{getrandbits(128) or 1:032x}"

    @task
    def apply(self):
        headers = {**HEADERS, "traceparent": f"00-{self.trace_id}-{getrandbits(64) or 1:016x}-01"}
        self.client.post("/apply", json=BODY, headers=headers)
'''
ESR_SCENARIO = '''
scenario: benchmark
citizens:
  template: low_income
  count: %(users)d
  behavior: {think_time: %(think)ss, retries: 0, patience: 60s}
load_profile:  # spawned at the same rate as the bare users
  stages: [{duration: %(seconds)ds, citizens: %(users)d, spawn_rate: %(users)d}]
'''
NGINX_CONF = '''
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %(dir)s/body;
  server {
    listen 127.0.0.1:%(port)d;
    location / { default_type application/json; return 200 '{"status": "approved"}'; }
  }
}
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_nginx(work: Path, core: int | None = None) -> tuple[subprocess.Popen, str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        sys.exit(f"benchmarks/{Path(sys.argv[0]).name} needs nginx as a fast target (none on "
                 "the PATH nor at /usr/sbin/nginx): apt-get install -y nginx-light")
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF % {"dir": work, "port": port})
    process = subprocess.Popen([nginx, "-c", str(conf), "-p", str(work), "-g", "daemon off;"],
                               preexec_fn=pinned(core))
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.terminate()
    sys.exit("nginx did not start")


def pinned(core: int | None):
    """For Popen: run the child on one core (None: wherever the system likes)."""
    return None if core is None else lambda: os.sched_setaffinity(0, {core})


def cores() -> tuple[int | None, int | None]:
    """The core the Locust processes share, and nginx's: apart when there are two."""
    available = sorted(os.sched_getaffinity(0))
    return (available[0], available[-1]) if len(available) > 1 else (None, None)


def locust(arguments: list[str], env: dict, sample_at: float | None = None,
           cpu_window: tuple[float, float] | None = None,
           core: int | None = None) -> tuple[int | None, list]:
    """Run one Locust process to its end. Returns its RSS in KB sampled at `sample_at`
    seconds, and (wall time, CPU seconds used) at both ends of `cpu_window`."""
    process = subprocess.Popen([sys.executable, "-m", "locust", *arguments], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=pinned(core))
    started, rss, cpu = time.monotonic(), None, []
    for moment in sorted(m for m in (sample_at, *(cpu_window or ())) if m is not None):
        time.sleep(max(0.0, started + moment - time.monotonic()))
        if moment == sample_at:
            status = Path(f"/proc/{process.pid}/status").read_text()
            rss = int(next(line.split()[1] for line in status.splitlines()
                           if line.startswith("VmRSS:")))
        if cpu_window and moment in cpu_window:
            cpu.append((time.time(), cpu_seconds(process.pid)))
    process.wait(timeout=600)
    return rss, cpu


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(csv_prefix: Path, cpu: list) -> tuple[float, float]:
    """Steady state: (requests per CPU-second of the Locust process, requests per second)."""
    with open(f"{csv_prefix}_stats_history.csv") as history:
        rows = [(float(r["Timestamp"]), float(r["Total Request Count"]))
                for r in csv.DictReader(history) if r["Name"] == "Aggregated"]
    (t0, cpu0), (t1, cpu1) = cpu
    requests = requests_at(rows, t1) - requests_at(rows, t0)
    return requests / (cpu1 - cpu0), requests / (t1 - t0)


def requests_at(rows: list[tuple[float, float]], moment: float) -> float:
    """Locust's cumulative request count at a moment, between its once-a-second rows."""
    before = max((row for row in rows if row[0] <= moment), default=rows[0])
    after = min((row for row in rows if row[0] > moment), default=rows[-1])
    if after[0] == before[0]:
        return before[1]
    return before[1] + (after[1] - before[1]) * (moment - before[0]) / (after[0] - before[0])


def citizen_body(work: Path) -> dict:
    from esr.population.citizens import CitizenFactory
    from esr.scenario.reader import load_scenario
    from esr.wire import DEFAULT_BODY_FIELDS

    scenario = work / "body.yml"
    scenario.write_text(ESR_SCENARIO % {"users": 1, "think": 0, "seconds": 1})
    citizen = CitizenFactory(load_scenario(scenario), 0).citizen(0)
    return {key: citizen[key] for key in DEFAULT_BODY_FIELDS}


def steady(seconds: int) -> tuple[float, float]:
    """The moments, in seconds after the process starts, between which a run is steady:
    after imports and spawning, before the stop."""
    return (STARTUP_S, float(seconds))


def run_bare(work: Path, host: str, users: int, seconds: int, think: float,
             sample_at: float | None = None,
             core: int | None = None) -> tuple[tuple[float, float] | None, int | None]:
    locustfile = work / "bare_locustfile.py"
    locustfile.write_text(BARE_LOCUSTFILE % {"think": think, "body": repr(citizen_body(work))})
    prefix = work / f"bare-{time.monotonic_ns()}"
    window = None if sample_at else steady(seconds)
    rss, cpu = locust(["-f", str(locustfile), "--headless", "-u", str(users), "-r", str(users),
                       "-t", f"{seconds + 1}s", "--host", host, "--csv", str(prefix),
                       "--only-summary"], os.environ.copy(), sample_at, window, core)
    return (throughput(prefix, cpu) if window else None), rss


def run_esr(work: Path, host: str, users: int, seconds: int, think: float,
            sample_at: float | None = None,
            core: int | None = None) -> tuple[tuple[float, float] | None, int | None]:
    scenario = work / f"esr-{users}-{think}.yml"
    scenario.write_text(ESR_SCENARIO % {"users": users, "think": think, "seconds": seconds})
    run_dir = work / f"esr-run-{time.monotonic_ns()}"
    run_dir.mkdir()
    window = None if sample_at else steady(seconds)
    rss, cpu = locust(["-f", str(ROOT / "locustfiles" / "esr.py"), "--headless", "--host", host,
                       "--esr-run-dir", str(run_dir), "--esr-run-id", "benchmark",
                       "--csv", str(run_dir / "locust"), "--stop-timeout", "35",
                       "--only-summary"],
                      {**os.environ, "ESR_SCENARIO": str(scenario)}, sample_at, window, core)
    return (throughput(run_dir / "locust", cpu) if window else None), rss


def side_by_side(work: Path, host: str, users: int, seconds: int,
                 core: int | None) -> tuple[tuple[float, float], tuple[float, float]]:
    """One round: bare Locust and ESR at the same time on the same core."""
    results = {}

    def measure(name, runner):
        results[name] = runner(work, host, users, seconds, 0, core=core)[0]

    threads = [threading.Thread(target=measure, args=(name, runner))
               for name, runner in (("bare", run_bare), ("esr", run_esr))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results["bare"], results["esr"]


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.dedent(__doc__).splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="per round; at least 6")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-citizens", type=int, default=4000,
                        help="citizens spawned for the memory figure")
    args = parser.parse_args()
    locust_core, nginx_core = cores()
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        nginx, host = start_nginx(work, nginx_core)
        try:
            rounds = [side_by_side(work, host, args.users, args.seconds, locust_core)
                      for _ in range(args.rounds)]
            memory = {}
            for name, runner in (("bare", run_bare), ("esr", run_esr)):
                # Citizens that acted once and now think for a long time: their footprint.
                small = runner(work, host, 100, 6, 60, sample_at=5)[1]
                large = runner(work, host, args.idle_citizens, 6, 60, sample_at=5)[1]
                memory[name] = (large - small) / (args.idle_citizens - 100)
        finally:
            nginx.terminate()
            nginx.wait()
    print(f"target: nginx on loopback; bare Locust and ESR side by side, one Locust process "
          f"each on core {locust_core}, {args.users} users, no think time, "
          f"{args.seconds}s x {args.rounds} rounds")
    for name, index in (("bare FastHttpUser", 0), ("ESR citizens", 1)):
        per_cpu = [r[index][0] for r in rounds]
        print(f"{name + ':':<20} {statistics.median(per_cpu):>9,.0f} req per CPU-second "
              f"(rounds: {', '.join(f'{x:,.0f}' for x in per_cpu)})")
    print("(bare: Locust's json= and cookie jar; ESR: orjson, no jar for one-request journeys)")
    ratios = [esr[0] / bare[0] for bare, esr in rounds]
    ratio = statistics.median(ratios)
    print(f"ratio ESR / bare:    {ratio:>9.2f}    per CPU-second, median of rounds "
          f"({', '.join(f'{r:.3f}' for r in ratios)}); goal >= 0.90: "
          f"{'met' if ratio >= 0.9 else 'NOT met'}")
    ratio = memory["esr"] / memory["bare"]
    print(f"memory per idle user: bare {memory['bare']:.1f} KB, ESR citizen "
          f"{memory['esr']:.1f} KB, ratio {ratio:.2f} (goal <= 1.2: "
          f"{'met' if ratio <= 1.2 else 'NOT met'})")


if __name__ == "__main__":
    main()
