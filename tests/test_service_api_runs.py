"""The service's runs, end to end through real HTTP against a real `esr-locust serve` and the
demo target: the live event stream and its resumption, cancelling a running run, signed
report links, EsrClient and the service's commands, the audit log.

One service for the module. Its runs are short (a few citizens for a few seconds) and go
one at a time through the service's single slot; two of them, made once, are shared: one
that passed (`submit --wait`, exit 0) and one that failed its SLO (exit 1).
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from commands import free_port, served
from httpx_sse import EventSource, ServerSentEvent
from scraping import scrape
from services import new_token, revoke_token, running_service, wait_for_status

from esr import EsrClient
from esr.cli import main
from esr.errors import BadInput, ScenarioError
from esr.service.links import report_query
from esr.service.store import Store

ENDED = ("passed", "failed", "cancelled", "error", "interrupted")
SCENARIO = """\
esr: 1
scenario: api rehearsal
seed: 11
citizens: {{template: low_income, count: 4, behavior: {{think_time: 100ms..300ms, retries: 0}}}}
load_profile: {{sustain: {sustain}}}
slo: {{p95_ms: {p95_ms}}}
"""
TINY = SCENARIO.format(sustain="2s", p95_ms=500)
LONG = SCENARIO.format(sustain="60s", p95_ms=500)  # cancelled long before its end
SLO_FAILING = SCENARIO.format(sustain="1s", p95_ms=1)  # the demo target takes 5 ms an application
BROKEN = TINY.replace("sustain: 2s", "sustan: 2s").replace("low_income", "low_incme")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def esr_locust(*args: str, cwd: Path | None = None) -> Result:
    """`esr-locust ARGS` in this process (the process boundary is not what these test)."""
    out, err = io.StringIO(), io.StringIO()
    sigterm = signal.getsignal(signal.SIGTERM)  # main() installs its own handler
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                contextlib.chdir(cwd or Path.cwd()):
            code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    return Result(code, out.getvalue(), err.getvalue())


@dataclass
class Agency:
    name: str
    token_id: str
    secret: str
    service: object

    def api(self) -> httpx.Client:
        return self.service.client(self.secret)

    def esr(self) -> EsrClient:
        return EsrClient(url=self.service.url, token=self.secret)

    def cli(self, command: str, *args: str, cwd: Path | None = None) -> Result:
        return esr_locust(command, *args, "--url", self.service.url, "--token", self.secret,
                          cwd=cwd)


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def service(tmp_path_factory, metrics_port):
    with running_service(tmp_path_factory.mktemp("service"),
                         "--metrics-bind", str(metrics_port)) as running:
        yield running


@pytest.fixture(scope="module")
def secrets_made() -> list[str]:
    """Every token secret this module made: none may be found in the service's data."""
    return []


@pytest.fixture(scope="module")
def make_agency(service, target, secrets_made):
    def make(name: str, *options: str) -> Agency:
        token_id, secret = new_token(service.data, name, "--allow-target", target, *options)
        secrets_made.append(secret)
        return Agency(name, token_id, secret, service)

    return make


@pytest.fixture(scope="module")
def housing(make_agency) -> Agency:
    return make_agency("housing")


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("scenarios")
    written = {}
    for name, text in (("tiny", TINY), ("slo_failing", SLO_FAILING), ("broken", BROKEN)):
        written[name] = folder / f"{name}.yml"
        written[name].write_text(text)
    return written


def submitted(result: Result) -> str:
    """The run id `submit` names on stderr ("esr-locust: run ID queued")."""
    return result.err.split("esr-locust: run ", 1)[1].split()[0]


@pytest.fixture(scope="module")
def passed_run(housing, scenarios, target, tmp_path_factory) -> tuple[str, Result]:
    """`esr-locust submit --wait` of a run that passes: its id and what the command did (in
    an empty folder: it writes nothing there)."""
    folder = tmp_path_factory.mktemp("submitted")
    result = housing.cli("submit", str(scenarios["tiny"]), "--wait", "--host", target,
                         cwd=folder)
    assert result.code == 0, result
    assert list(folder.iterdir()) == []
    return submitted(result), result


