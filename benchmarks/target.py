"""The demo target's throughput: POST /apply over keep-alive connections, for a bounded time.

Starts the target (`python -m esr.demo.target`, or `--target-file FILE`: another version of the
module, e.g. `git show REV:esr/demo/target.py > /tmp/old_target.py`, to compare two versions on
one machine in one session) and drives it from this process with a small asyncio HTTP/1.1
client: C citizens, each sending the next application as soon as the last is answered.
On two or more CPUs the target is pinned to CPU 0 and the client to CPU 1, so the client's
cost does not count against the target. Three loads, each for S seconds after a 1 s warm-up:

- the demo's model: capacity 8, 5 ms each, so at most 1,600 applications/s by design, over
  keep-alive connections (citizens who think less than 5 s keep theirs, esr/engine/connections.py);
- the same with a new connection for each request, as citizens who think longer dial again;
- the server's own ceiling: capacity 10,000, service time ~0, keep-alive, so every request
  is the framework's and the parser's work.

    .venv/bin/python benchmarks/target.py [--seconds 10] [--citizens 50] [--target-file FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from esr.launcher import end_process

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"esr target listening on http://127\.0\.0\.1:(\d+)")
MODEL = ("--capacity", "8", "--service-ms", "5")
LOADS = {  # name: (target arguments, a new connection for each request)
    "model (capacity 8, 5 ms), keep-alive": (MODEL, False),
    "model, a new connection per request": (MODEL, True),
    "ceiling (capacity 10000, ~0 ms), keep-alive": (
        ("--capacity", "10000", "--service-ms", "0.000001"), False),
}
BODY = json.dumps({"citizen_id": "bench-7", "name": "Pat Doe", "age": 40, "income": 30_000,
                   "veteran": False, "household_size": 2}).encode()
REQUEST = (b"POST /apply HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: esr-bench\r\n"
           b"X-ESR-Synthetic: bench\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
WARM_UP_S = 1.0


@contextlib.contextmanager
def target(target_file: str | None, arguments: tuple[str, ...]) -> Iterator[int]:
    """A target process on a free port, pinned to CPU 0; yields its port, ends it by its PID."""
    module = [target_file] if target_file else ["-m", "esr.demo.target"]
    process = subprocess.Popen([sys.executable, *module, "--port", "0", *arguments], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True, preexec_fn=pin(0))
    try:
        line = process.stdout.readline()
        ready = READY.match(line)
        if not ready:
            raise SystemExit(f"the target did not start: {line!r}")
        yield int(ready.group(1))
    finally:
        end_process(process, grace_s=10)


def pin(cpu: int):
    """A preexec function pinning a child to `cpu`, or None on a one-CPU machine."""
    if len(os.sched_getaffinity(0)) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


async def citizen(port: int, fresh: bool, until: float, measure_from: float,
                  latencies: list[float], statuses: Counter) -> None:
    """Applications one after another until `until`, on one connection or each on a new one."""
    connection = None
    try:
        while (started := time.perf_counter()) < until:
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = connection
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            await reader.readexactly(length)
            if fresh:
                writer.close()
                connection = None
            if started >= measure_from:
                latencies.append(time.perf_counter() - started)
                statuses[head[9:12].decode()] += 1
    finally:
        if connection is not None:
            connection[1].close()


async def drive(port: int, fresh: bool, citizens: int,
                seconds: float) -> tuple[list[float], Counter]:
    start = time.perf_counter()
    latencies: list[float] = []
    statuses: Counter = Counter()
    await asyncio.gather(*(citizen(port, fresh, start + WARM_UP_S + seconds, start + WARM_UP_S,
                                   latencies, statuses) for _ in range(citizens)))
    return latencies, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--citizens", type=int, default=50, help="clients at once")
    parser.add_argument("--target-file",
                        help="run this file as the target instead of esr.demo.target")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {1})
    print(f"target: {args.target_file or 'esr.demo.target'}; {args.citizens} citizens at once, "
          f"{args.seconds:g} s per load")
    for name, (arguments, fresh) in LOADS.items():
        with target(args.target_file, arguments) as port:
            cpu_before = time.process_time()
            latencies, statuses = asyncio.run(drive(port, fresh, args.citizens, args.seconds))
            client_cpu = (time.process_time() - cpu_before) / (WARM_UP_S + args.seconds)
        cuts = statistics.quantiles(latencies, n=100)
        print(f"  {name}: {len(latencies) / args.seconds:,.0f} requests/s, "
              f"p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms, "
              f"statuses {dict(statuses)}, client CPU {client_cpu:.0%}")


if __name__ == "__main__":
    main()
