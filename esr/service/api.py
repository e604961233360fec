"""The service's HTTP API, versioned under /v1, its OpenAPI document generated from the
typed models below.

Every route but /healthz and signed report links needs a bearer token; an agency sees
its own runs only (another agency's run answers 404, exactly as an unknown id).
"""


import asyncio
import contextlib
import datetime as dt
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from esr import __version__
from esr.pool import ServicePool
from esr.run_directory import REPORT_CARD, new_run_id
from esr.scenario.stages import plan_stages
from esr.service.agencies import Caller, Forbidden, Unauthorized, authenticate
from esr.service.cards import build_report_card
from esr.service.dispatcher import Dispatcher
from esr.service.links import REPORT_FORMATS, report_link_valid, report_query
from esr.service.page import add_page
from esr.service.store import ENDED, IN_PROGRESS, QUEUED, REPORTING, Event, Run, Store
from esr.service.submissions import (
    MAX_SCALE,
    MAX_SCENARIO_BYTES,
    SCENARIO_FILE,
    Refused,
    Submission,
    accept,
)

LINK_TTL_S = 24 * 3600.0
KEEPALIVE_S = 15.0
PAGE_SIZE_MAX = 200
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
JSON_TYPE = "application/json"
# The largest JSON submission read: a scenario at the cap, each byte escaped, and the rest.
JSON_BODY_BYTES = 6 * MAX_SCENARIO_BYTES + 4096
# A Last-Event-ID the stream resumes after: a sequence number the store can hold (anything
# else replays from the start).
LAST_EVENT_ID = re.compile(r"[0-9]{1,18}")


# ---- the models ------------------------------------------------------------------------------


class ProblemOut(BaseModel):
    line: int = Field(description="1-based; 0 when the problem has no place in the file")
    column: int
    path: str = Field(description="key path such as citizens[1].template")
    message: str
    hint: str = ""


class ErrorOut(BaseModel):
    error: str
    problems: list[ProblemOut] = []


class RunSubmission(BaseModel):
    scenario: str = Field(description="the scenario, as YAML text")
    host: str | None = Field(None, description="load this host instead of the scenario's target")
    time_scale: float = Field(1.0, gt=0, le=MAX_SCALE,
                              description="multiply every duration by this")
    user_scale: float = Field(1.0, gt=0, le=MAX_SCALE,
                              description="multiply every citizen count by this")


class RunLinks(BaseModel):
    self: str
    events: str
    cancel: str
    summary: str
    report_links: str


class RunAccepted(BaseModel):
    id: str
    status: str
    queue_position: int | None
    links: RunLinks


class RunSettingsOut(BaseModel):
    host: str | None = None
    time_scale: float = 1.0
    user_scale: float = 1.0
    planned_s: float | None = None


class RunOut(BaseModel):
    id: str
    scenario: str
    status: str
    queue_position: int | None
    created_at: str
    started_at: str | None
    ended_at: str | None
    settings: RunSettingsOut
    live: dict[str, Any] | None = Field(None, description="the latest live figures")
    verdict: dict[str, Any] | None = Field(None, description="SLO verdict once reported")
    reason: str | None = None
    links: RunLinks


class RunList(BaseModel):
    runs: list[RunOut]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for older runs")


class EventOut(BaseModel):
    id: int = Field(description="the run's event sequence number (SSE id)")
    type: str = Field(description="status, stats, alert or done")
    at: str
    data: dict[str, Any]


class ReportLinksOut(BaseModel):
    expires_in_s: float
    html: str
    pdf: str
    json_: str = Field(alias="json")
    xml: str

    model_config = {"populate_by_name": True}


class Health(BaseModel):
    status: str
    version: str