@pytest.fixture(scope="module")
def failed_run(housing, scenarios, target, tmp_path_factory) -> tuple[str, Result]:
    """`esr-locust submit --wait` of a run whose p95 SLO (1 ms) fails: id and result."""
    result = housing.cli("submit", str(scenarios["slo_failing"]), "--wait", "--host", target,
                         cwd=tmp_path_factory.mktemp("submitted"))
    return submitted(result), result


def start(api: httpx.Client, scenario: str, target: str) -> str:
    answer = api.post("/v1/runs", json={"scenario": scenario, "host": target})
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert (accepted["status"] == "queued") == (accepted["queue_position"] is not None)
    assert accepted["queue_position"] is None or accepted["queue_position"] >= 1
    return accepted["id"]


def server_sent(response: httpx.Response) -> Iterator[ServerSentEvent]:
    """A stream's events: those with data (the retry hint has none; a keep-alive comment, which
    httpx-sse hands on with the last id, neither)."""
    assert response.status_code == 200, response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    return (sse for sse in EventSource(response).iter_sse() if sse.id and sse.data)


def stored_events(api: httpx.Client, run_id: str, after: int = 0) -> list[dict]:
    answer = api.get(f"/v1/runs/{run_id}/events", params={"after": after})
    assert answer.status_code == 200
    return answer.json()


