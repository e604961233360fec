"""Issue 14's goal on a bare event loop: gevent and geventhttpclient alone, no Locust, no ESR.

The goal asks ESR's open model to sustain 85% of the closed model's rate on one core with
arrival lateness p99 under 20 ms. This measures what the event loop itself allows, in one
process pinned to one core (nginx on the other): a closed loop (50 greenlets, each sending
its next request as soon as its last is answered) for --seconds, then arrivals at FRACTION of
the rate it just reached (a scheduler waking at least every millisecond hands each arrival to
an idle greenlet through a queue), then the closed loop again; per round: the requests a
second, the CPU a request (the open model's against the two closed runs around it) and the
arrivals' lateness p99.

    apt-get install -y nginx-light      # once
    .venv/bin/python benchmarks/bare_open_loop.py [--seconds 6] [--rounds 3] [--fractions 0.85 0.6]
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.queue import Queue  # noqa: E402
from geventhttpclient import URL, HTTPClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import cores, start_nginx  # noqa: E402 (the engine benchmark's helpers)

GREENLETS = 50
TICK_S = 0.001  # the shortest the scheduler sleeps, as ESR's (arrivals.py OFFER_TICK_S)


def closed(url: URL, seconds: float) -> tuple[float, float]:
    """Requests a second and CPU microseconds a request, GREENLETS flat out."""
    sent, end = [0], time.monotonic() + seconds

    def loop() -> None:
        client = HTTPClient.from_url(url, concurrency=1)
        while time.monotonic() < end:
            client.get(url.request_uri).read()
            sent[0] += 1

    cpu, began = time.process_time(), time.monotonic()
    gevent.joinall([gevent.spawn(loop) for _ in range(GREENLETS)])
    return sent[0] / (time.monotonic() - began), (time.process_time() - cpu) / sent[0] * 1e6


def open_model(url: URL, seconds: float, rate: float) -> tuple[float, float, float]:
    """Requests a second, CPU microseconds a request and lateness p99 (ms), arrivals evenly
    spaced at `rate`, each taken by an idle greenlet."""
    due_times: Queue = Queue()
    sent, late = [0], []

    def take() -> None:
        client = HTTPClient.from_url(url, concurrency=1)
        while (due := due_times.get()) is not None:
            late.append(time.monotonic() - due)
            client.get(url.request_uri).read()
            sent[0] += 1

    takers = [gevent.spawn(take) for _ in range(GREENLETS)]
    cpu, began = time.process_time(), time.monotonic()
    for k in range(int(seconds * rate)):
        due = began + k / rate
        if (wait := due - time.monotonic()) > 0:
            gevent.sleep(max(wait, TICK_S))
        due_times.put(due)
    for _ in takers:
        due_times.put(None)
    gevent.joinall(takers)
    late.sort()
    return (sent[0] / (time.monotonic() - began), (time.process_time() - cpu) / sent[0] * 1e6,
            late[int(len(late) * 0.99)] * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.85, 0.6])
    args = parser.parse_args()
    load_core, nginx_core = cores()
    with tempfile.TemporaryDirectory() as work:
        nginx, host = start_nginx(Path(work), nginx_core)
        try:
            if load_core is not None:
                os.sched_setaffinity(0, {load_core})
            url = URL(host + "/")
            for fraction in args.fractions:
                print(f"arrivals at {fraction:.0%} of the closed loop's rate just before:")
                for _ in range(args.rounds):
                    rate, cost = closed(url, args.seconds)
                    opened, open_cost, late_p99 = open_model(url, args.seconds, rate * fraction)
                    rate_after, cost_after = closed(url, args.seconds)
                    print(f"  closed {rate:,.0f}/s ({cost:.0f} us a request), open {opened:,.0f}/s "
                          f"({open_cost:.0f} us, {open_cost / ((cost + cost_after) / 2):.2f}x the "
                          f"closed runs'), lateness p99 {late_p99:.1f} ms, closed "
                          f"{rate_after:,.0f}/s ({cost_after:.0f} us)", flush=True)
        finally:
            nginx.terminate()
            nginx.wait()


if __name__ == "__main__":
    main()