class PoolWorker(BaseModel):
    id: str = Field(description="the worker's id at its master, or its standing worker's")
    host: str | None = None
    version: str | None = Field(None, description="its ESR version")
    capacity: dict[str, int] = Field(default_factory=dict,
                                     description="open_files limit and memory_bytes it has")
    citizens: int | None = Field(None, description="citizens it runs now")
    last_heard: float | None = Field(None, description="epoch seconds of its last word")


class PoolOut(BaseModel):
    enabled: bool = Field(description="false: each run's workers are local to the service")
    address: str | None = None
    min_workers: int | None = None
    busy: bool = Field(False, description="a run holds the pool now (whose is not said)")
    workers: list[PoolWorker] = Field(default_factory=list)


# Every refusal has the same body, a request that does not match the API (422) included.
ERRORS = {status: {"model": ErrorOut} for status in (401, 403, 404, 422)}
ERRORS[401]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"},
                                               "required": True}}
# How requests authenticate, as the OpenAPI document declares it (the check is `caller`'s).
BEARER = HTTPBearer(auto_error=False, scheme_name="AgencyToken",
                    description="an agency's token (esr_…), made by `esr-locust tokens create`")
# A live stream's events as Server-Sent Events: each event's `data` is one JSON object.
SSE_EVENT = {"type": "object", "required": ["id", "event", "data"], "properties": {
    "id": {"type": "string", "pattern": r"^\d+$",
           "description": "the run's event sequence number (send it back as Last-Event-ID)"},
    "event": {"enum": ["status", "stats", "alert", "done"]},
    "data": {"type": "string", "contentMediaType": "application/json",
             "description": "the event's figures as a JSON object, with its time as `at`"}}}
SUBMIT_BODY = {
    "requestBody": {"required": True, "content": {
        "application/yaml": {"schema": {"type": "string", "maxLength": MAX_SCENARIO_BYTES}},
        "application/json": {"schema": RunSubmission.model_json_schema()}}}}


# ---- the app ---------------------------------------------------------------------------------


class Failure(Exception):
    def __init__(self, status: int, message: str, problems: list | None = None,
                 headers: dict | None = None):
        self.status, self.message = status, message
        self.problems, self.headers = problems or [], headers or {}


@dataclass
class Service:
    store: Store
    dispatcher: Dispatcher
    link_key: bytes
    link_ttl_s: float = LINK_TTL_S
    public_url: str | None = None  # what links start with behind a proxy; else as asked
    pool: ServicePool | None = None  # standing workers, with serve --pool


class RunEvents:
    """Wakes the live streams of a run when its dispatcher thread writes an event."""

    def __init__(self):
        self.loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[str, asyncio.Event] = {}

    def notify(self, run_id: str) -> None:  # from any thread
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._fire, run_id)

    def _fire(self, run_id: str) -> None:
        event = self._waiting.pop(run_id, None)
        if event is not None:
            event.set()

    def waiter(self, run_id: str) -> asyncio.Event:
        """What the next event of the run sets: taken before reading the store, so an event
        written in between is never missed."""
        self.loop = asyncio.get_running_loop()
        return self._waiting.setdefault(run_id, asyncio.Event())