def until(condition, timeout_s: float = 60.0, every_s: float = 0.2):
    """Poll until the condition holds (its value then)."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every_s)
    return value


# ---- the live stream -----------------------------------------------------------------------------


def test_the_event_stream_resumed_after_a_drop_misses_and_repeats_nothing(housing, target):
    with housing.api() as api:
        run_id = start(api, SCENARIO.format(sustain="3s", p95_ms=500), target)
        before: list[ServerSentEvent] = []
        with api.stream("GET", f"/v1/runs/{run_id}/events") as response:
            for sse in server_sent(response):
                before.append(sse)
                if sse.event == "stats":
                    break  # the connection drops mid-run
        dropped_at = int(before[-1].id)
        # The run goes on meanwhile: events are written that this watcher has not seen.
        until(lambda: len(stored_events(api, run_id, dropped_at)) >= 2)
        after: list[ServerSentEvent] = []
        with api.stream("GET", f"/v1/runs/{run_id}/events",
                        headers={"Last-Event-ID": str(dropped_at)}) as response:
            for sse in server_sent(response):
                after.append(sse)
        stored = stored_events(api, run_id)
        assert stored_events(api, run_id, after=3) == stored[3:]
    seen = before + after
    assert [int(sse.id) for sse in seen] == list(range(1, len(seen) + 1))
    assert after[-1].event == "done" and after[-1].json()["status"] == "passed"
    assert [(int(sse.id), sse.event, sse.json()) for sse in seen] == \
        [(event["id"], event["type"], {**event["data"], "at": event["at"]}) for event in stored]
    statuses = [sse.json()["status"] for sse in seen if sse.event == "status"]
    assert statuses == ["queued", "starting", "running", "stopping", "reporting", "passed"]
    assert any(sse.event == "stats" for sse in after), "the drop was not mid-run"
    stats = [sse.json() for sse in seen if sse.event == "stats"]
    assert {"phase", "citizens", "rps", "p95_ms", "error_rate", "outcomes"} <= set(stats[0])
    requests = [s["requests"] for s in stats]
    counted = served(target, run_id)["requests"]["total"]
    assert requests == sorted(requests) and 0 < requests[-1] <= counted
    assert after[-1].json()["verdict"]["requests"] == counted


# ---- cancelling a run in progress ----------------------------------------------------------------


@dataclass(frozen=True)
class Cancelled:
    id: str
    answer: dict  # what POST /cancel answered
    run: dict  # GET /v1/runs/{id} once it ended
    card: httpx.Response  # GET report.html
    summary: dict
    events: list[dict]
    again: httpx.Response  # a second POST /cancel


@pytest.fixture(scope="module")
def cancelled_run(housing, target) -> Cancelled:
    """A 60 s run cancelled as soon as it has live figures, followed to its end."""
    with housing.api() as api:
        run_id = start(api, LONG, target)
        until(lambda: any(e["type"] == "stats" for e in stored_events(api, run_id)))
        answer = api.post(f"/v1/runs/{run_id}/cancel")
        assert answer.status_code == 202, answer.text
        run = wait_for_status(api, run_id, ENDED, timeout_s=90)
        return Cancelled(run_id, answer.json(), run, api.get(f"/v1/runs/{run_id}/report.html"),
                         api.get(f"/v1/runs/{run_id}/summary").json(),
                         stored_events(api, run_id), api.post(f"/v1/runs/{run_id}/cancel"))


def test_a_running_run_cancelled_stops_gracefully_and_keeps_its_report_card(cancelled_run,
                                                                            target):
    cancelled = cancelled_run
    assert cancelled.answer["status"] == "stopping"
    assert cancelled.run["status"] == "cancelled", cancelled.run
    took = _seconds(cancelled.run["ended_at"]) - _seconds(cancelled.run["started_at"])
    assert took < 40, f"a 60 s run cancelled at once took {took:.0f} s to end"
    assert cancelled.card.status_code == 200
    assert cancelled.card.text.lower().startswith("<!doctype html>")
    counted = served(target, cancelled.id)["requests"]["total"]
    assert cancelled.summary["requests"]["total"] == counted > 0
    assert cancelled.run["verdict"]["requests"] == counted
    assert [e["data"]["status"] for e in cancelled.events if e["type"] == "status"][-3:] == \
        ["stopping", "reporting", "cancelled"]
    assert cancelled.events[-1]["type"] == "done"
    assert cancelled.events[-1]["data"]["status"] == "cancelled"
    assert cancelled.again.status_code == 409
    assert "has already ended (cancelled)" in cancelled.again.json()["error"]


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# ---- where the load goes ------------------------------------------------------------------------


@contextlib.contextmanager
def http_server(redirect_to: str | None = None) -> Iterator[tuple[str, list[str]]]:
    """A plain HTTP server on 127.0.0.1 in this process: its URL, and the paths it was asked
    for; with redirect_to, it answers every request with a 302 there."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            asked.append(self.path)
            self.send_response(302 if redirect_to else 200)
            if redirect_to:
                self.send_header("Location", redirect_to)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_from_an_allowed_target_does_not_carry_the_load_elsewhere(make_agency):
    with http_server() as (elsewhere, asked_elsewhere), \
            http_server(redirect_to=f"{elsewhere}/someone-else") as (allowed, asked):
        agency = make_agency("redirected", "--allow-target", allowed)
        scenario = SCENARIO.format(sustain="1s", p95_ms=500) + \
            "journey:\n  - {name: home, request: GET /}\n"
        with agency.api() as api:
            run_id = start(api, scenario, allowed)
            run = wait_for_status(api, run_id, ENDED)
    assert run["verdict"]["requests"] > 0 and asked
    assert asked_elsewhere == []


# ---- report links --------------------------------------------------------------------------------


def links_of(api: httpx.Client, run_id: str) -> dict:
    answer = api.get(f"/v1/runs/{run_id}/report-links")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_signed_links_open_without_a_token(service, housing, passed_run):
    run_id, _ = passed_run
    with housing.api() as api:
        links = links_of(api, run_id)
        summary = api.get(f"/v1/runs/{run_id}/summary").json()
    assert links["expires_in_s"] == 24 * 3600
    with httpx.Client(timeout=60) as browser:  # no Authorization header
        html = browser.get(links["html"])
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert run_id in html.text
        assert browser.get(links["json"]).json() == summary
        junit = browser.get(links["xml"])
        assert junit.status_code == 200 and junit.text.startswith("<?xml")
        pdf = browser.get(links["pdf"])
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        assert pdf.content.startswith(b"%PDF-")
        assert browser.get(f"{service.url}/v1/runs/{run_id}/report.html").status_code == 404


