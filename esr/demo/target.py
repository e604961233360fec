"""The bundled demo target: a rental-assistance service for ESR to rehearse a launch against.

It behaves like a small public service with the failure modes ESR measures: a bounded pool
of workers (latency grows with queueing), a fee-service dependency that chaos can kill, legal
blocks (HTTP 451), routing (X-ACT-Route), human review pauses (HTTP 202) and a planted bias
against seniors for the cohort report to find. /admin/* endpoints drive chaos and expose
exact counts of what was served, so tests can compare ESR's report with the truth.

Like a service traced with OpenTelemetry, it reads W3C `baggage` and counts synthetic
traffic (esr.synthetic=true) apart from the rest, by the run its baggage names; and it keeps
the trace headers (`traceparent`, `baggage`) of the first requests of each run, so tests can
follow traces request by request (/admin/traces?run=…).

A citizen's way through it (examples/demo.yml): POST /eligibility (a quick check by few
workers: it slows as checks pile up and refuses with 503 those that waited half a second,
so a spike of citizens finds it first), POST /apply?fee=later (the decision),
POST /pay (the application fee, through the fee service) and GET /status/{id}. A plain
POST /apply (the default journey) charges the fee with the application. Whatever goes
through the fee service answers 503 while it is down.

An asyncio ASGI app (Starlette) served by uvicorn: it imports neither Locust nor gevent.

    python -m esr.demo.target --port 0     # prints "esr target listening on http://HOST:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from esr.serving import serve_until_stopped

# The wire conventions of DESIGN.md ("Conventions on the wire").
SYNTHETIC = "X-ESR-Synthetic"
CITIZEN = "X-ESR-Citizen"
ROUTE = "X-ACT-Route"
VERDICT = "X-ESQ-Verdict"
HITL_PENDING = "X-HITL-Pending"
HITL_SKIP = "X-HITL-Skip"
TRACEPARENT = "traceparent"  # W3C Trace Context
BAGGAGE = "baggage"  # W3C Baggage: ESR's says esr.synthetic=true,esr.run=…,esr.cohort=…

FEE_SERVICE = "svc-fee"
APPLICATION_FEE = 25  # dollars, paid through the fee service
# The eligibility check: this many checks at once, each taking ELIGIBILITY_MS, so about 85 a
# second; the demo's plateau asks ~60, its spike twice that (examples/demo.yml). The rest
# wait for a worker (latency grows with the requests in flight); one that waited
# ELIGIBILITY_WAIT_MS is refused with 503, as is any beyond ELIGIBILITY_QUEUE waiting.
ELIGIBILITY_WORKERS = 4
ELIGIBILITY_MS = 47.0
ELIGIBILITY_WAIT_MS = 500.0
ELIGIBILITY_QUEUE = 1_000
LEGAL_REASONS = ("HIPAA", "FERPA", "PRIVACY_ACT")  # crc32 % 100 == 0, 1, 2 respectively
AGE_BANDS = (("<18", 0), ("18-29", 18), ("30-44", 30), ("45-61", 45), ("62+", 62))
ROUTES = ("fast_track", "standard", "manual_review")
MAX_APPLICATIONS = 100_000  # /status remembers this many; a long load test must not grow forever
MAX_APPLICANTS = 50_000  # /admin/applicants keeps the first bodies of this many citizens
# ... each body up to this size (ESR's are ~250 bytes; 50,000 of these, ~55 MB at worst);
# a larger body is served but not kept
MAX_APPLICANT_BYTES = 1_024
# Labels come from request headers, so any client can invent new ones: the counters keep this
# many distinct run labels (X-ESR-Synthetic), and of User-Agents per run label, each up to
# MAX_LABEL_CHARS long, and count the rest under OTHER (at worst ~45 MB of counters).
# A test session runs far fewer runs than MAX_RUN_LABELS; /admin/reset forgets them all.
MAX_RUN_LABELS = 1_000
MAX_USER_AGENTS = 100
MAX_CLIENTS = 100  # client addresses counted per run label (each host of a scaled-out run)
MAX_LABEL_CHARS = 200  # an ESR run id is at most 61 characters
OTHER = "(other)"
# The trace headers of the first MAX_TRACED_PER_RUN requests of each run label are kept, of
# the latest runs up to MAX_TRACED in all (each value up to MAX_LABEL_CHARS; ~25 MB at most).
MAX_TRACED_PER_RUN = 10_000
MAX_TRACED = 50_000
BAGGAGE_MEMBERS_MAX = 180  # list members read from a baggage header (W3C's own limit)
STOP_GRACE_S = 2.0  # on SIGTERM, requests in flight get this long to finish
# A burst of thousands of connects waits in the listen queue (capped by net.core.somaxconn)
# instead of overflowing it into 1 s SYN retries.
BACKLOG = 4_096
# Idle keep-alive connections close after this long: longer than any pause across which a
# citizen keeps its connection (5 s, esr/engine/connections.py) and than a benchmark's idle users.
KEEP_ALIVE_S = 300


# --- The rules ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Application:
    citizen_id: str
    name: str
    age: int
    income: float
    veteran: bool
    household_size: int


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


# Each field a body may carry: its test, and what it must be.
FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "citizen_id": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "name": (lambda v: isinstance(v, str), "a string"),
    "age": (lambda v: _is_int(v) and 0 <= v <= 130, "an integer from 0 to 130"),
    "income": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "veteran": (lambda v: isinstance(v, bool), "true or false"),
    "household_size": (lambda v: _is_int(v) and 1 <= v <= 50, "an integer from 1 to 50"),
}
ELIGIBILITY_FIELDS = ("income", "household_size")


def _problems(body: dict, fields) -> list[str]:
    return [f"{field} is missing" if field not in body else f"{field} must be {expected}"
            for field in fields for ok, expected in (FIELDS[field],)
            if field not in body or not ok(body[field])]


def parse_application(body: object) -> Application | str:
    """The application in a JSON body, or what is wrong with it (every problem, in one line)."""
    if not isinstance(body, dict):
        return "expected a JSON object"
    problems = _problems(body, FIELDS)
    if "form_token" in body and not isinstance(body["form_token"], str):
        problems.append("form_token must be a string")
    if problems:
        return "; ".join(problems)
    return Application(**{field: body[field] for field in FIELDS})


def parse_eligibility(body: object) -> tuple[float, int] | str:
    """(income, household size) from an eligibility check's JSON body, or what is wrong."""
    if not isinstance(body, dict):
        return "expected a JSON object"
    problems = _problems(body, ELIGIBILITY_FIELDS)
    if problems:
        return "; ".join(problems)
    return body["income"], body["household_size"]


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