def create_app(service: Service, events: RunEvents) -> FastAPI:
    app = FastAPI(title="ESR service", version=__version__, openapi_url="/v1/openapi.json",
                  docs_url="/docs", redoc_url=None,
                  description="Rehearse public-service launches with synthetic citizens: "
                  "submit scenarios, watch them live, fetch their report cards.")

    _error_handlers(app)

    def caller(request: Request, _declared: Annotated[
            HTTPAuthorizationCredentials | None, Depends(BEARER)] = None) -> Caller:
        try:
            return authenticate(service.store, request.headers.get("authorization"))
        except Unauthorized as error:
            service.store.audit("auth_failed", client=_client(request), reason=str(error),
                                path=request.url.path[:200])
            raise Failure(401, str(error), headers={"WWW-Authenticate": "Bearer"}) from None

    def reader(who: Annotated[Caller, Depends(caller)]) -> Caller:
        return _scoped(who, "runs:read")

    def starter(who: Annotated[Caller, Depends(caller)]) -> Caller:
        return _scoped(who, "runs:start")

    def own_run(run_id: str, who: Caller) -> Run:
        run = service.store.run(run_id, agency=who.agency)
        if run is None:
            raise Failure(404, f"no run '{run_id[:80]}'")
        return run

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> Health:
        return Health(status="ok", version=__version__)

    @app.get("/v1/pool", response_model=PoolOut, tags=["service"], responses=ERRORS)
    def pool(who: Annotated[Caller, Depends(reader)]) -> PoolOut:
        """The standing workers that run this service's runs (serve --pool)."""
        return pool_out(service.pool)

    @app.post("/v1/runs", status_code=202, response_model=RunAccepted, tags=["runs"],
              openapi_extra=SUBMIT_BODY,
              responses={**ERRORS, 413: {"model": ErrorOut}, 415: {"model": ErrorOut},
                         429: {"model": ErrorOut, "headers": {"Retry-After": {
                             "description": "seconds until a queued place may be free",
                             "schema": {"type": "integer", "minimum": 1}, "required": True}}}})
    async def submit(request: Request, who: Annotated[Caller, Depends(starter)],
                     idempotency_key: Annotated[str | None, Header(max_length=200)] = None
                     ) -> JSONResponse:
        kind = _body_kind(request)
        submission = _submission(kind, await _body(request, kind))
        run = await asyncio.to_thread(_start, service, who, submission, idempotency_key,
                                      _client(request))
        return JSONResponse(await asyncio.to_thread(_accepted, service, run.id),
                            status_code=202)

    @app.get("/v1/runs", response_model=RunList, tags=["runs"], responses=ERRORS)
    def list_runs(who: Annotated[Caller, Depends(reader)],
                  cursor: Annotated[str | None, Query(pattern=r"^\d{1,18}$")] = None,
                  limit: Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX)] = 50) -> Response:
        runs = service.store.listed_runs(who.agency, before=int(cursor) if cursor else None,
                                         limit=limit + 1)
        listed = ",".join(_with_links(run_id, fields) for _, run_id, fields in runs[:limit])
        next_cursor = str(runs[limit - 1][0]) if len(runs) > limit else None
        return Response(f'{{"runs":[{listed}],"next_cursor":{json.dumps(next_cursor)}}}',
                        media_type="application/json")

    @app.get("/v1/runs/{run_id}", response_model=RunOut, tags=["runs"], responses=ERRORS)
    def get_run(run_id: str, who: Annotated[Caller, Depends(reader)]) -> RunOut:
        return _run_out(own_run(run_id, who))

    @app.post("/v1/runs/{run_id}/cancel", status_code=202, response_model=RunOut,
              tags=["runs"], responses={**ERRORS, 409: {"model": ErrorOut}})
    def cancel(run_id: str, request: Request,
               who: Annotated[Caller, Depends(starter)]) -> JSONResponse:
        run = own_run(run_id, who)
        if run.status in (*ENDED, REPORTING):
            raise Failure(409, f"run {run.id}'s load has already ended ({run.status}); there is "
                          "nothing left to cancel")
        service.dispatcher.cancel(run)
        service.store.audit("run_cancel", agency=who.agency, token_id=who.token.id,
                            run_id=run.id, client=_client(request))
        return JSONResponse(_run_out(service.store.run(run.id)).model_dump(),
                            status_code=202)

    @app.get("/v1/runs/{run_id}/events", tags=["runs"],
             responses={**ERRORS, 200: {
                 "description": "Server-Sent Events (status, stats, alert, done), or with "
                 "?after=N the same events as JSON",
                 "content": {"text/event-stream": {"schema": SSE_EVENT},
                             "application/json": {"schema": {
                                 "type": "array",
                                 "items": EventOut.model_json_schema()}}}}})
    async def run_events(run_id: str, who: Annotated[Caller, Depends(reader)],
                         after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
                         last_event_id: Annotated[str | None, Header()] = None) -> Response:
        run = own_run(run_id, who)
        if after is not None:
            return JSONResponse([_event_out(e) for e in service.store.events(run.id, after)])
        start = int(last_event_id) if LAST_EVENT_ID.fullmatch(last_event_id or "") else 0
        return StreamingResponse(_stream(service, events, run.id, start),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    @app.get("/v1/runs/{run_id}/summary", tags=["reports"], responses={
        **ERRORS, 409: {"model": ErrorOut},
        200: {"content": {"application/json": {"schema": {"type": "object"}}}}})
    def summary(run_id: str, request: Request,
                who: Annotated[Caller, Depends(reader)]) -> Response:
        return _report_file(service, own_run(run_id, who), "json", who, request)

    @app.get("/v1/runs/{run_id}/report-links", response_model=ReportLinksOut, tags=["reports"],
             responses=ERRORS)
    def report_links(run_id: str, request: Request,
                     who: Annotated[Caller, Depends(reader)]) -> ReportLinksOut:
        run = own_run(run_id, who)
        base = (service.public_url or str(request.base_url)).rstrip("/")
        urls = {ext: f"{base}/v1/runs/{run.id}/report.{ext}?"
                     f"{report_query(service.link_key, run.id, ext, service.link_ttl_s)}"
                for ext in REPORT_FORMATS}
        return ReportLinksOut(expires_in_s=service.link_ttl_s, **urls)

    # A bearer token, or none with a signed link's expires and signature.
    @app.get("/v1/runs/{run_id}/report.{extension}", tags=["reports"],
             openapi_extra={"security": [{BEARER.scheme_name: []}, {}]}, responses={
        **ERRORS, 409: {"model": ErrorOut},
        200: {"description": "the report card in that format: html, pdf, json (summary.json) "
              "or xml (JUnit); with a bearer token, or with a signed link's expires and "
              "signature", "content": {"text/html": {}, "application/pdf": {},
                                       "application/json": {}, "application/xml": {}}}})
    def report_file(run_id: str, extension: str, request: Request,
                    expires: Annotated[str | None, Query(max_length=20)] = None,
                    signature: Annotated[str | None, Query(max_length=128)] = None) -> Response:
        authorization = request.headers.get("authorization")
        if extension not in REPORT_FORMATS:
            raise Failure(404, f"no report format '{extension[:20]}' (html, pdf, json, xml)")
        if signature is not None or authorization is None:
            if not report_link_valid(service.link_key, run_id, extension, expires, signature):
                service.store.audit("link_refused", run_id=run_id[:80],
                                    client=_client(request))
                raise Failure(404, "this link is not valid (wrong, tampered or expired); ask "
                              "for a new one")
            run = service.store.run(run_id)
            if run is None:
                raise Failure(404, f"no run '{run_id[:80]}'")
            return _report_file(service, run, extension, None, request)
        who = _scoped(caller(request), "runs:read")
        return _report_file(service, own_run(run_id, who), extension, who, request)

    add_page(app, service)
    return app


# ---- submitting ------------------------------------------------------------------------------


def pool_out(pool: ServicePool | None) -> PoolOut:
    if pool is None:
        return PoolOut(enabled=False)
    view = pool.view()
    workers = [PoolWorker(**{k: v for k, v in worker.items() if v is not None})
               for worker in view["workers"] if worker.get("id")]
    return PoolOut(enabled=True, address=view["address"], min_workers=view["min_workers"],
                   busy=view["busy"], workers=workers)


def _body_kind(request: Request) -> str:
    """The submission's media type, refused with 415 before its body is read."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in YAML_TYPES and kind != JSON_TYPE:
        raise Failure(415, f"send the scenario as {YAML_TYPES[0]}, or as {JSON_TYPE} "
                      '{"scenario": "<yaml text>", "host": …}')
    return kind


async def _body(request: Request, kind: str) -> bytes:
    """The request body, refused with 413 as soon as it passes what a scenario of the size
    cap can take: the scenario itself as YAML; as JSON, that scenario with every character
    escaped (up to 6 bytes each, \\u00e9) in its envelope. `accept` then holds the
    scenario itself to the cap."""
    limit = MAX_SCENARIO_BYTES if kind in YAML_TYPES else JSON_BODY_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise Failure(413, f"the body is {int(declared):,} bytes; the service accepts "
                      f"scenarios up to {MAX_SCENARIO_BYTES:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Failure(413, f"the body passes {limit:,} bytes; the service accepts "
                          f"scenarios up to {MAX_SCENARIO_BYTES:,}")
    return bytes(body)


def _submission(kind: str, body: bytes) -> Submission:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise Failure(422, "the body is not UTF-8 text") from None
    if kind in YAML_TYPES:
        return Submission(scenario=text)
    try:
        data = RunSubmission.model_validate_json(body)
    except ValidationError as error:
        raise Failure(422, "the JSON body does not match RunSubmission", _pydantic(error)) \
            from None
    return Submission(data.scenario, data.host, data.time_scale, data.user_scale)


def _start(service: Service, who: Caller, submission: Submission, key: str | None,
           client: str) -> Run:
    """Check a submission and queue it; the same Idempotency-Key and body give the same run."""
    store = service.store
    if key is not None:
        earlier = store.run_by_idempotency_key(who.agency, key)
        if earlier is not None:
            return _same_body(earlier, submission)
    try:
        scenario = accept(who, submission)
    except Refused as refused:
        raise Failure(refused.status, refused.message, refused.problems) from None
    if store.count_runs(who.agency, QUEUED) >= who.policy.max_queued:
        raise Failure(429, f"agency '{who.agency}' already has {who.policy.max_queued} runs "
                      "queued; wait for one to start", headers={
                          "Retry-After": str(_retry_after(store, who))})
    run_id = new_run_id(scenario.name)
    run_dir = store.path.parent / "runs" / who.agency / run_id
    run_dir.mkdir(parents=True)
    (run_dir / SCENARIO_FILE).write_text(submission.scenario)
    planned = max(p.end for p in plan_stages(scenario, submission.time_scale,
                                             submission.user_scale))
    try:
        run = store.add_run(run_id=run_id, agency=who.agency, token_id=who.token.id,
                            scenario_name=scenario.name,
                            settings={**submission.settings, "planned_s": round(planned, 3)},
                            run_dir=run_dir, body_sha256=submission.sha256,
                            idempotency_key=key)
    except sqlite3.IntegrityError:  # the same key, submitted twice at the same moment
        return _same_body(store.run_by_idempotency_key(who.agency, key), submission)
    store.audit("run_create", agency=who.agency, token_id=who.token.id, run_id=run.id,
                client=client, scenario=scenario.name[:200])
    service.dispatcher.wake()
    return run


def _accepted(service: Service, run_id: str) -> dict:
    """The answer to a submission: the run as it stands now (the queue may have started it)."""
    run = service.store.run(run_id)
    return RunAccepted(id=run.id, status=run.status,
                       queue_position=run.queue_position,
                       links=RunLinks(**_links(run.id))).model_dump()


def _same_body(run: Run, submission: Submission) -> Run:
    if run.body_sha256 != submission.sha256:
        raise Failure(422, "this Idempotency-Key was used with a different body; use a new key "
                      "for a different run")
    return run


def _retry_after(store: Store, who: Caller) -> int:
    """Seconds until the agency's earliest run in progress should end (at least 5)."""
    ends = []
    for run in store.runs(who.agency, limit=PAGE_SIZE_MAX):
        if run.status in IN_PROGRESS and run.started_at:
            started = _epoch(run.started_at)
            ends.append(started + (run.settings.get("planned_s") or 60) - time.time())
    return max(5, round(min(ends))) if ends else 30


# ---- reading ---------------------------------------------------------------------------------


def _run_out(run: Run) -> RunOut:
    return RunOut(id=run.id, scenario=run.scenario_name, status=run.status,
                  queue_position=run.queue_position, created_at=run.created_at,
                  started_at=run.started_at, ended_at=run.ended_at,
                  settings=RunSettingsOut(**run.settings), live=run.live, verdict=run.verdict,
                  reason=run.reason, links=RunLinks(**_links(run.id)))


def _links(run_id: str) -> dict[str, str]:
    base = f"/v1/runs/{run_id}"
    return {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel",
            "summary": f"{base}/summary", "report_links": f"{base}/report-links"}


def _with_links(run_id: str, fields: str) -> str:
    """A listed run's JSON object (the store's, see LISTED_RUN) with its links added."""
    return f'{fields[:-1]},"links":{json.dumps(_links(run_id))}}}'


def _event_out(event: Event) -> dict:
    return {"id": event.seq, "type": event.type, "at": event.at, "data": event.data}


async def _stream(service: Service, events: RunEvents, run_id: str, after: int
                  ) -> AsyncIterator[bytes]:
    """Replay what the watcher missed from the store, then follow; end after `done`."""
    yield b"retry: 2000\n\n"
    while True:
        waiter = events.waiter(run_id)
        batch = await asyncio.to_thread(service.store.events, run_id, after)
        for event in batch:
            after = event.seq
            yield (f"id: {event.seq}\nevent: {event.type}\n"
                   f"data: {json.dumps({**event.data, 'at': event.at})}\n\n").encode()
            if event.type == "done":
                return
        if not batch:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), KEEPALIVE_S)
                continue
            yield b": keep-alive\n\n"


