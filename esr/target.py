"""The bundled demo target: a rental-assistance service for ESR to rehearse a launch against.

It behaves like a small public service with the failure modes ESR measures: a bounded pool
of workers (latency grows with queueing), a fee-service dependency that chaos can kill, legal
blocks (HTTP 451), routing (X-ACT-Route), human review pauses (HTTP 202) and a planted bias
against seniors for the cohort report to find. /admin/* endpoints drive chaos and expose
exact counts of what was served, so tests can compare ESR's report with the truth.

    python -m esr.target --port 0     # prints "esr target listening on http://HOST:PORT"
"""

from __future__ import annotations

import argparse
import math
import random
import re
import signal
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import gevent
import gevent.lock
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

# The wire conventions of DESIGN.md ("Conventions on the wire").
SYNTHETIC = "X-ESR-Synthetic"
CITIZEN = "X-ESR-Citizen"
ROUTE = "X-ACT-Route"
VERDICT = "X-ESQ-Verdict"
HITL_PENDING = "X-HITL-Pending"
HITL_SKIP = "X-HITL-Skip"

FEE_SERVICE = "svc-fee"
LEGAL_REASONS = ("HIPAA", "FERPA", "PRIVACY_ACT")  # crc32 % 100 == 0, 1, 2 respectively
AGE_BANDS = (("<18", 0), ("18-29", 18), ("30-44", 30), ("45-61", 45), ("62+", 62))
ROUTES = ("fast_track", "standard", "manual_review")
MAX_APPLICATIONS = 100_000  # /status remembers this many; a long load test must not grow forever
MAX_APPLICANTS = 50_000  # /admin/applicants keeps the first bodies of this many citizens
STOP_GRACE_S = 2.0  # on SIGTERM, requests in flight get this long to finish


# --- The rules ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Application:
    citizen_id: str
    name: str
    age: int
    income: float
    veteran: bool
    household_size: int


def parse_application(body: object) -> Application | str:
    """The application in a JSON body, or what is wrong with it (every problem, in one line)."""
    if not isinstance(body, dict):
        return "expected a JSON object"

    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v: object) -> bool:
        return (is_int(v) or isinstance(v, float)) and math.isfinite(v)

    checks = {
        "citizen_id": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
        "name": (lambda v: isinstance(v, str), "a string"),
        "age": (lambda v: is_int(v) and 0 <= v <= 130, "an integer from 0 to 130"),
        "income": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
        "veteran": (lambda v: isinstance(v, bool), "true or false"),
        "household_size": (lambda v: is_int(v) and 1 <= v <= 50, "an integer from 1 to 50"),
    }
    problems = [f"{field} is missing" if field not in body else f"{field} must be {expected}"
                for field, (ok, expected) in checks.items()
                if field not in body or not ok(body[field])]
    if "form_token" in body and not isinstance(body["form_token"], str):
        problems.append("form_token must be a string")
    if problems:
        return "; ".join(problems)
    return Application(**{field: body[field] for field in checks})


def age_band(age: int) -> str:
    return next(band for band, low in reversed(AGE_BANDS) if age >= low)


def legal_block(citizen_id: str) -> str | None:
    """The legal reason this citizen's record may not be processed, if any (about 3 in 100)."""
    bucket = zlib.crc32(citizen_id.encode()) % 100
    return LEGAL_REASONS[bucket] if bucket < len(LEGAL_REASONS) else None


def income_limit(household_size: int) -> float:
    """Roughly 80% of area median income, by household size."""
    return 52_000 + 8_000 * (household_size - 1)


def counted_income(app: Application) -> float:
    # deliberate: the demo's planted bias. Social Security is counted again for applicants
    # aged 62+ (income x 1.6), so eligible seniors near the limit are wrongly rejected; ESR's
    # cohort report is meant to flag it. Do not "fix" this.
    return app.income * 1.6 if app.age >= 62 else app.income


def route_for(income: float, limit: float) -> str:
    if abs(income - limit) <= 0.1 * limit:
        return "manual_review"
    return "fast_track" if income < 0.5 * limit else "standard"