class Workers:
    """`workers` requests served at once, each taking `service_ms`. The rest wait their turn
    (so latency grows with the requests in flight), each for at most `wait_ms`: one that
    waited that long is refused, as is any beyond `queue` waiting."""

    def __init__(self, workers: int, service_ms: float, wait_ms: float, queue: int) -> None:
        self.slots = asyncio.Semaphore(workers)
        self.service_s = service_ms / 1000
        self.wait_s = wait_ms / 1000
        self.queue = queue
        self.waiting = 0

    async def serve(self) -> bool:
        """Wait for a worker and do the work; False if refused."""
        if self.waiting >= self.queue:
            return False
        self.waiting += 1
        try:
            async with asyncio.timeout(self.wait_s):
                await self.slots.acquire()
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1
        try:
            await asyncio.sleep(self.service_s)
        finally:
            self.slots.release()
        return True


# --- Trace context ----------------------------------------------------------------------------

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def traceparent_state(value: str | None) -> str:
    """How a request's traceparent header counts: "traceparent" if it is W3C's version 00
    (lowercase hex, neither id all zeros), "invalid_traceparent" if not, and
    "missing_traceparent" when there is none."""
    if value is None:
        return "missing_traceparent"
    match = _TRACEPARENT.fullmatch(value)
    valid = match is not None and match[1] != "0" * 32 and match[2] != "0" * 16
    return "traceparent" if valid else "invalid_traceparent"