def test_a_signed_link_for_another_run_or_format_tampered_or_expired_answers_404(
        service, housing, passed_run, failed_run):
    (run_id, _), (other_id, _) = passed_run, failed_run
    with housing.api() as api:
        links = links_of(api, run_id)
    html = links["html"]
    query = parse_qs(urlsplit(html).query)
    expires, signature = query["expires"][0], query["signature"][0]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    key = Store(service.data).secret("link_key")
    base = f"{service.url}/v1/runs"
    wrong = {
        "another run": html.replace(run_id, other_id),
        "another format": html.replace("report.html", "report.json"),
        "tampered signature": html.replace(signature, flipped),
        "later expiry": html.replace(f"expires={expires}", f"expires={int(expires) + 3600}"),
        "no expiry": f"{base}/{run_id}/report.html?signature={signature}",
        "no signature": f"{base}/{run_id}/report.html?expires={expires}",
        "expired": f"{base}/{run_id}/report.html?{report_query(key, run_id, 'html', -60)}",
    }
    with httpx.Client(timeout=30) as browser:
        # Signed with the same key a moment from now, the link opens: what follows fails for
        # what it says, not for a wrong key.
        fresh = f"{base}/{run_id}/report.html?{report_query(key, run_id, 'html', 60)}"
        assert browser.get(fresh).status_code == 200
        for what, url in wrong.items():
            answer = browser.get(url)
            assert answer.status_code == 404, what
            assert "not valid" in answer.json()["error"], what
        # Each run's own link still opens.
        assert browser.get(html).status_code == 200


# ---- EsrClient against the service ---------------------------------------------------------------


def test_esr_client_runs_watches_stops_waits_and_fetches_from_the_service(housing, scenarios,
                                                                          target, tmp_path):
    esr = housing.esr()
    assert type(esr).__name__ == "ServiceClient"
    job = esr.run(scenarios["tiny"], host=target)
    assert job.id and job.status in ("queued", "starting", "running")
    held = esr.run(scenarios["tiny"], host=target)  # behind it: the service runs one at a time
    assert held.status == "queued"
    stopped = esr.stop(held.id)
    assert stopped.status == "cancelled" and esr.job(held.id).done
    live = esr.live(job.id)
    figures = next(live)
    live.close()
    assert {"phase", "citizens", "rps", "p95_ms", "error_rate", "outcomes"} <= set(figures)
    done = esr.wait(job.id, timeout=120)
    assert done.status == "passed" and done.exit_code == 0 and done.verdict["slo_passed"]
    assert esr.job(job.id).status == "passed"
    assert [j.id for j in esr.runs()][:2] == [held.id, job.id]
    console = io.StringIO()
    assert esr.watch(job.id, stream=console).status == "passed"
    assert "run passed" in console.getvalue()
    report = esr.report(job.id, format="html", out_dir=tmp_path)
    assert report.path == tmp_path / "report.html" and report.path.read_text().strip()
    opened = httpx.get(report.url, timeout=30)  # a link a person opens: no token
    assert opened.status_code == 200 and opened.content == report.path.read_bytes()
    summary = esr.report(job.id, format="json", out_dir=tmp_path)
    requests = json.loads(summary.path.read_text())["requests"]["total"]
    assert requests == served(target, job.id)["requests"]["total"] == done.verdict["requests"]


def test_esr_client_downloads_a_card_from_the_address_it_was_given(housing, passed_run,
                                                                   tmp_path):
    """Behind a proxy the service names itself as it was asked (the Host header it got): the
    client still downloads from the address it knows, and sends its token nowhere else."""
    run_id, _ = passed_run
    esr = housing.esr()
    esr.http.headers["Host"] = "esr.internal.example:8088"  # as a proxy might forward it
    report = esr.report(run_id, format="json", out_dir=tmp_path)
    assert report.url.startswith("http://esr.internal.example:8088/v1/runs/")
    assert json.loads(report.path.read_text())["run_id"] == run_id


