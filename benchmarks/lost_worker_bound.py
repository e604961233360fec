"""How tight is the bound on what a lost worker took with it? Runs the compose project on a LAN
of network namespaces (tests/test_multihost.py's), loses worker-2 in each of three ways, N
times each, and prints per run the requests the target received from it that no report
counted (real), summary.json's bound, and their ratio; then the worst ratio per way.

    python benchmarks/lost_worker_bound.py [--runs 10] [--how killed cut cut_from_master]
                                           [--phase test|random|SECONDS]

The ways: `killed` (SIGKILL; its host lives), `cut` (its host's cable pulled: no master, no
target), `cut_from_master` (master and worker lose each other; the target is still reached).
Each is lost some time after one of its reports to the master (seen as a burst of bytes on
its connection): `test` uses the tests' moments (PHASE_S), `random` a moment drawn evenly
over the interval, a number that many seconds. Needs root (namespaces) and docker-compose.
Figures only: nothing here asserts a time or a ratio.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hosts import virtual_lan  # noqa: E402
from test_multihost import (  # noqa: E402
    LOSSES,
    PHASE_S,
    WORKER_REPORT_S,
    compose_services,
    hosts_of,
    lose_a_worker,
    start_order,
)

LATEST_SAFE_PHASE_S = 2.8  # later, the next report may go first (the interval is 3 s)


def phase_for(how: str, phase: str, draw: random.Random) -> float:
    if phase == "test":
        return PHASE_S[how]
    if phase == "random":
        return draw.uniform(0.0, LATEST_SAFE_PHASE_S)
    return float(phase)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per way (default 10)")
    parser.add_argument("--how", nargs="+", choices=LOSSES, default=list(LOSSES))
    parser.add_argument("--phase", default="test",
                        help="test | random | seconds after a report (default: test)")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    if shutil.which("docker-compose") is None:
        print("docker-compose is not installed (scripts/test installs it)", file=sys.stderr)
        return 2
    services = compose_services()
    hosts = [host for name in start_order(services) for host in hosts_of(name)]
    draw = random.Random(args.seed)
    worst: dict[str, float] = {}
    print(f"worker report interval {WORKER_REPORT_S} s; phase: {args.phase}")
    for how in args.how:
        for run in range(1, args.runs + 1):
            folder = Path(tempfile.mkdtemp(prefix=f"esr-lost-{how}-"))
            began = time.monotonic()
            try:
                with virtual_lan(hosts) as lan:
                    loss = lose_a_worker(lan, services, folder, how,
                                         phase_s=phase_for(how, args.phase, draw))
            except (AssertionError, RuntimeError, OSError) as error:
                print(f"{how:<16} run {run}: failed: {str(error)[:400]}", flush=True)
                continue
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            worst[how] = max(worst.get(how, 0.0), loss.ratio)
            held = "holds" if loss.real <= loss.bound else "DOES NOT HOLD"
            print(f"run {run:2}: {loss}; bound {held}; "
                  f"others exact: {loss.unreported_all == loss.real} "
                  f"({time.monotonic() - began:.0f} s)", flush=True)
    print("worst ratio (bound / real): " + ", ".join(
        f"{how} {ratio:.2f}" for how, ratio in worst.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