def baggage_members(values: list[str]) -> dict[str, str]:
    """The list members of W3C baggage headers (several combine as one list), their values
    percent-decoded, their properties dropped; the first of a key counts."""
    members: dict[str, str] = {}
    for member in ",".join(values).split(",", BAGGAGE_MEMBERS_MAX)[:BAGGAGE_MEMBERS_MAX]:
        key, equals, value = member.partition("=")
        if equals:
            members.setdefault(key.strip(" \t"), unquote(value.split(";", 1)[0].strip(" \t")))
    return members


class TraceLog:
    """The trace headers of the first `per_run` requests of each run label, of the latest
    runs up to `total` requests in all: an older run's are forgotten first."""

    def __init__(self, per_run: int, total: int) -> None:
        self.per_run = per_run
        self.total = total
        self.runs: dict[str, list[tuple]] = {}
        self.size = 0

    def add(self, run: str, entry: tuple) -> None:
        kept = self.runs.setdefault(run, [])
        if len(kept) >= self.per_run:
            return
        kept.append(tuple(v[:MAX_LABEL_CHARS] if isinstance(v, str) else v for v in entry))
        self.size += 1
        while self.size > self.total:
            oldest = next(r for r in self.runs if r != run)
            self.size -= len(self.runs.pop(oldest))

    def of(self, run: str) -> list[dict]:
        fields = ("endpoint", "status", "citizen", TRACEPARENT, BAGGAGE)
        return [dict(zip(fields, entry, strict=True)) for entry in self.runs.get(run, [])]

    def clear(self) -> None:
        self.runs.clear()
        self.size = 0


# --- What was served -----------------------------------------------------------------------------

class Labels:
    """At most `limit` distinct values of a request header, each kept as it came; the rest OTHER."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.known: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        label = self.known.get(value)
        if label is None:
            if len(self.known) >= self.limit or len(value) > MAX_LABEL_CHARS:
                return OTHER
            label = self.known[value] = value
        return label

    def clear(self) -> None:
        self.known.clear()


class ServedCounts:
    """Exact counts of what was served, keyed by run label first so one run can be read alone.

    Increments never await, so concurrent requests cannot lose a count. Run labels, and
    User-Agents within each, are bounded (`Labels`), so the counters cannot grow without
    bound, and no client can crowd another run's User-Agent out of its count.
    """

    def __init__(self) -> None:
        self.counts: Counter[tuple] = Counter()
        self.run_label = Labels(MAX_RUN_LABELS)
        self.user_agents: dict[str, Labels] = {}  # run label -> its User-Agents
        self.clients: dict[str, Labels] = {}  # run label -> the addresses it came from
        self.traces = TraceLog(MAX_TRACED_PER_RUN, MAX_TRACED)

    def user_agent(self, run: str, value: str) -> str:
        if run not in self.user_agents:
            self.user_agents[run] = Labels(MAX_USER_AGENTS)
        return self.user_agents[run](value)

    def client(self, run: str, address: str) -> str:
        if run not in self.clients:
            self.clients[run] = Labels(MAX_CLIENTS)
        return self.clients[run](address)

    def add(self, run: str, *key: object) -> None:
        self.counts[(run, *key)] += 1

    def reset(self) -> None:
        self.counts.clear()
        self.run_label.clear()
        self.user_agents.clear()
        self.clients.clear()
        self.traces.clear()

    def snapshot(self, run: str | None = None) -> dict:
        """The /admin/stats document; with a run id, only that run's requests count."""
        by_endpoint: Counter[str] = Counter()
        by_status: Counter[str] = Counter()
        runs: dict[str, Counter[str]] = {}
        outcomes: Counter[tuple] = Counter()
        headers = Counter(dict.fromkeys(
            ("synthetic", "missing_synthetic", "citizen", "missing_citizen", "hitl_skip",
             "traceparent", "missing_traceparent", "invalid_traceparent"), 0))
        user_agents: Counter[str] = Counter()
        clients: Counter[str] = Counter()  # requests by the client address they came from
        traffic = Counter({"synthetic": 0, "real": 0})  # by baggage
        synthetic_runs: Counter[str] = Counter()  # synthetic requests by their baggage's esr.run
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
            elif kind == "client":
                clients[key[0]] += n
            elif kind == "traffic":
                traffic[key[0]] += n
            elif kind == "synthetic_run":
                synthetic_runs[key[0]] += n
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
            "traffic": {**traffic, "synthetic_by_run": dict(synthetic_runs)},
            "clients": dict(clients),
            "hitl": dict(hitl), "legal_blocks": dict(legal), "routes": dict(routes),
        }


