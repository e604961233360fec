"""The Python face of ESR: start runs in the background, watch them, read their results.

    from esr import EsrClient
    client = EsrClient()
    job = client.run("examples/rental_stress.yml", time_scale=0.01)
    for live in client.watch(job.id):
        print(live["phase"], live["rps"])
    print(job.result.summary["slo"]["passed"])
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from esr.errors import BadInput, EsrError
from esr.launcher import Launch, RunResult, RunSettings, read_live


@dataclass(frozen=True)
class Report:
    format: str
    path: Path

    @property
    def url(self) -> str:
        return self.path.resolve().as_uri()


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
    """Runs scenarios; keeps the jobs it started, by id."""

    def __init__(self, reports_dir: str | Path | None = None, workers: int = 0):
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

    def watch(self, job_id: str, interval: float = 1.0) -> Iterator[dict]:
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
