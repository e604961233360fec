"""Citizens acting: one journey per citizen, one request per Locust task.

A journey is a list of steps. Each Locust task run sends exactly one request
(a step, or a retry of one), and the pauses between them are Locust's wait
time. That makes Locust's graceful stop mean what ESR promises: a citizen
finishes the request it is in, and is stopped while thinking, never mid-request.

Outcome rules (the design's wire conventions): a journey ends in exactly one of
approved, rejected (response JSON `status`), blocked (HTTP 451 or X-ESQ-Verdict),
paused (202 with X-HITL-Pending), abandoned (walked away after a step far beyond
its patience), error (ended on a failed request, or on a step whose templates failed and
sent nothing), completed (ended well but the
response named no decision), or incomplete (cut short by the end of the run).
"""

from __future__ import annotations

import errno
import json
import logging
import time
from operator import itemgetter
from random import getrandbits

import gevent
import orjson
from locust import task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

from esr.engine.connections import KEEPALIVE_IDLE_S, Dialer, hang_up
from esr.engine.locust_compat import (
    StopNotice,
    cookie_jar_of,
    is_http_error,
    no_turn_after_waiting,
    request_meta,
    transport_cause,
    use_cookie_jar,
)
from esr.engine.probes import response_facts
from esr.population.citizens import FIELD_AT, citizen_of
from esr.scenario.model import CitizenGroup, Step
from esr.scenario.templating import check_output, compile_template, failure_reason, is_template
from esr.wire import (
    BAGGAGE_HEADER,
    CITIZEN_HEADER,
    DEFAULT_BODY_FIELDS,
    REQUEST_TIMEOUT_S,
    TRACEPARENT_HEADER,
    trace_id_in,
    traceparent,
)

logger = logging.getLogger(__name__)

# A step slower than this many times the citizen's patience makes it walk away.
WALK_AWAY_FACTOR = 2.0
DEFAULT_STEP = Step(name="apply", method="POST", path="/apply")
_default_body = itemgetter(*(FIELD_AT[name] for name in DEFAULT_BODY_FIELDS))  # of a row
# ESR encodes JSON bodies itself, with orjson: Python's json module took a tenth of the CPU
# of each request, the largest part of what ESR added to it. These are the headers Locust's
# json= would add, unless the step sets them.
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
# Headers of W3C trace context: a step that sets one, in any case, sends its own.
TRACE_HEADERS = (TRACEPARENT_HEADER, BAGGAGE_HEADER)


def encode_json(value) -> str:
    # As text: orjson's bytes, sent as they are, left 3.6 KB more resident memory per
    # citizen after a burst of first requests (allocator fragmentation; measured with
    # benchmarks/engine.py), the text costs 0.1 us more.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


# ---- rendering steps ---------------------------------------------------------------------------

# Steps whose templates failed log each distinct reason once, up to this many.
LOGGED_FAILURES = 10