# --- The service -------------------------------------------------------------------------------

@dataclass
class Journey:
    """What one POST /apply decided; the tally reads it as the response starts."""

    cohort: tuple[str, bool | None] = ("unknown", None)  # a body we could not read has none
    outcome: str = "error"
    route: str | None = None
    legal_reason: str | None = None
    hitl_skipped: bool = False


JOURNEY = "esr.journey"  # where a request's Journey lives in its ASGI scope


class CompactJSON(Response):
    """JSON as the target writes it: sorted keys, compact, ASCII, ending in a newline."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return (json.dumps(content, sort_keys=True, separators=(",", ":")) + "\n").encode()


def answer(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return CompactJSON(body, status, headers)


def parse_body(raw: bytes) -> object:
    """The JSON document in a request body, or None if it holds none."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def create_app(*, capacity: int = 8, service_ms: float = 5.0, seed: int = 0,
               eligibility: Workers | None = None) -> Counted:
    """The ASGI app: `capacity` applications in service at once, each taking `service_ms`;
    eligibility checks by `eligibility` (default: the ELIGIBILITY_* constants)."""
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, not {capacity}")
    slots = asyncio.Semaphore(capacity)
    checks = eligibility or Workers(ELIGIBILITY_WORKERS, ELIGIBILITY_MS, ELIGIBILITY_WAIT_MS,
                                    ELIGIBILITY_QUEUE)
    services = {FEE_SERVICE: Service(FEE_SERVICE)}
    tally = ServedCounts()
    applications: dict[str, str] = {}  # id -> status, oldest first
    applicants: dict[str, dict[str, bytes]] = {}  # run label -> citizen_id -> first body received
    rng = random.Random(seed)  # seeded so tokens and ids repeat from run to run

    def remember(prefix: str, status: str) -> str:
        app_id = f"{prefix}-{rng.getrandbits(64):016x}"
        applications[app_id] = status
        if len(applications) > MAX_APPLICATIONS:
            del applications[next(iter(applications))]
        return app_id

    def keep_applicant(run: str, citizen_id: str, body: bytes) -> None:
        """Who applied, so tests can check which citizens a run sent and with what traits."""
        if (len(body) <= MAX_APPLICANT_BYTES
                and sum(map(len, applicants.values())) < MAX_APPLICANTS):
            applicants.setdefault(tally.run_label(run), {}).setdefault(citizen_id, body)

    async def health(request: Request) -> Response:
        return answer({"ok": True})

    async def form(request: Request) -> Response:
        return answer({"form_token": f"{rng.getrandbits(128):032x}"})

    async def check_eligibility(request: Request) -> Response:
        parsed = parse_eligibility(parse_body(await request.body()))
        if isinstance(parsed, str):
            return answer({"error": parsed}, 400)
        if not await checks.serve():
            return answer({"error": "eligibility check overloaded, try again"}, 503,
                          {"Retry-After": "1"})
        income, household_size = parsed
        limit = income_limit(household_size)  # the income as declared: no bias here
        return answer({"eligible": income <= limit, "income_limit": limit})

    async def apply(request: Request) -> Response:
        journey: Journey = request.scope[JOURNEY]
        body = await request.body()
        parsed = parse_application(parse_body(body))
        if isinstance(parsed, str):
            return answer({"error": parsed}, 400)
        journey.cohort = (age_band(parsed.age), parsed.veteran)
        keep_applicant(request.headers.get(SYNTHETIC, ""), parsed.citizen_id, body)
        async with slots:  # queueing for a slot is where latency grows under load
            await asyncio.sleep(service_ms / 1000)
        # The fee is charged with the application, through the fee service, unless the
        # citizen will pay it afterwards (POST /apply?fee=later, then POST /pay).
        if request.query_params.get("fee") != "later" and not services[FEE_SERVICE].up:
            return answer({"error": "fee service unavailable"}, 503)
        if reason := legal_block(parsed.citizen_id):
            journey.outcome, journey.legal_reason = "blocked", reason
            return answer({"status": "blocked", "reason": reason}, 451,
                          {VERDICT: f"blocked; reason={reason}"})
        income, limit = counted_income(parsed), income_limit(parsed.household_size)
        journey.route = route_for(income, limit)
        if journey.route == "manual_review":
            if request.headers.get(HITL_SKIP, "").lower() != "true":
                journey.outcome = "paused"
                ticket = remember("hitl", "pending_review")
                return answer({"status": "pending_review", "ticket": ticket}, 202,
                              {ROUTE: journey.route, HITL_PENDING: ticket})
            journey.hitl_skipped = True
        journey.outcome = "approved" if income <= limit else "rejected"
        app_id = remember("app", journey.outcome)
        return answer({"status": journey.outcome, "application_id": app_id,
                       "route": journey.route}, 200, {ROUTE: journey.route})

    async def status(request: Request) -> Response:
        application_id = request.path_params["application_id"]
        if application_id not in applications:
            return answer({"error": "unknown application"}, 404)
        return answer({"status": applications[application_id]})

    async def pay(request: Request) -> Response:
        body = parse_body(await request.body())
        application_id = body.get("application_id") if isinstance(body, dict) else None
        if not isinstance(application_id, str):
            return answer({"error": "application_id must be a string"}, 400)
        if application_id not in applications:
            return answer({"error": "unknown application"}, 404)
        if not services[FEE_SERVICE].up:
            return answer({"error": "fee service unavailable"}, 503)
        return answer({"application_id": application_id, "paid": APPLICATION_FEE,
                       "receipt": f"fee-{rng.getrandbits(64):016x}"})

    def service_states() -> dict[str, str]:
        return {name: "up" if service.up else "down" for name, service in services.items()}

    async def list_services(request: Request) -> Response:
        return answer(service_states())

    async def set_service(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if name not in services or action not in ("kill", "restore"):
            return answer({"error": f"no service {name!r} or action {action!r}"}, 404)
        services[name].up = action == "restore"
        return answer(service_states())

    async def stats(request: Request) -> Response:
        return answer(tally.snapshot(request.query_params.get("run")))

    async def list_traces(request: Request) -> Response:
        return answer(tally.traces.of(request.query_params.get("run", "")))

    async def list_applicants(request: Request) -> Response:
        kept = applicants.get(request.query_params.get("run", ""), {})
        return answer({citizen_id: json.loads(body) for citizen_id, body in kept.items()})

    async def reset(request: Request) -> Response:
        tally.reset()
        applicants.clear()
        return answer({"ok": True})

    async def http_error(request: Request, error: HTTPException) -> Response:
        return answer({"error": error.detail.lower()}, error.status_code)

    async def server_error(request: Request, error: Exception) -> Response:
        return answer({"error": "internal server error"}, 500)

    app = Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/form", form, methods=["GET"]),
        Route("/eligibility", check_eligibility, methods=["POST"]),
        Route("/apply", apply, methods=["POST"]),
        Route("/pay", pay, methods=["POST"]),
        Route("/status/{application_id}", status, methods=["GET"]),
        Route("/admin/services", list_services, methods=["GET"]),
        Route("/admin/services/{name}/{action}", set_service, methods=["POST"]),
        Route("/admin/stats", stats, methods=["GET"]),
        Route("/admin/applicants", list_applicants, methods=["GET"]),
        Route("/admin/traces", list_traces, methods=["GET"]),
        Route("/admin/reset", reset, methods=["POST"]),
    ], exception_handlers={HTTPException: http_error, Exception: server_error})
    app.router.redirect_slashes = False  # a path is served as written: /health/ is a 404
    return Counted(app, tally)


