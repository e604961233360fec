"""The service's commands: `serve`, `tokens` and `audit` on the service's machine; `submit`,
`runs`, `watch` and `fetch` from anywhere, with a token. Thin: each calls the service's
modules or the ServiceClient and prints the result."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from esr.arguments import (
    bind_address,
    host_port,
    local_workers,
    metrics_arguments,
    positive_float,
    positive_int,
    workers_argument,
)
from esr.errors import EXIT_OK, BadInput
from esr.units import parse_duration

DEFAULT_DATA = Path("esr-data")


def _pool(args: argparse.Namespace):
    from esr.pool import PoolSettings

    if args.pool is None:
        if args.min_workers != 1:
            raise BadInput("--min-workers needs --pool HOST:PORT (where standing workers join)")
        return None
    if args.workers:
        raise BadInput("--workers starts local workers; with --pool the standing workers "
                       "run each run's citizens: give one or the other")
    return PoolSettings(args.pool, args.min_workers, args.pool_wait)


# ---- on the service's machine ------------------------------------------------------------------


def _data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, metavar="DIR",
                        help=f"the service's data folder: store and run directories "
                        f"(default ./{DEFAULT_DATA})")


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    from esr.service import DEFAULT_BIND

    parser.add_argument("--bind", type=bind_address, default=DEFAULT_BIND, metavar="HOST:PORT",
                        help=f"where the API and page listen (default {DEFAULT_BIND[0]}:"
                        f"{DEFAULT_BIND[1]}; port 0 picks a free one)")
    _data_argument(parser)
    workers_argument(parser)
    parser.add_argument("--max-running", type=positive_int, default=1, metavar="N",
                        help="runs at a time on this machine (default 1: load tests compete)")
    parser.add_argument("--link-ttl", type=_duration, default=24 * 3600.0, metavar="DURATION",
                        help="how long a report link stays valid (default 24h)")
    parser.add_argument("--public-url", default=None, metavar="URL",
                        help="the address people reach the service at, behind a proxy: report "
                        "links start with it (default: the address each request was sent to)")
    pool = parser.add_argument_group("a pool of standing workers (instead of local workers)")
    pool.add_argument("--pool", type=host_port, default=None, metavar="HOST:PORT",
                      help="each run's master listens here for standing workers "
                      "(`esr-locust worker --master HOST:PORT` on other hosts); one run at a "
                      "time")
    pool.add_argument("--min-workers", type=positive_int, default=1, metavar="N",
                      help="a run starts once N standing workers have joined it (default 1)")
    pool.add_argument("--pool-wait", type=_duration, default=60.0, metavar="DURATION",
                      help="a run waiting longer for them is an error (default 60s)")
    metrics_arguments(parser, after_run=False)


def serve(args: argparse.Namespace) -> int:
    from esr.service.server import ServeSettings
    from esr.service.server import serve as serve_api

    serve_api(ServeSettings(data=args.data, bind=args.bind, workers=local_workers(args),
                            max_running=args.max_running, link_ttl_s=args.link_ttl,
                            public_url=args.public_url, metrics_bind=args.metrics_bind,
                            pool=_pool(args)),
              announce=lambda line: print(line, file=sys.stderr, flush=True))
    return EXIT_OK


def _tokens_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="make a token; prints its secret alone, once")
    _data_argument(create)
    create.add_argument("--agency", required=True, help="the agency the token acts for")
    create.add_argument("--scopes", default="runs:start,runs:read", metavar="LIST",
                        help="comma-separated: runs:start, runs:read (default both)")
    create.add_argument("--allow-target", action="append", default=[], metavar="URL",
                        help="a target the agency may load: scheme, host and port (repeat)")
    create.add_argument("--max-concurrent", type=positive_int, default=1, metavar="N")
    create.add_argument("--max-queued", type=positive_int, default=10, metavar="N")
    create.add_argument("--max-citizens", type=positive_int, default=10_000, metavar="N")
    create.add_argument("--max-duration", type=_duration, default=3600.0, metavar="DURATION")
    listing = actions.add_parser("list", help="tokens, their agencies and policies")
    _data_argument(listing)
    revoke = actions.add_parser("revoke", help="revoke a token by its id (tok_…)")
    _data_argument(revoke)
    revoke.add_argument("token_id", metavar="ID")


def tokens(args: argparse.Namespace) -> int:
    from esr.service.agencies import Policy, create_token
    from esr.service.server import open_store

    store = open_store(args.data)
    if args.action == "create":
        policy = Policy(scopes=tuple(s.strip() for s in args.scopes.split(",") if s.strip()),
                        targets=tuple(args.allow_target), max_concurrent=args.max_concurrent,
                        max_queued=args.max_queued, max_citizens=args.max_citizens,
                        max_duration_s=args.max_duration)
        try:
            token, secret = create_token(store, args.agency, policy)
        except ValueError as error:
            raise BadInput(str(error)) from None
        store.audit("token_create", agency=token.agency, token_id=token.id, client="cli")
        print(f"esr-locust: token {token.id} for agency '{token.agency}'; its secret is shown "
              "once, below", file=sys.stderr)
        print(secret)
    elif args.action == "list":
        for token in store.tokens():
            state = f"revoked {token.revoked_at}" if token.revoked_at else "active"
            print(f"{token.id}  {token.agency}  {state}  created {token.created_at}  "
                  f"{json.dumps(token.policy)}")
    else:
        token = store.token(args.token_id)
        if token is None:
            raise BadInput(f"no token '{args.token_id}' (see esr-locust tokens list)")
        if not store.revoke_token(token.id):
            raise BadInput(f"token {token.id} was already revoked")
        store.audit("token_revoke", agency=token.agency, token_id=token.id, client="cli")
        print(f"esr-locust: token {token.id} of '{token.agency}' revoked", file=sys.stderr)
    return EXIT_OK


def _audit_arguments(parser: argparse.ArgumentParser) -> None:
    _data_argument(parser)
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="the last N entries only")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def audit(args: argparse.Namespace) -> int:
    from esr.service.server import open_store

    for entry in open_store(args.data).audit_log(args.limit):
        if args.json:
            print(json.dumps(entry))
            continue
        who = " ".join(f"{key}={entry[key]}" for key in ("agency", "token_id", "run_id",
                                                         "client") if entry[key])
        detail = " ".join(f"{key}={value}" for key, value in entry["detail"].items())
        print(f"{entry['at']}  {entry['action']:<16} {who} {detail}".rstrip())
    return EXIT_OK


# ---- from anywhere, with a token ---------------------------------------------------------------


def _service_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, metavar="URL",
                        help="the service (default $ESR_URL, else http://127.0.0.1:8088)")
    parser.add_argument("--token", default=None, metavar="SECRET",
                        help="the agency's token (default $ESR_TOKEN; the variable keeps it "
                        "out of the process list)")


def _client(args: argparse.Namespace):
    from esr.service_client import ServiceClient

    token = args.token or os.environ.get("ESR_TOKEN")
    if not token:
        raise BadInput("no token: pass --token or set ESR_TOKEN (esr-locust tokens create "
                       "makes one on the service's machine)")
    return ServiceClient(args.url, token)


def _submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO")
    _service_arguments(parser)
    parser.add_argument("--wait", action="store_true",
                        help="watch the run to its end and print its report card's link; "
                        "exit as `run` does (0 passed, 1 SLO failed, 2 bad input, 3 run error)")
    parser.add_argument("--host", metavar="URL", help="target base URL (overrides target:)")
    parser.add_argument("--time-scale", type=positive_float, default=1.0, metavar="F")
    parser.add_argument("--user-scale", type=positive_float, default=1.0, metavar="F")
    parser.add_argument("--idempotency-key", metavar="KEY",
                        help="submitting again with the same key and scenario gives the same run")


def submit(args: argparse.Namespace) -> int:
    client = _client(args)
    job = client.run(args.scenario, host=args.host, time_scale=args.time_scale,
                     user_scale=args.user_scale, idempotency_key=args.idempotency_key)
    position = job.data.get("queue_position")
    print(f"esr-locust: run {job.id} {job.status}"
          + (f" (position {position} in the queue)" if position else ""), file=sys.stderr)
    if not args.wait:
        print(job.id)
        return EXIT_OK
    job = client.watch(job.id, stream=sys.stderr)
    # The report card's link when the run has one (a verdict means it was reported), else
    # the run's id; nothing is downloaded (fetch does that).
    print(client.link(job.id, "html") if job.verdict else job.id)
    return job.exit_code


def _runs_arguments(parser: argparse.ArgumentParser) -> None:
    _service_arguments(parser)
    parser.add_argument("--limit", type=positive_int, default=50, metavar="N")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def runs(args: argparse.Namespace) -> int:
    for job in _client(args).runs(args.limit):
        if args.json:
            print(json.dumps(job.data))
            continue
        verdict = job.verdict
        figures = f"{verdict['requests']} requests, p95 {verdict['p95_ms']:.0f} ms" \
            if verdict else ""
        print(f"{job.id}  {job.status:<11} {job.data['created_at'][:19]}  "
              f"{job.data['scenario']}  {figures}".rstrip())
    return EXIT_OK


def _watch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="ID")
    _service_arguments(parser)


def watch(args: argparse.Namespace) -> int:
    job = _client(args).watch(args.run_id, stream=sys.stdout)
    return job.exit_code


def _fetch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="ID")
    _service_arguments(parser)
    parser.add_argument("--format", default="html", metavar="LIST",
                        help="comma-separated: html, pdf, json, junit (default html)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where to write (default reports/<run-id>)")


def fetch(args: argparse.Namespace) -> int:
    from esr.report.render import parse_formats

    client = _client(args)
    for fmt in parse_formats(args.format):
        print(client.report(args.run_id, fmt, out_dir=args.out).path)
    return EXIT_OK


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


SERVICE_COMMANDS = {
    "serve": (serve, "serve the ESR service: job store, queue, API and page", _serve_arguments),
    "tokens": (tokens, "create, list or revoke the service's agency tokens", _tokens_arguments),
    "audit": (audit, "print the service's audit log", _audit_arguments),
    "submit": (submit, "submit a scenario to an ESR service", _submit_arguments),
    "runs": (runs, "list your agency's runs on an ESR service", _runs_arguments),
    "watch": (watch, "follow a run on an ESR service live", _watch_arguments),
    "fetch": (fetch, "download a run's report card from an ESR service", _fetch_arguments),
}
