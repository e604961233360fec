"""The demo as an agency runs it: a local ESR service, a token for the demo target, the
scenario submitted with EsrClient, watched live, and the report card's link."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from esr.client import EsrClient
from esr.demo.process import local_service
from esr.service.agencies import Policy, create_token
from esr.service.store import Store

DATA = Path("reports") / "esr-service"  # the demo service's store and run directories
AGENCY = "demo"


def demo_through_service(scenario: Path, target: str, workers: int) -> int:
    with local_service(DATA, workers) as url:
        _, token = create_token(Store(DATA), AGENCY, Policy(targets=(target,)))
        print(f"esr-locust: ESR service at {url} (data {DATA}/); page {url}/ — sign in with "
              f"the token {token}", file=sys.stderr)
        esr = EsrClient(url=url, token=token)
        job = esr.run(scenario, host=target)
        print(f"esr-locust: simulation id {job.id}", file=sys.stderr)
        job = esr.watch(job.id, stream=sys.stderr)
        report = esr.report(job.id, format="html")
        print(f"esr-locust: report link (valid while the service runs, 24 h): {report.url}",
              file=sys.stderr)
        if sys.stdin.isatty():
            with contextlib.suppress(EOFError, KeyboardInterrupt):
                input("esr-locust: the service keeps serving the link; press Enter to stop it ")
        print(report.path.resolve())
        return job.exit_code