class Counted:
    """The app, with every request outside /admin counted as its response starts.

    Counted there, before the client can see the answer, so 400/404/405/503 answers count
    too and a client that reads /admin/stats after its answer finds its request counted.
    """

    def __init__(self, app: Starlette, tally: ServedCounts) -> None:
        self.app = app
        self.tally = tally

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"].split("/")[1:2] == ["admin"]:
            await self.app(scope, receive, send)
            return
        journey = scope[JOURNEY] = Journey()

        async def counted_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                record(self.tally, scope, message["status"], journey)
            await send(message)

        await self.app(scope, receive, counted_send)


def record(tally: ServedCounts, scope: dict, status: int, journey: Journey) -> None:
    headers = Headers(scope=scope)
    run = tally.run_label(headers.get(SYNTHETIC, ""))
    endpoint = endpoint_name(scope)
    tally.add(run, "request", endpoint, status)
    for header, key in ((SYNTHETIC, "synthetic"), (CITIZEN, "citizen")):
        tally.add(run, "header", key if header in headers else f"missing_{key}")
    if headers.get(HITL_SKIP, "").lower() == "true":
        tally.add(run, "header", "hitl_skip")
    tally.add(run, "user_agent", tally.user_agent(run, headers.get("User-Agent", "")))
    client = scope.get("client")
    tally.add(run, "client", tally.client(run, client[0] if client else ""))
    # Trace context, as a service traced with OpenTelemetry reads it: synthetic traffic is
    # what its baggage says is, counted apart, by the run its baggage names.
    traceparent = headers.get(TRACEPARENT)
    tally.add(run, "header", traceparent_state(traceparent))
    baggage = headers.getlist(BAGGAGE)
    members = baggage_members(baggage)
    if members.get("esr.synthetic") == "true":
        tally.add(run, "traffic", "synthetic")
        tally.add(run, "synthetic_run", tally.run_label(members.get("esr.run", "")))
    else:
        tally.add(run, "traffic", "real")
    tally.traces.add(run, (endpoint, status, headers.get(CITIZEN), traceparent,
                           ",".join(baggage) if baggage else None))
    if endpoint != "POST /apply":
        return
    # Every /apply is one journey with one outcome.
    tally.add(run, "journey")
    tally.add(run, "outcome", *journey.cohort, journey.outcome)
    if journey.route is not None:
        tally.add(run, "route", journey.route)
    if journey.legal_reason is not None:
        tally.add(run, "legal", journey.legal_reason)
    if journey.outcome == "paused" or journey.hitl_skipped:
        tally.add(run, "hitl", "paused" if journey.outcome == "paused" else "skipped")