class StepNotRendered(Exception):
    """A step's templates failed, or went past a limit (templating.py): nothing is sent."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class StepRenderer:
    """Turns a step's templates into a request for one citizen, compiled once per run."""

    def __init__(self, step: Step):
        self.step = step
        self.path = self._compile(step.path)
        self.json = self._compile(step.json)
        self.form = self._compile(step.form)
        self.body = self._compile(step.body)
        # A step's trace headers, named in lower case, take the place of ESR's (see act).
        self.headers = self._compile({name.lower() if name.lower() in TRACE_HEADERS else name:
                                      value for name, value in (step.headers or {}).items()})
        named = {name.lower() for name in step.headers or {}}
        self.json_headers = {k: v for k, v in JSON_HEADERS.items() if k.lower() not in named}
        self.failures: set[str] = set()  # reasons logged already

    def request(self, row: tuple, variables: dict, run_id: str) -> tuple[str, dict, dict]:
        """The step for one citizen, given as its row (citizens.CITIZEN_FIELDS): its path, its
        own headers, and its body as keywords for Locust's client. StepNotRendered when its
        templates fail."""
        if self.step is DEFAULT_STEP:  # the hot path of most scenarios: no templates at all
            body = dict(zip(DEFAULT_BODY_FIELDS, _default_body(row), strict=True))
            return DEFAULT_STEP.path, self.json_headers, {"data": encode_json(body)}
        try:
            return self._render({"citizen": citizen_of(row), "vars": variables,
                                 "run_id": run_id})
        except Exception as error:  # a template's error, or one of ESR's limits
            reason = failure_reason(error)
            if reason not in self.failures and len(self.failures) < LOGGED_FAILURES:
                self.failures.add(reason)
                logger.warning("step '%s' sent nothing: %s (its citizens' journeys end in "
                               "error)", self.step.name, reason)
            raise StepNotRendered(reason) from None

    def _render(self, scope: dict) -> tuple[str, dict, dict]:
        headers = self.headers(scope)
        if self.step.json is not None:
            return (str(self.path(scope)), {**self.json_headers, **headers},
                    {"data": check_output(encode_json(self.json(scope)))})
        if self.step.form is not None:
            payload = {"data": {k: str(v) for k, v in self.form(scope).items()}}
        elif self.step.body is not None:
            payload = {"data": str(self.body(scope))}
        else:
            payload = {}
        return str(self.path(scope)), headers, payload

    def _compile(self, value):
        """A function of the scope: templates rendered, a lone {{ expr }} keeping its type."""
        if isinstance(value, dict):
            parts = {k: self._compile(v) for k, v in value.items()}
            return lambda scope: {k: part(scope) for k, part in parts.items()}
        if isinstance(value, list):
            parts = [self._compile(v) for v in value]
            return lambda scope: [part(scope) for part in parts]
        if is_template(value):
            return compile_template(value)
        return lambda scope: value


# ---- what a response means ---------------------------------------------------------------------


def failure_of(status: int, error: Exception | None, expect: tuple[int, ...]) -> str | None:
    """Why a response counts as failed, or None: by the step's expected statuses, else by class."""
    if status == 0 or (error is not None and not is_http_error(error)):
        return transport_failure(error) if error is not None else "no response"
    if expect:
        return None if status in expect else f"unexpected status {status}"
    if status < 400 or status == 451:  # 451 is a legal verdict, not a broken service
        return None
    return f"HTTP {status}"


def transport_failure(error: Exception) -> str:
    """A failure on the wire, named by its cause: TimeoutError, ConnectionRefusedError, EMFILE.

    geventhttpclient wraps every cause in RetriesExceeded, which would hide a target that
    is too slow (timeouts) behind the same word as a load generator out of files or ports.
    """
    cause = transport_cause(error)
    if type(cause) is OSError and cause.errno in errno.errorcode:  # EMFILE, EADDRNOTAVAIL, …
        return errno.errorcode[cause.errno]
    return type(cause).__name__


def decision_of(response, facts: dict) -> str | None:
    """The business outcome a response states, if any."""
    if "blocked" in facts:
        return "blocked"
    if "paused" in facts:
        return "paused"
    content = response.content
    if not content or b'"status"' not in content:  # cheap test before parsing
        return None
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses and Python reads: integers beyond 64 bits, NaN
            data = json.loads(content)
        except ValueError:  # not JSON (or not UTF-8): no decision stated
            return None
    decided = data.get("status") if isinstance(data, dict) else None
    return decided if decided in ("approved", "rejected") else None


def extract(source: str, response, status: int):
    if source == "status":
        return status
    kind, _, rest = source.partition(".")
    if kind == "header":
        return (getattr(response, "headers", None) or {}).get(rest)
    value = response.json()
    for key in rest.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


# ---- the citizen -------------------------------------------------------------------------------


_CITIZEN_ID, _AGE_BAND, _VETERAN = FIELD_AT["citizen_id"], FIELD_AT["age_band"], FIELD_AT["veteran"]


class Visit:
    """One citizen's way through the journey.

    The citizen is kept as its row (citizens.CitizenStream.next_row), a dict of it made for
    each request that needs one: citizens thinking mid-journey are most of a run's, and a
    dict of each took 832 bytes more."""

    __slots__ = ("row", "context", "step", "attempt", "requests", "frustrated", "variables",
                 "trace_id", "baggage")

    def __init__(self, row: tuple, context: dict, baggage: str | None):
        self.row = row
        self.context = context  # on its requests: its cohort (shared, never changed)
        self.step = self.attempt = self.requests = 0
        self.frustrated = False
        self.variables: dict = {}
        # W3C trace context, unless the scenario turns it off (baggage None): the journey is
        # one trace, each of its requests a span of it (wire.py).
        self.baggage = baggage
        self.trace_id = None if baggage is None else f"{getrandbits(128) or 1:032x}"