def test_esr_client_turns_the_services_refusals_into_esr_errors(service, housing, scenarios,
                                                                 target, esr_cli):
    esr = housing.esr()
    with pytest.raises(ScenarioError) as raised:
        esr.run(scenarios["broken"], host=target)
    validated = esr_cli("validate", str(scenarios["broken"]))
    assert [f"esr-locust: {line}" for line in raised.value.lines()] == \
        validated.stderr.splitlines()
    with pytest.raises(BadInput) as raised:
        esr.run(scenarios["tiny"], host="http://127.0.0.1:9")
    assert "422" in str(raised.value) and "may not load http://127.0.0.1:9" in str(raised.value)
    with pytest.raises(BadInput) as raised:
        esr.job("20260101-000000-nothing-0000")
    assert "404" in str(raised.value)
    stranger = EsrClient(url=service.url, token="esr_not-a-token")
    with pytest.raises(BadInput) as raised:
        stranger.runs()
    assert not isinstance(raised.value, ScenarioError)
    assert "401" in str(raised.value) and "unknown token" in str(raised.value)


# ---- the commands --------------------------------------------------------------------------------


def test_submit_wait_exits_0_for_a_passed_run_and_prints_its_report_link(housing, passed_run,
                                                                         target):
    run_id, result = passed_run
    link = result.out.strip().splitlines()[-1]
    assert link.startswith(f"{housing.service.url}/v1/runs/{run_id}/report.html?expires=")
    assert "run passed" in result.err
    assert httpx.get(link, timeout=30).status_code == 200
    with housing.api() as api:
        run = api.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "passed"
    assert run["verdict"]["requests"] == served(target, run_id)["requests"]["total"]


def test_submit_wait_exits_1_for_a_run_that_fails_its_slo(housing, failed_run):
    run_id, result = failed_run
    assert result.code == 1, result
    assert "run failed" in result.err
    with housing.api() as api:
        run = api.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "failed"
    (check,) = run["verdict"]["checks"]
    assert check["name"] == "p95_ms" and not check["passed"] and check["threshold"] == 1


def test_submit_exits_2_for_bad_input(service, housing, scenarios, target, esr_cli,
                                      monkeypatch):
    broken = esr_cli("submit", str(scenarios["broken"]), "--url", service.url, "--token",
                     housing.secret, "--wait", "--host", target)
    assert broken.returncode == 2
    assert broken.stderr == esr_cli("validate", str(scenarios["broken"])).stderr
    stranger = esr_cli("submit", str(scenarios["tiny"]), "--url", service.url, "--token",
                       "esr_not-a-token", "--wait", "--host", target)
    assert stranger.returncode == 2 and "401" in stranger.stderr
    monkeypatch.delenv("ESR_TOKEN", raising=False)
    tokenless = esr_cli("submit", str(scenarios["tiny"]), "--url", service.url, "--wait")
    assert tokenless.returncode == 2 and "no token" in tokenless.stderr
    assert "Traceback" not in broken.stderr + stranger.stderr + tokenless.stderr


def test_a_listed_run_is_the_run_as_its_own_address_answers_it(housing, passed_run,
                                                               failed_run):
    """The listing is written by SQLite (store.LISTED_RUN), a run's address by its model:
    the two agree, figures, verdict and links included."""
    with housing.api() as api:
        listed = api.get("/v1/runs", params={"limit": 200}).json()["runs"]
        assert {passed_run[0], failed_run[0]} <= {run["id"] for run in listed}
        for run in listed:
            assert run == api.get(f"/v1/runs/{run['id']}").json()
        assert any(run["verdict"] and run["live"] for run in listed)


def test_runs_watch_and_fetch(housing, passed_run, failed_run, tmp_path):
    (passed, _), (failed, _) = passed_run, failed_run
    listed = housing.cli("runs")
    assert listed.code == 0
    lines = [line for line in listed.out.splitlines() if line.startswith((passed, failed))]
    assert [line.split()[:2] for line in lines] == [[failed, "failed"], [passed, "passed"]]
    as_json = [json.loads(line) for line in housing.cli("runs", "--json").out.splitlines()]
    assert {run["id"]: run["status"] for run in as_json}[passed] == "passed"
    watched = housing.cli("watch", passed)
    assert watched.code == 0 and "run passed" in watched.out
    assert housing.cli("watch", failed).code == 1
    fetched = housing.cli("fetch", passed, "--format", "html,pdf", "--out", str(tmp_path))
    assert fetched.code == 0
    assert fetched.out.split() == [str(tmp_path / "report.html"), str(tmp_path / "report.pdf")]
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF-")
    assert passed in (tmp_path / "report.html").read_text()