def endpoint_name(scope: dict) -> str:
    """'METHOD /pattern' of the matched route ('GET /status/{id}'), so names stay bounded."""
    route = scope.get("route")
    if not isinstance(route, Route) or scope["method"] not in (route.methods or ()):
        return "(unmatched)"
    return f"{scope['method']} {re.sub(r'{[^}]+}', '{id}', route.path)}"


# --- Serving -----------------------------------------------------------------------------------

def serve(*, host: str = "127.0.0.1", port: int = 8080, capacity: int = 8,
          service_ms: float = 5.0, on_ready: Callable[[str], object] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then let requests in flight finish and return."""

    def ready(url: str) -> None:
        print(f"esr target listening on {url}", flush=True)
        if on_ready is not None:
            on_ready(url)

    config = uvicorn.Config(
        create_app(capacity=capacity, service_ms=service_ms), host=host, port=port,
        backlog=BACKLOG, timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=STOP_GRACE_S,
        loop="uvloop", http="httptools", lifespan="off",
        log_config=None, log_level="warning", access_log=False, server_header=False)
    serve_until_stopped(config, ready)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m esr.demo.target",
                                     description="The bundled demo target of ESR.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--capacity", type=int, default=8, help="applications served at once")
    parser.add_argument("--service-ms", type=float, default=5.0, help="time to serve one")
    args = parser.parse_args(argv)
    serve(host=args.host, port=args.port, capacity=args.capacity, service_ms=args.service_ms)


if __name__ == "__main__":
    main()