def _report_file(service: Service, run: Run, extension: str, who: Caller | None,
                 request: Request) -> Response:
    if run.status not in ENDED:
        raise Failure(409, f"run {run.id} is {run.status}; its report card comes when it ends")
    path = run.run_dir / REPORT_CARD[REPORT_FORMATS[extension]]
    if not path.is_file():
        if extension != "pdf" or not (run.run_dir / "summary.json").is_file():
            raise Failure(404, f"run {run.id} has no report card in {extension}"
                          + (f" ({run.reason})" if run.reason else ""))
        problem = build_report_card(run.run_dir, "pdf")
        if problem:
            raise Failure(404, problem)
    service.store.audit("report_download", agency=run.agency,
                        token_id=who.token.id if who else None, run_id=run.id,
                        client=_client(request), format=extension,
                        via="token" if who else "signed link")
    media = {"html": "text/html; charset=utf-8", "pdf": "application/pdf",
             "json": "application/json", "xml": "application/xml"}[extension]
    return FileResponse(path, media_type=media, headers={
        "Content-Security-Policy": "default-src 'none'; img-src data:; style-src "
        "'unsafe-inline'; script-src 'unsafe-inline'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


# ---- errors ----------------------------------------------------------------------------------


def _scoped(who: Caller, scope: str) -> Caller:
    try:
        who.require(scope)
    except Forbidden as error:
        raise Failure(403, str(error)) from None
    return who


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Failure)
    async def failure(request: Request, error: Failure) -> JSONResponse:
        return JSONResponse({"error": error.message, "problems": error.problems},
                            status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "the request does not match the API",
                             "problems": _pydantic(error)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail), "problems": []},
                            status_code=error.status_code, headers=error.headers)


def _pydantic(error: ValidationError | RequestValidationError) -> list[dict]:
    return [{"line": 0, "column": 0, "path": ".".join(str(p) for p in e["loc"]),
             "message": str(e["msg"])[:300], "hint": ""} for e in error.errors()]


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()