class CitizenUser(StopNotice, FastHttpUser):
    """Base of the generated class of each citizen group; the compiler sets `group`."""

    # A citizen's own state in slots: added to Locust's attributes in its __dict__, they made
    # that dict a larger one of its own (464 bytes instead of 136, for every citizen).
    __slots__ = ("esr", "behavior", "steps", "visit", "pause", "in_flight", "arrival", "random",
                 "cookies")
    abstract = True
    group: CitizenGroup
    group_index: int = 0
    network_timeout = REQUEST_TIMEOUT_S
    connection_timeout = REQUEST_TIMEOUT_S

    def __init__(self, environment) -> None:
        super().__init__(environment)
        Dialer.of(environment).adopt(self.client)  # see connections.py

    def on_start(self) -> None:
        self.esr = self.environment.esr
        self.behavior = self.group.behavior
        self.steps = self.esr.renderers
        self.visit: Visit | None = None
        self.pause = 0.0
        self.in_flight = False
        self.arrival: float | None = None  # open model: when this citizen was due to arrive
        if self.esr.arrivals is not None:
            no_turn_after_waiting(self)  # it waits in wait_time() for its next arrival
        self.random = self.esr.random  # one per process: a Random each would cost 2.5 KB a user
        # Cookies belong to one citizen's visit: the jar is emptied for each new citizen, and a
        # one-request journey keeps none (http.cookiejar took 6% of each request's CPU).
        self.cookies = cookie_jar_of(self.client) if len(self.steps) > 1 else None
        use_cookie_jar(self.client, self.cookies)

    def wait_time(self) -> float:
        # Called while Locust counts the user as waiting, so a stop may end it here.
        if self.visit is None and self.esr.arrivals is not None:
            self.arrival = self.esr.arrivals.next(lambda: hang_up(self.client))
            if self.arrival is None:
                raise StopUser()  # retired: enough other citizens are idle (arrivals.py)
            return 0.0
        return self.pause

    def context(self) -> dict:
        return self.visit.context if self.visit else {}

    @task
    def act(self) -> None:
        # Locust kills a citizen it finds thinking, but the kill lands a moment later: a
        # citizen whose pause just ended could start a request meanwhile, to be cut off
        # mid-flight (sent, never counted). It leaves instead once asked to stop (StopNotice).
        if self.stop_asked:
            raise StopUser()
        if self.visit is None:
            if self.esr.arrivals is not None:
                if self.arrival is None:
                    return  # the first run of an open-model citizen waits for an arrival
                due, self.arrival = self.arrival, None
                if not self.esr.arrivals.begin(due):
                    return  # too late to start: dropped (arrivals.py)
            row = self.esr.next_citizen(self.group_index)
            self.visit = Visit(row, self.esr.cohort_context(row[_AGE_BAND], row[_VETERAN]),
                               self.esr.baggage(row[_AGE_BAND]))
            self.esr.probes.started += 1
            if self.cookies is not None:
                self.cookies.clear()
        visit = self.visit
        renderer = self.steps[visit.step]
        step = renderer.step
        try:
            path, own_headers, payload = renderer.request(visit.row, visit.variables,
                                                          self.esr.run_id)
        except StepNotRendered as failure:  # counted with the step's errors; nothing sent
            self.esr.probes.step_failed(step.name, failure.reason)
            return self._end("error")
        headers = {**self.esr.headers, CITIZEN_HEADER: visit.row[_CITIZEN_ID]}
        if visit.trace_id is not None:  # the journey's trace, a new span
            headers[TRACEPARENT_HEADER] = traceparent(visit.trace_id, getrandbits(64))
            headers[BAGGAGE_HEADER] = visit.baggage
        headers.update(own_headers)  # the step's own win
        jitter_ms = self.random.uniform(0, self.esr.jitter_ms) if self.esr.jitter_ms else 0.0
        injected = None
        if self.esr.faults:  # chaos on the client side: added latency, injected failures
            jitter_ms, injected = self._faults(step.name, jitter_ms)
        if jitter_ms:
            gevent.sleep(jitter_ms / 1000)
        self.in_flight = True
        self.esr.requests_sent += 1
        self.esr.requests_in_flight += 1
        try:
            with self.client.request(step.method, path, name=step.name, headers=headers,
                                     catch_response=True, **payload) as response:
                status = response.status_code or 0
                meta = request_meta(response)
                failure = failure_of(status, meta["exception"], step.expect) or injected
                meta["response_time"] += jitter_ms
                queued_ms = Dialer.of(self.environment).files.waited_s() * 1000
                if queued_ms:  # a wait for a free file: ESR's own queue, not the target's
                    meta["response_time"] = max(0.0, meta["response_time"] - queued_ms)
                    self.esr.probes.waited_for_socket(queued_ms)
                # Read the wire conventions once; the probes' request listener gets them too.
                facts = meta["context"]["facts"] = response_facts(response, status)
                if failure:
                    response.failure(failure)
                    # The errors probe keeps one failing request's trace of each kind, for the
                    # report card: whichever traceparent it carried, ESR's or the step's own.
                    meta["context"]["trace_id"] = trace_id_in(headers.get(TRACEPARENT_HEADER))
                else:
                    response.success()
        finally:
            self.esr.requests_in_flight -= 1
        self.in_flight = False
        visit.requests += 1
        self._after(visit, step, response, status, failure, facts, meta["response_time"] / 1000)
        # A long pause: like a browser, hold no idle connection meanwhile (connections.py).
        # An open-model citizen whose journey ended does not pause but waits for its next
        # arrival, keeping its connection as k6 keeps a VU's (it hangs up if left idle long,
        # arrivals.py).
        pausing = self.visit is not None or self.esr.arrivals is None
        if pausing and self.pause > KEEPALIVE_IDLE_S:
            hang_up(self.client)

    def _faults(self, name: str, delay_ms: float) -> tuple[float, str | None]:
        now = time.time()
        injected = None
        for fault in self.esr.faults:
            if not fault.applies(name, now):
                continue
            if fault.kind == "latency":
                delay_ms += fault.amount
            elif self.random.random() < fault.amount:
                injected = "injected failure (chaos)"
        return delay_ms, injected

    def _after(self, visit: Visit, step: Step, response, status: int, failure: str | None,
               facts: dict, elapsed_s: float) -> None:
        visit.frustrated |= elapsed_s > self.behavior.patience
        if failure and visit.attempt < self.behavior.retries:
            visit.attempt += 1
            self.pause = self.esr.scaled(self.behavior.think_time.low)
            return
        decision = "error" if failure else decision_of(response, facts)
        if decision in ("error", "blocked", "paused"):
            return self._end(decision)
        for name, source in (step.extract or {}).items():
            try:
                visit.variables[name] = extract(source, response, status)
            except Exception:  # a body that is not JSON: the variable stays empty
                visit.variables[name] = None
        if visit.step + 1 == len(self.steps):
            return self._end(decision or "completed")
        if elapsed_s > WALK_AWAY_FACTOR * self.behavior.patience:
            return self._end("abandoned")
        visit.step += 1
        visit.attempt = 0
        self.pause = self.esr.think(step.think_time or self.behavior.think_time, self.random)

    def _end(self, outcome: str) -> None:
        row = self.visit.row
        traits = self.esr.report_traits
        self.esr.probes.journey(self.group.name, row[_AGE_BAND], row[_VETERAN],
                                outcome, self.visit.frustrated,
                                tuple((t, row[FIELD_AT[t]]) for t in traits) if traits else ())
        self.visit = None
        self.pause = self.esr.think(self.behavior.think_time, self.random)

    def on_stop(self) -> None:
        if self.arrival is not None:  # stopped holding an arrival it never started
            self.esr.arrivals.unstarted(self.arrival)
            self.arrival = None
        if self.in_flight:  # killed mid-request despite the stop timeout: say so, don't guess
            self.esr.probes.unaccounted += 1
            logger.warning("a citizen was stopped with a request in flight (stop timeout %ss, "
                           "runner %s)", self.environment.stop_timeout,
                           self.environment.runner.state)
        if self.visit is not None and self.visit.requests:
            self._end("incomplete")
