"""100,000 citizens across a pool of standing workers, each worker a host of its own.

On a virtual LAN of network namespaces (tests/hosts.py: each host its own address, so its
own ephemeral ports and sockets): the demo target, a master (`esr-locust master --bind
0.0.0.0:5557`), and K standing workers (`esr-locust worker --master master:5557`, no
scenario), which serve two runs without a restart: a base run of one citizen per worker,
then N citizens (default 100,000) with realistic think times, as benchmarks/crowd.py.

Memory per citizen = (peak RSS of every ESR process, master and workers, during the big
run - the same during the base run) / N; bare Locust's (FastHttpUser, one request then
idle, as crowd.py measures it, in the same run on loopback) is the baseline. Also: the time
until every citizen was active, the sockets each worker held, and EMFILE failures.
Needs root (network namespaces). Absolute figures drift between runs on a shared machine:
read the ratio. Goal (issue 15): memory per citizen <= 1.1x bare Locust's, 0 EMFILE.

    .venv/bin/python benchmarks/pool.py [--citizens 100000] [--workers 4]
                                        [--think 60s..120s] [--seconds 180] [--ramp 120]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
from crowd import (
    BARE_USERS_MAX,
    SCENARIO,
    Sampler,
    bare_peak_rss,
    failures,
    spawn_line,
    spawned,
)

from esr.demo.process import demo_target
from esr.run_directory import SUMMARY, read_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hosts import virtual_lan  # noqa: E402  (the test suite's LAN of namespaces)

POOL_PORT, TARGET_PORT = 5557, 8080
ESR = [sys.executable, "-m", "esr.cli"]


def pool_run(lan, work: Path, name: str, citizens: int, think: str, ramp: int, seconds: int,
             workers: list[str]) -> tuple[Sampler, Path]:
    """One headless master run on the LAN, its ESR processes sampled (the standing workers'
    Locust processes once they have started them); its sampler and run directory."""
    scenario = work / f"{name}.yml"
    scenario.write_text(SCENARIO % {"citizens": citizens, "think": think, "ramp": ramp,
                                    "sustain": max(1, seconds - ramp)})
    run_dir = work / name
    master = lan["master"].start(
        [*ESR, "master", str(scenario), "--expect-workers", str(len(workers)), "--bind",
         f"0.0.0.0:{POOL_PORT}", "--host", f"http://target:{TARGET_PORT}", "--run-dir",
         str(run_dir)], cwd=work, env=dict(os.environ), stdout=work / f"{name}.out",
        stderr=work / f"{name}.err")
    supervisors = [lan[host].processes[0].pid for host in workers]
    deadline = time.monotonic() + 120
    while len(locust_workers(supervisors)) < len(workers):  # each starts its Locust worker
        assert master.poll() is None and time.monotonic() < deadline, \
            (work / f"{name}.err").read_text()[-2000:]
        time.sleep(0.2)
    pids = [master.pid, *descendants(master.pid), *locust_workers(supervisors)]
    sampler = Sampler(pids)
    sampler.start()
    try:
        master.wait(timeout=seconds + 240)
    finally:
        sampler.stop()
    return sampler, run_dir


def descendants(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def locust_workers(supervisors: list[int]) -> list[int]:
    """The Locust workers the standing workers run (the processes under `ip netns exec`)."""
    return [pid for supervisor in supervisors for pid in descendants(supervisor)
            if "locust" in " ".join(psutil.Process(pid).cmdline())]


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.dedent(__doc__).splitlines()[0])
    parser.add_argument("--citizens", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=4, help="standing worker hosts")
    parser.add_argument("--think", default="60s..120s")
    parser.add_argument("--seconds", type=int, default=180, help="the whole run, ramp included")
    parser.add_argument("--ramp", type=int, default=120)
    parser.add_argument("--target-capacity", type=int, default=16,
                        help="applications the demo target serves at once")
    args = parser.parse_args()
    hosts = [f"pool-{n}" for n in range(1, args.workers + 1)]
    bare_users = min(args.citizens, BARE_USERS_MAX)
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        with demo_target("--capacity", str(args.target_capacity)) as target:
            bare_base = bare_peak_rss(work, target, args.workers, args.workers)
            bare_full = bare_peak_rss(work, target, bare_users, args.workers)
        with virtual_lan(["target", "master", *hosts]) as lan:
            lan["target"].start([*ESR, "target", "--host", "0.0.0.0", "--port",
                                 str(TARGET_PORT), "--capacity", str(args.target_capacity)],
                                cwd=work, env=dict(os.environ), stdout=work / "target.out",
                                stderr=work / "target.err")
            for host in hosts:
                lan[host].start([*ESR, "worker", "--master", f"master:{POOL_PORT}"], cwd=work,
                                env=dict(os.environ), stdout=work / f"{host}.out",
                                stderr=work / f"{host}.err")
            base, _ = pool_run(lan, work, "base", args.workers, args.think, 1, 6, hosts)
            big, run_dir = pool_run(lan, work, "big", args.citizens, args.think, args.ramp,
                                    args.seconds, hosts)
            summary = read_json(run_dir / SUMMARY)
            spawn, fewest, rps = spawned(run_dir, args.citizens, args.seconds)
            kinds = failures(run_dir)
    bare_kb = (bare_full - bare_base) / (bare_users - args.workers)
    esr_kb = (big.peak_rss_kb - base.peak_rss_kb) / (args.citizens - args.workers)
    ratio = esr_kb / bare_kb
    requests = summary["requests"]
    print(f"run: {args.citizens:,} citizens thinking {args.think}, ramp {args.ramp}s, "
          f"{args.seconds}s in all; a master and {args.workers} standing workers, each a host "
          f"of its own, that served a base run first (demo target, capacity "
          f"{args.target_capacity})")
    print(spawn_line(spawn, fewest, args.citizens, args.ramp))
    print(f"memory per citizen: ESR {esr_kb:.1f} KB (peak RSS {big.peak_rss_kb / 1024:,.0f} MB, "
          f"{base.peak_rss_kb / 1024:,.0f} MB with {args.workers} citizens); bare FastHttpUser "
          f"{bare_kb:.1f} KB per idle user ({bare_users:,} users)")
    print(f"ratio ESR / bare:    {ratio:.2f}    "
          f"(goal <= 1.1: {'met' if ratio <= 1.1 else 'NOT met'})")
    print(f"requests: {rps:,.0f} req/s once every citizen was active, p95 "
          f"{requests['p95_ms']:,.0f} ms, {requests['failures']:,} failed of "
          f"{requests['total']:,}" + (": " + ", ".join(f"{k} {n:,}" for k, n in
                                                    kinds.most_common(4)) if kinds else ""))
    sockets = ", ".join(f"{big.peak_sockets[pid]:,}" for pid in big.peak_sockets)
    print(f"sockets: peak open per process {sockets}; EMFILE {kinds['EMFILE']}")
    held_back = summary["load_generator"]["findings"]
    if held_back:
        print("load generator: " + "; ".join(held_back))


if __name__ == "__main__":
    main()