class Service:
    """An in-process dependency that chaos can kill and restore."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.up = True


# --- What was served -----------------------------------------------------------------------------

class Tally:
    """Exact counts of what was served, keyed by run id first so one run can be read alone.

    Increments never yield to gevent, so concurrent requests cannot lose a count.
    """

    def __init__(self) -> None:
        self.counts: Counter[tuple] = Counter()

    def add(self, run: str, *key: object) -> None:
        self.counts[(run, *key)] += 1

    def reset(self) -> None:
        self.counts.clear()

    def snapshot(self, run: str | None = None) -> dict:
        """The /admin/stats document; with a run id, only that run's requests count."""
        by_endpoint: Counter[str] = Counter()
        by_status: Counter[str] = Counter()
        runs: dict[str, Counter[str]] = {}
        outcomes: Counter[tuple] = Counter()
        headers = Counter(dict.fromkeys(
            ("synthetic", "missing_synthetic", "citizen", "missing_citizen", "hitl_skip"), 0))
        user_agents: Counter[str] = Counter()
        hitl = Counter({"paused": 0, "skipped": 0})
        legal = Counter(dict.fromkeys(LEGAL_REASONS, 0))
        routes = Counter(dict.fromkeys(ROUTES, 0))
        for (run_id, kind, *key), n in self.counts.items():
            if run is not None and run_id != run:
                continue
            per_run = runs.setdefault(run_id, Counter({"requests": 0, "journeys": 0}))
            if kind == "request":
                endpoint, status = key
                by_endpoint[endpoint] += n
                by_status[str(status)] += n
                per_run["requests"] += n
            elif kind == "journey":
                per_run["journeys"] += n
            elif kind == "outcome":
                outcomes[tuple(key)] += n
            elif kind == "header":
                headers[key[0]] += n
            elif kind == "user_agent":
                user_agents[key[0]] += n
            else:
                {"hitl": hitl, "legal": legal, "route": routes}[kind][key[0]] += n
        band_order = [band for band, _ in AGE_BANDS] + ["unknown"]
        rows = sorted(outcomes.items(), key=lambda item: (
            band_order.index(item[0][0]), str(item[0][1]), item[0][2]))
        return {
            "requests": {"total": sum(by_endpoint.values()), "by_endpoint": dict(by_endpoint),
                         "by_status": dict(by_status)},
            "runs": {run_id: dict(counts) for run_id, counts in runs.items()},
            "outcomes": [{"age_band": band, "veteran": veteran, "outcome": outcome, "n": n}
                         for (band, veteran, outcome), n in rows],
            "headers": {**headers, "user_agents": dict(user_agents)},
            "hitl": dict(hitl), "legal_blocks": dict(legal), "routes": dict(routes),
        }


# --- The service -------------------------------------------------------------------------------

