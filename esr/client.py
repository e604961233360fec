"""The Python face of ESR: start runs in the background, watch them, read their results.

    from esr import EsrClient
    esr = EsrClient(token="...")        # a service (ESR_URL, or esr-locust serve's default)
    esr = EsrClient()                   # or in this process, without a token or ESR_URL
    job = esr.run("examples/rental_stress.yml", time_scale=0.01)
    esr.watch(job.id)                   # prints the live lines until the run ends
    for live in esr.live(job.id): ...   # or takes the live figures as dicts
    print(esr.report(job.id, format="html").url)

The same methods either way: run, watch, live, report, stop, wait, job, runs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from esr.alerts import LiveAlerts, p95_slo_ms
from esr.errors import EXIT_OK, EXIT_SLO_FAILED, BadInput, EsrError
from esr.launcher import Launch, RunResult, RunSettings, read_live
from esr.watching import Console, stats_of

# A finished run's word, from the exit code `esr-locust run` would give it.
STATUS_OF_EXIT = {EXIT_OK: "passed", EXIT_SLO_FAILED: "failed"}


@dataclass(frozen=True)
class Report:
    format: str
    path: Path
    link: str | None = None  # a service's signed link; a local file's URI otherwise

    @property
    def url(self) -> str:
        return self.link or self.path.resolve().as_uri()


@dataclass
class Job:
    """A run started by an EsrClient; `result` is set when it ends."""

    id: str
    run_dir: Path
    result: RunResult | None = None
    error: EsrError | None = None
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> RunResult:
        if not self._done.wait(timeout):
            raise TimeoutError(f"run {self.id} is still going")
        if self.error is not None:
            raise self.error
        return self.result


class EsrClient:
    """ESR from Python: a service's client when given a token (or ESR_TOKEN) or a URL (or
    ESR_URL), else runs in this process (LocalClient)."""

    def __new__(cls, url: str | None = None, token: str | None = None, **local):
        if cls is EsrClient:
            remote = url or token or os.environ.get("ESR_URL") or os.environ.get("ESR_TOKEN")
            if remote:
                from esr.service_client import ServiceClient

                cls = ServiceClient
            else:
                cls = LocalClient
        return super().__new__(cls)


class LocalClient(EsrClient):
    """Runs scenarios in this process's children; keeps the jobs it started, by id."""

    def __init__(self, url: None = None, token: None = None, *,
                 reports_dir: str | Path | None = None, workers: int = 0):
        self.reports_dir = Path(reports_dir) if reports_dir else None
        self.workers = workers
        self._jobs: dict[str, tuple[Job, Launch]] = {}

    def run(self, scenario: str | Path, *, host: str | None = None, workers: int | None = None,
            time_scale: float = 1.0, user_scale: float = 1.0) -> Job:
        """Check the scenario, start the run in the background and return its job at once."""
        settings = RunSettings(scenario=Path(scenario), host=host,
                               workers=self.workers if workers is None else workers,
                               time_scale=time_scale, user_scale=user_scale)
        launch = Launch.prepare(settings, reports_dir=self.reports_dir)
        launch.start()
        job = Job(launch.run_id, launch.run_dir)
        self._jobs[job.id] = (job, launch)
        threading.Thread(target=self._finish, args=(job, launch), daemon=True,
                         name=f"esr-{job.id}").start()
        return job

    def job(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id][0]
        except KeyError:
            raise BadInput(f"no run with id '{job_id}' was started by this client") from None

    def stop(self, job_id: str) -> None:
        """Stop a run gracefully; its results are still written."""
        self.job(job_id)
        self._jobs[job_id][1].stop()

    def runs(self) -> list[Job]:
        return [job for job, _ in self._jobs.values()]

    def wait(self, job_id: str, timeout: float | None = None) -> RunResult:
        return self.job(job_id).wait(timeout)

    def watch(self, job_id: str, stream=None) -> dict | None:
        """Print the run's live lines (figures, alerts) until it ends; its last figures."""
        job, launch = self.job(job_id), self._jobs[job_id][1]
        console, last = Console(stream), None
        alerts = LiveAlerts(p95_slo_ms(launch.scenario))
        for live in self.live(job_id):
            console("stats", stats_of(live))
            for alert in alerts.observe(live):
                console("alert", alert.as_dict())
            last = live
        result = job.result
        console("done", {"status": STATUS_OF_EXIT.get(result.exit_code, "error") if result
                         else "error", "verdict": result and {
                             "requests": result.summary["requests"]["total"],
                             "failures": result.summary["requests"]["failures"],
                             "p95_ms": result.summary["requests"]["p95_ms"]}})
        return last

    def live(self, job_id: str, interval: float = 1.0) -> Iterator[dict]:
        """Live figures (phase, citizens, requests/s, p95, errors, outcomes) until the run ends."""
        job = self.job(job_id)
        last = None
        while True:
            done = job.done
            live = read_live(job.run_dir)
            if live is not None and live != last:
                last = live
                yield live
            if done:
                return
            time.sleep(interval)

    def report(self, job_id: str, format: str = "html") -> Report:  # noqa: A002 - the API's word
        """Build (or rebuild) one format of a finished run's report card."""
        from esr.report.render import parse_formats, write_report_card

        job = self.job(job_id)
        job.wait()
        path = write_report_card(job.run_dir, parse_formats(format))[format]
        return Report(format, path)

    @staticmethod
    def _finish(job: Job, launch: Launch) -> None:
        try:
            job.result = launch.wait()
        except EsrError as error:
            job.error = error
        finally:
            job._done.set()

