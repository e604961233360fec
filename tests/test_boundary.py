"""The two worlds: only esr.engine imports Locust or gevent (they monkey-patch the process);
the language, the population, the report, the launcher and the CLI's other commands never do."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "esr" / "engine"
GEVENT_WORLD = re.compile(r"^\s*(import|from)\s+(locust|gevent|geventhttpclient)\b", re.M)


def test_no_module_outside_the_engine_imports_locust_or_gevent():
    leaks = [str(path.relative_to(ROOT)) for path in (ROOT / "esr").rglob("*.py")
             if ENGINE not in path.parents and GEVENT_WORLD.search(path.read_text())]
    assert leaks == []


def test_the_no_locust_world_runs_without_loading_locust(tmp_path):
    """Everything but a run, in one process: afterwards neither Locust nor gevent is loaded."""
    examples = ROOT / "examples"
    script = f"""
import contextlib, io, sys
import esr, esr.scenario, esr.population.citizens, esr.report.render, esr.launcher, esr.client
import esr.alerts, esr.service.server, esr.service_client, esr.service_commands
from esr.cli import main
for args in (["validate", *{[str(p) for p in sorted(examples.glob("*.yml"))]!r}],
             ["templates"], ["templates", "seniors"], ["schema"],
             ["compile", {str(examples / "demo.yml")!r}],
             ["citizens", {str(examples / "demo.yml")!r}, "--count", "5"]):
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args) == 0, args
print(sorted(m for m in ("locust", "gevent", "geventhttpclient") if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