def create_app(*, capacity: int = 8, service_ms: float = 5.0, seed: int = 0) -> Flask:
    """The WSGI app: `capacity` applications in service at once, each taking `service_ms`."""
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, not {capacity}")
    app = Flask(__name__)
    slots = gevent.lock.BoundedSemaphore(capacity)
    services = {FEE_SERVICE: Service(FEE_SERVICE)}
    tally = Tally()
    applications: dict[str, str] = {}  # id -> status, oldest first
    applicants: dict[str, dict[str, dict]] = {}  # run -> citizen_id -> first body received
    rng = random.Random(seed)  # seeded so tokens and ids repeat from run to run
    app.extensions["esr_target"] = {"tally": tally, "services": services}

    def remember(prefix: str, status: str) -> str:
        app_id = f"{prefix}-{rng.getrandbits(64):016x}"
        applications[app_id] = status
        if len(applications) > MAX_APPLICATIONS:
            del applications[next(iter(applications))]
        return app_id

    def keep_applicant(run: str, citizen_id: str, body: dict) -> None:
        """Who applied, so tests can check which citizens a run sent and with what traits."""
        if sum(map(len, applicants.values())) < MAX_APPLICANTS:
            applicants.setdefault(run, {}).setdefault(citizen_id, body)

    @app.get("/health")
    def health():
        return {"ok": True}

    @app.get("/form")
    def form():
        return {"form_token": f"{rng.getrandbits(128):032x}"}

    @app.post("/apply")
    def apply():
        parsed = parse_application(request.get_json(force=True, silent=True))
        if isinstance(parsed, str):
            return {"error": parsed}, 400
        g.cohort = (age_band(parsed.age), parsed.veteran)
        keep_applicant(request.headers.get(SYNTHETIC, ""), parsed.citizen_id, request.get_json())
        with slots:  # queueing for a slot is where latency grows under load
            gevent.sleep(service_ms / 1000)
        if not services[FEE_SERVICE].up:
            return {"error": "fee service unavailable"}, 503
        if reason := legal_block(parsed.citizen_id):
            g.outcome, g.legal_reason = "blocked", reason
            return ({"status": "blocked", "reason": reason}, 451,
                    {VERDICT: f"blocked; reason={reason}"})
        income, limit = counted_income(parsed), income_limit(parsed.household_size)
        g.route = route_for(income, limit)
        if g.route == "manual_review":
            if request.headers.get(HITL_SKIP, "").lower() != "true":
                g.outcome = "paused"
                ticket = remember("hitl", "pending_review")
                return ({"status": "pending_review", "ticket": ticket}, 202,
                        {ROUTE: g.route, HITL_PENDING: ticket})
            g.hitl_skipped = True
        g.outcome = "approved" if income <= limit else "rejected"
        app_id = remember("app", g.outcome)
        return ({"status": g.outcome, "application_id": app_id, "route": g.route}, 200,
                {ROUTE: g.route})

    @app.get("/status/<application_id>")
    def status(application_id: str):
        if application_id not in applications:
            return {"error": "unknown application"}, 404
        return {"status": applications[application_id]}

    @app.get("/admin/services")
    def list_services():
        return {name: "up" if service.up else "down" for name, service in services.items()}

    @app.post("/admin/services/<name>/<action>")
    def set_service(name: str, action: str):
        if name not in services or action not in ("kill", "restore"):
            return {"error": f"no service {name!r} or action {action!r}"}, 404
        services[name].up = action == "restore"
        return list_services()

    @app.get("/admin/stats")
    def stats():
        return tally.snapshot(request.args.get("run"))

    @app.get("/admin/applicants")
    def list_applicants():
        return applicants.get(request.args.get("run", ""), {})

    @app.post("/admin/reset")
    def reset():
        tally.reset()
        applicants.clear()
        return {"ok": True}

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return {"error": (error.name or "error").lower()}, error.code or 500

    @app.after_request
    def count(response: Response) -> Response:
        # Counted here, as the response is produced, so 400/404/503 answers count too.
        if request.path.split("/")[1] != "admin":
            record(response)
        return response

    def record(response: Response) -> None:
        run = request.headers.get(SYNTHETIC, "")
        endpoint = endpoint_name()
        tally.add(run, "request", endpoint, response.status_code)
        for header, key in ((SYNTHETIC, "synthetic"), (CITIZEN, "citizen")):
            tally.add(run, "header", key if header in request.headers else f"missing_{key}")
        if request.headers.get(HITL_SKIP, "").lower() == "true":
            tally.add(run, "header", "hitl_skip")
        tally.add(run, "user_agent", request.headers.get("User-Agent", ""))
        if endpoint != "POST /apply":
            return
        # Every /apply is one journey with one outcome; a body we could not read has no cohort.
        band, veteran = g.get("cohort", ("unknown", None))
        outcome = g.get("outcome", "error")
        tally.add(run, "journey")
        tally.add(run, "outcome", band, veteran, outcome)
        if "route" in g:
            tally.add(run, "route", g.route)
        if "legal_reason" in g:
            tally.add(run, "legal", g.legal_reason)
        if outcome == "paused" or "hitl_skipped" in g:
            tally.add(run, "hitl", "paused" if outcome == "paused" else "skipped")

    return app


def endpoint_name() -> str:
    """'METHOD /pattern' of the matched route ('GET /status/{id}'), so names stay bounded."""
    if request.url_rule is None:
        return "(unmatched)"
    return f"{request.method} {re.sub(r'<[^>]+>', '{id}', request.url_rule.rule)}"


# --- Serving -----------------------------------------------------------------------------------

def serve(*, host: str = "127.0.0.1", port: int = 8080, capacity: int = 8,
          service_ms: float = 5.0, on_ready: Callable[[str], object] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then let requests in flight finish and return."""
    # Patch only here, in the serving process: tests import this module in-process.
    from gevent import monkey

    monkey.patch_all()
    from gevent.pool import Pool
    from gevent.pywsgi import WSGIServer

    app = create_app(capacity=capacity, service_ms=service_ms)
    # A pool lets stop() wait for the handlers in flight; bare greenlets would be abandoned.
    server = WSGIServer((host, port), app, spawn=Pool(), log=None)
    # close() wakes serve_forever(), which then stops gracefully within STOP_GRACE_S.
    handlers = [gevent.signal_handler(sig, server.close) for sig in (signal.SIGTERM, signal.SIGINT)]
    try:
        server.start()
        shown_host = f"[{host}]" if ":" in host else host
        url = f"http://{shown_host}:{server.server_port}"
        print(f"esr target listening on {url}", flush=True)
        if on_ready is not None:
            on_ready(url)
        server.serve_forever(stop_timeout=STOP_GRACE_S)
    finally:
        for handler in handlers:
            handler.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m esr.target",
                                     description="The bundled demo target of ESR.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--capacity", type=int, default=8, help="applications served at once")
    parser.add_argument("--service-ms", type=float, default=5.0, help="time to serve one")
    args = parser.parse_args(argv)
    serve(host=args.host, port=args.port, capacity=args.capacity, service_ms=args.service_ms)


if __name__ == "__main__":
    main()