# ---- Prometheus ----------------------------------------------------------------------------------


def test_the_services_metrics_show_its_runs_by_status_and_a_run_just_ended(
        service, housing, passed_run, failed_run, metrics_port):
    """`serve --metrics-bind`: the queue, every run by status, and the figures of the runs in
    progress or ended in the last minutes, equal to their summaries."""
    metrics = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    with housing.api() as api:
        statuses = [run["status"] for run in api.get("/v1/runs", params={"limit": 200}).json()[
            "runs"]]
        summary = api.get(f"/v1/runs/{passed_run[0]}/summary").json()
    by_status = metrics.by("esr_service_runs", "status")
    assert by_status[("passed",)] >= statuses.count("passed") >= 1
    assert by_status[("failed",)] >= 1
    assert metrics.total("esr_service_queue_length") == by_status.get(("queued",), 0)
    ran = metrics.total("esr_requests_total", run=passed_run[0])
    assert ran == summary["requests"]["total"] > 0
    assert metrics.by("esr_slo_passing", "run")[(passed_run[0],)] == len(
        summary["slo"]["checks"])


# ---- the audit log -------------------------------------------------------------------------------


def test_the_audit_log_records_who_did_what_and_never_a_secret(service, make_agency, housing,
                                                                passed_run, cancelled_run,
                                                                secrets_made):
    run_id, _ = passed_run
    auditors = make_agency("auditors")
    gone = make_agency("gone")
    revoke_token(service.data, gone.token_id)
    with service.client(None) as anonymous:
        assert anonymous.get("/v1/runs", headers={
            "Authorization": "Bearer esr_not-a-token"}).status_code == 401
        assert anonymous.get("/v1/runs", headers={
            "Authorization": f"Bearer {gone.secret}"}).status_code == 401
    with housing.api() as api:
        assert api.get(f"/v1/runs/{run_id}/report.json").status_code == 200
        link = links_of(api, run_id)["xml"]
    assert httpx.get(link, timeout=30).status_code == 200

    printed = esr_locust("audit", "--data", str(service.data), "--json")
    assert printed.code == 0
    log = [json.loads(line) for line in printed.out.splitlines()]

    def entries(action: str, **fields) -> list[dict]:
        return [e for e in log if e["action"] == action and all(
            e.get(k) == v or e["detail"].get(k) == v for k, v in fields.items())]

    assert entries("token_create", agency="auditors", token_id=auditors.token_id)
    assert entries("token_revoke", agency="gone", token_id=gone.token_id)
    assert entries("auth_failed", reason="unknown token", path="/v1/runs")
    assert entries("auth_failed", reason="this token was revoked")
    for created in (run_id, cancelled_run.id):
        assert entries("run_create", agency="housing", run_id=created,
                       token_id=housing.token_id)
    assert entries("run_cancel", agency="housing", run_id=cancelled_run.id,
                   token_id=housing.token_id)
    assert entries("report_download", run_id=run_id, format="json", via="token",
                   token_id=housing.token_id)
    assert entries("report_download", run_id=run_id, format="xml", via="signed link")
    human = esr_locust("audit", "--data", str(service.data)).out
    assert "token_revoke" in human and gone.token_id in human

    # No secret anywhere: the store (and its WAL), run folders, logs, what the commands print.
    listed = esr_locust("tokens", "list", "--data", str(service.data))
    files = [path for path in service.data.rglob("*") if path.is_file()]
    assert any(path.name.startswith("esr.sqlite3") for path in files)
    for secret in secrets_made:
        assert secret not in printed.out + human + listed.out + listed.err
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
