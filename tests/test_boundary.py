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


RUN_ROLES = ("run.py", "acting.py", "conducting.py", "roles.py", "master.py", "worker.py")


def test_the_run_s_classes_stay_small_and_declare_their_attributes_in_init():
    """Issue 12 split the old 458-line EsrRun by role: each class under 200 lines, and every
    attribute a run object carries created in an __init__ (its own or a base's), not in a
    hook called later."""
    import ast

    classes = {cls.name: (name, cls) for name in RUN_ROLES
               for cls in ast.parse((ROOT / "esr" / "engine" / name).read_text()).body
               if isinstance(cls, ast.ClassDef)}

    def declared(cls: ast.ClassDef) -> set[str]:
        names = {target.id for node in cls.body if isinstance(node, ast.Assign | ast.AnnAssign)
                 for target in _targets(node) if isinstance(target, ast.Name)}
        init = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
        names |= {attribute for method in init for attribute in _set_on_self(method)}
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in classes:
                names |= declared(classes[base.id][1])
        return names

    for name, cls in classes.values():
        assert cls.end_lineno - cls.lineno < 200, f"{name}: {cls.name} is too long"
        known = declared(cls)
        for method in cls.body:
            if isinstance(method, ast.FunctionDef) and method.name != "__init__":
                created = _set_on_self(method) - known
                assert not created, f"{name}: {cls.name}.{method.name} creates {created}"


def _targets(node) -> list:
    import ast

    return node.targets if isinstance(node, ast.Assign) else [node.target]


def _set_on_self(function) -> set[str]:
    """The attributes a function assigns on `self`."""
    import ast

    return {node.attr for node in ast.walk(function) if isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name)
            and node.value.id == "self"}
