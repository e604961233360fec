"""Command-line argument types and the options several commands share."""

from __future__ import annotations

import argparse


def positive_int(text: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def host_port(text: str, lowest_port: int = 1) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not lowest_port <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:5557, "
                                         f"got '{text}'")
    return host.strip("[]"), int(port)


def local_workers(args: argparse.Namespace) -> int:
    from esr.launcher import default_workers

    return default_workers() if args.workers is None else args.workers


def workers_argument(parser: argparse.ArgumentParser) -> None:
    # The default is resolved when a run is made (RunSettings), so building the parser for
    # `validate` or `schema` never loads the launcher.
    parser.add_argument("--workers", type=non_negative_int, default=None, metavar="N",
                        help="0: one process; N: a local master and N workers "
                        "(default: one per core)")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def non_negative_int(text: str) -> int:
    return positive_int(text, minimum=0)


def bind_address(text: str) -> tuple[str, int]:
    """HOST:PORT to listen on, where port 0 picks a free one."""
    return host_port(text, lowest_port=0)


METRICS_LINGER_S = 15.0
DEFAULT_METRICS_PORT = 9646  # ESR's usual Prometheus port (deploy/, docker-compose.yml)


def metrics_address(text: str) -> tuple[str, int]:
    """[HOST:]PORT for Prometheus; a port alone listens on this machine only."""
    return bind_address(text if ":" in text else f"127.0.0.1:{text}")


def metrics_arguments(parser: argparse.ArgumentParser, *, after_run: bool = True) -> None:
    parser.add_argument("--metrics-bind", type=metrics_address, default=None,
                        metavar="[HOST:]PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (a port "
                        f"alone: 127.0.0.1; {DEFAULT_METRICS_PORT} is ESR's usual port)")
    if after_run:
        parser.add_argument("--metrics-linger", type=non_negative_float,
                            default=METRICS_LINGER_S, metavar="SECONDS",
                            help="after the run, when Prometheus scraped during it, wait at "
                            "most this long for its scrape of the final figures (default "
                            f"{METRICS_LINGER_S:g})")


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value
