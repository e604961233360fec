"""EsrClient against an ESR service (`esr-locust serve`): the same methods as a local client,
over HTTP with a bearer token. What the service refuses becomes ESR's own errors, with the
service's message (a scenario's located problems as a ScenarioError)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from httpx_sse import connect_sse

from esr import __version__
from esr.client import EsrClient, Report
from esr.errors import BadInput, EsrError, Problem, ScenarioError
from esr.service import DEFAULT_URL
from esr.watching import Console

ENDED = ("passed", "failed", "cancelled", "error", "interrupted")
# Exit codes of `esr-locust submit --wait`, as `run`'s, by the run's final status.
EXIT_CODES = {"passed": 0, "failed": 1}
RECONNECT_S = 1.0
# A PDF is built when first asked for: on a busy machine that takes a while.
REPORT_BUILD_S = 300.0
# How long a live stream may say nothing, keep-alives included, before it is resumed.
READ_TIMEOUT_S = 60.0
EXTENSIONS = {"html": "html", "pdf": "pdf", "json": "json", "junit": "xml", "xml": "xml"}


class ServiceRefused(BadInput):
    """The service refused a request (4xx): the token, the scenario, a limit, an unknown id."""

    def __init__(self, status: int, message: str, retry_after: str | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class ServiceUnavailable(EsrError):
    """The service could not be reached, or failed (5xx)."""


@dataclass
class RemoteJob:
    """A run on a service, as last read."""

    id: str
    status: str
    data: dict = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        return self.status in ENDED

    @property
    def verdict(self) -> dict | None:
        return self.data.get("verdict")

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 3)


class ServiceClient(EsrClient):
    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout_s: float = 30.0):
        token = token or os.environ.get("ESR_TOKEN")
        self.url = (url or os.environ.get("ESR_URL") or DEFAULT_URL).rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s, headers={
            "User-Agent": f"esr-locust/{__version__}",
            **({"Authorization": f"Bearer {token}"} if token else {})})

    # ---- runs --------------------------------------------------------------------------------

    def run(self, scenario: str | Path, *, host: str | None = None, time_scale: float = 1.0,
            user_scale: float = 1.0, idempotency_key: str | None = None) -> RemoteJob:
        """Submit a scenario file; the job at once (queued or starting)."""
        path = Path(scenario)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise BadInput(f"cannot read the scenario {path}: {error}") from None
        body = {"scenario": text, "host": host, "time_scale": time_scale,
                "user_scale": user_scale}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        answer = self._call("POST", "/v1/runs", json=body, headers=headers, scenario=path)
        return RemoteJob(answer["id"], answer["status"], answer)

    def job(self, job_id: str) -> RemoteJob:
        answer = self._call("GET", f"/v1/runs/{job_id}")
        return RemoteJob(answer["id"], answer["status"], answer)

    def runs(self, limit: int = 1000) -> list[RemoteJob]:
        """The agency's runs, newest first."""
        found, cursor = [], None
        while len(found) < limit:
            page = self._call("GET", "/v1/runs", params={
                "limit": min(200, limit - len(found)), **({"cursor": cursor} if cursor else {})})
            found += [RemoteJob(run["id"], run["status"], run) for run in page["runs"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return found

    def stop(self, job_id: str) -> RemoteJob:
        """Stop a run gracefully; its report card is still built."""
        answer = self._call("POST", f"/v1/runs/{job_id}/cancel")
        return RemoteJob(answer["id"], answer["status"], answer)

    def wait(self, job_id: str, timeout: float | None = None) -> RemoteJob:
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.job(job_id)
        if not job.done:
            for _ in self.events(job_id, deadline=deadline):
                pass
            job = self.job(job_id)
        if not job.done:
            raise TimeoutError(f"run {job_id} is still {job.status}")
        return job

    # ---- live --------------------------------------------------------------------------------

    def events(self, job_id: str, after: int = 0, deadline: float | None = None
               ) -> Iterator[dict]:
        """Every event of the run ({"type", "id", **data}) until `done`; a dropped connection
        is resumed with Last-Event-ID, so nothing is missed or repeated. With a deadline
        (time.monotonic()), stop there, even while the run is quiet (queued, say): the clock
        is read on every line, the service's keep-alives included. A run found ended at a
        keep-alive ends the events too, `done` or not."""
        while not _passed(deadline):
            headers = {"Last-Event-ID": str(after)} if after else {}
            read_s = READ_TIMEOUT_S if deadline is None else \
                max(0.1, min(READ_TIMEOUT_S, deadline - time.monotonic()))
            try:
                with connect_sse(self.http, "GET", f"/v1/runs/{job_id}/events",
                                 headers=headers, timeout=httpx.Timeout(
                                     10.0, read=read_s)) as source:
                    if source.response.status_code != 200:
                        source.response.read()
                        self._check(source.response)
                    for event in _server_sent_events(source.response.iter_lines(), deadline):
                        if event is None:  # quiet for a while: has the run ended unannounced?
                            if self.job(job_id).done:
                                return
                            continue
                        after = event["id"]
                        yield event
                        if event["type"] == "done":
                            return
            except httpx.TransportError:
                if not _passed(deadline):
                    time.sleep(RECONNECT_S)

    def live(self, job_id: str) -> Iterator[dict]:
        """The live figures (phase, citizens, requests/s, p95, error rate, outcomes)."""
        for event in self.events(job_id):
            if event["type"] == "stats":
                yield event

    def watch(self, job_id: str, stream=None) -> RemoteJob:
        """Print the run's live lines (status, figures, alerts) until it ends."""
        console = Console(stream)
        for event in self.events(job_id):
            console(event["type"], event)
        return self.job(job_id)

    # ---- reports -----------------------------------------------------------------------------

    def report(self, job_id: str, format: str = "html",  # noqa: A002 - the API's word
               out_dir: str | Path | None = None) -> Report:
        """The report card in one format, once the run has ended: a signed link anyone may
        open (.url) and the file downloaded (.path; under reports/<run-id>/ by default)."""
        extension = _extension(format)
        self.wait(job_id)
        link = self.link(job_id, format)
        # Fetched from the service this client talks to, by the link's path and signature: the
        # host in the link is the service's idea of its own name (the Host it was asked by),
        # and the token goes nowhere else.
        parts = urlsplit(link)
        content = self._request("GET", f"{parts.path}?{parts.query}",
                                timeout=httpx.Timeout(30.0, read=REPORT_BUILD_S)).content
        folder = Path(out_dir) if out_dir else Path("reports") / job_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"report.{extension}"
        path.write_bytes(content)
        return Report(format, path, link)

    def link(self, job_id: str, format: str = "html") -> str:  # noqa: A002 - the API's word
        """A signed link to the run's report card in one format, which a person opens without
        the token (the card itself comes when the run has ended)."""
        return self._call("GET", f"/v1/runs/{job_id}/report-links")[_extension(format)]

    # ---- HTTP --------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **options) -> httpx.Response:
        try:
            response = self.http.request(method, path, **options)
        except httpx.TransportError as error:
            raise ServiceUnavailable(f"cannot reach the ESR service at {self.url}: "
                                     f"{error}") from None
        self._check(response)
        return response

    def _call(self, method: str, path: str, scenario: Path | None = None, **options) -> dict:
        try:
            return self._request(method, path, **options).json()
        except ScenarioError as error:  # the located problems, named after the file sent
            raise ScenarioError([Problem(str(scenario or p.file), p.line, p.column, p.path,
                                         p.message, p.hint) for p in error.problems]) from None

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:300]}
        message = body.get("error") or response.reason_phrase
        if response.status_code >= 500:
            raise ServiceUnavailable(f"the ESR service failed ({response.status_code}): "
                                     f"{message}")
        problems = body.get("problems") or []
        if response.status_code == 422 and problems and any(p.get("line") for p in problems):
            raise ScenarioError([Problem("scenario.yml", p.get("line", 0), p.get("column", 0),
                                         p.get("path", ""), p.get("message", ""),
                                         p.get("hint", "")) for p in problems])
        raise ServiceRefused(response.status_code,
                             f"the ESR service refused ({response.status_code}): {message}",
                             response.headers.get("retry-after"))


def _extension(format: str) -> str:  # noqa: A002 - the API's word
    """The report link's extension for a format (junit's is xml)."""
    if format not in EXTENSIONS:
        raise BadInput(f"unknown report format '{format}'; choose from html, pdf, json, junit")
    return EXTENSIONS[format]


def _passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _server_sent_events(lines: Iterator[str], deadline: float | None
                        ) -> Iterator[dict | None]:
    """The events of a Server-Sent Events stream as {"type", "id", **data}, and None for each
    keep-alive, until the deadline (looked at on every line); events without an id or data
    (the retry hint) are skipped."""
    fields: dict[str, str] = {}
    for line in lines:
        if _passed(deadline):
            return
        if line.startswith(":"):  # a comment: the service's keep-alive
            yield None
            continue
        if line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data" and "data" in fields:
                value = f"{fields['data']}\n{value}"
            fields[name] = value
            continue
        if fields.get("id", "").isdigit() and fields.get("data"):
            yield {"type": fields.get("event", "message"), "id": int(fields["id"]),
                   **json.loads(fields["data"])}
        fields = {}
