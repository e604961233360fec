"""A scenario is input, not code: a journey step's template cannot hang, bloat or change
a load process (issue 11, item 5).

Written as an attacker would: templates that loop without end, build huge values, or
change `vars`, given to `esr-locust validate`, to the renderer, and to a real run
against the bundled demo target on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from commands import esr_locust, served

from esr.wire import STOP_TIMEOUT_S

# Nested loops over ranges the validator cannot see (they depend on each citizen): with
# every age of the students template, 144**4 runs or more, minutes of CPU without ESR's budget.
ENDLESS = ("{% for a in range(citizen.age * 8) %}{% for b in range(citizen.age * 8) %}"
           "{% for c in range(citizen.age * 8) %}{% for d in range(citizen.age * 8) %}"
           "{% endfor %}{% endfor %}{% endfor %}{% endfor %}")


def write_scenario(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "scenario.yml"
    path.write_text(textwrap.dedent("""\
        scenario: hostile template
        citizens: {template: students, count: 2}
        load_profile: {sustain: 1m}
        journey:
          - name: apply
            request: POST /apply
            body: %s
        """) % json.dumps(body))
    return path


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(esr_locust("validate", str(path)), capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("body, says", [
    ("{{ 'a' * 10**8 }}", "100,000,000 characters"),
    ("{{ 'a'|center(10**8) }}", "100,000,000 characters"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "a range of 100,000 items"),
    ("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
     "nested loops run 1,000,000 times"),
])
def test_validate_refuses_constant_work_it_can_see(tmp_path, body, says):
    # Before the fix: exit 0, and a run compiled 'a' * 10**8 into a 100 MB constant.
    path = write_scenario(tmp_path, body)
    result = validate(path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{path}:7:" in result.stderr and "journey[0].body" in result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr


def test_a_template_cannot_change_vars(tmp_path):
    # Before the fix: validate passed, and each render added 'x' to the citizen's vars.
    result = validate(write_scenario(tmp_path, "{{ vars.update({'x': 1}) }}"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{tmp_path / 'scenario.yml'}:7:" in result.stderr
    assert "calls .update(), which would change a value in place" in result.stderr
    # And at run time too, however it got there: the step fails, vars stay as they were.
    seen = render({"update": "{{ vars.update({'x': 1}) }}"})["update"]
    assert seen["sent"] is None and seen["vars"] == {"token": "t"}
    assert seen["reason"] == ("template error: SecurityError: access to attribute 'update' "
                              "of 'dict' object is unsafe.")


# The renderer runs in a child process: importing it imports Locust, which would
# monkey-patch this test process.
RENDER = """
import json, sys, time
from esr.engine.journey import StepRenderer
from esr.population.citizens import CITIZEN_FIELDS
from esr.scenario.model import Step

row = tuple({"age": 30, "citizen_id": "c-1"}.get(field) for field in CITIZEN_FIELDS)

seen = {}
for name, body in json.loads(sys.argv[1]).items():
    variables = {"token": "t"}
    started = time.process_time()
    try:
        _, _, payload = StepRenderer(Step(name=name, method="POST", path="/apply", body=body)) \\
            .request(row, variables, "run-1")
        sent, reason = len(payload["data"]), None
    except Exception as error:
        sent, reason = None, str(error)
    seen[name] = {"sent": sent, "reason": reason, "vars": variables,
                  "cpu_s": time.process_time() - started}
print(json.dumps(seen))
"""


def render(bodies: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, "-c", RENDER, json.dumps(bodies)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_renderer_keeps_every_template_within_its_budget():
    seen = render({
        # Empty loops yield no output at all: only the timer can stop them.
        "silent": "{% for a in range(400) %}{% for b in range(400) %}{% for c in range(400) %}"
                  "{% endfor %}{% endfor %}{% endfor %}",
        "output": "{% for i in range(1000) %}{{ 'x' * 2000 }}{% endfor %}",
        # Kept to 32 MB (24 doublings), so that the code before the fix survives it too.
        "doubling": "{% set ns = namespace(s='ab') %}{% for i in range(24) %}"
                    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "plain": "age {{ citizen.age }}",
    })
    # Before the fix: seconds of CPU, then sent; 2 MB sent; 32 MB built (and 2 TB with 40).
    assert seen["silent"]["reason"] == "template took over 50 ms", seen["silent"]
    assert seen["output"]["reason"] == "template output over 1 MiB"
    assert seen["doubling"]["reason"] == "template value over 1 MiB"
    assert (seen["plain"]["sent"], seen["plain"]["reason"]) == (len("age 30"), None)


@pytest.mark.parametrize("body, reason", [
    ("{{ 'a' * n }}", "template value over 1 MiB"),
    ("{{ 'a'.ljust(n) }}", "template value over 1 MiB"),
    ("{{ '{:>{}}'.format('a', n) }}", "template value over 1 MiB"),
    ("{{ '%*d' % (n, 1) }}", "template value over 1 MiB"),
    ("{{ ('a' * 1000)|replace('a', 'b' * 2000) }}", "template value over 1 MiB"),
    ("{{ [1]|batch(n, 0)|list }}", "template value over 1 MiB"),
    ("{% set s = 'a' * 1000000 %}{{ [s, s] }}", "template value over 1 MiB"),
    ("{{ 3 ** n }}", "template number over 4,096 bits"),
    ("{{ range(n)|list }}", "template range over 1,000 items"),
    ("{% macro twice(k) %}{% if k %}{{ twice(k - 1) }}{{ twice(k - 1) }}{% endif %}"
     "{% endmacro %}{{ twice(60) }}", "template took over 50 ms"),
])
def test_values_a_template_builds_stay_bounded(body, reason):
    from esr.scenario.templating import TemplateLimit, compile_template

    with pytest.raises(TemplateLimit, match=reason):
        compile_template(body)({"citizen": {}, "vars": {}, "run_id": "r", "n": 10**8})


def end_run(process: subprocess.Popen) -> None:
    """Whatever is left of a run (before the fix: the load process, spinning), by PID."""
    if process.poll() is None:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
    process.wait()


def test_an_endless_template_ends_with_the_run(tmp_path, target):
    path = tmp_path / "scenario.yml"
    path.write_text(textwrap.dedent("""\
        scenario: endless template
        seed: 11
        citizens: {template: students, count: 4, behavior: {think_time: 50ms..100ms, retries: 0}}
        load_profile: {sustain: 2s}
        report: {formats: [json, html]}
        journey:
          - name: form
            request: GET /form
          - name: endless
            request: POST /apply
            body: %s
        """) % json.dumps(ENDLESS))
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        esr_locust("run", str(path), "--host", target, "--workers", "0", "--run-dir",
                   str(run_dir)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The run's planned time, its stop timeout, and room for starting and reporting.
        # Before the fix the load process never came back: the launcher killed it
        # only after twice its own overrun allowance, past this guard.
        out, err = process.communicate(timeout=2 + STOP_TIMEOUT_S + 45)
    finally:
        end_run(process)
    summary = json.loads((run_dir / "summary.json").read_text())
    served_by_target = served(target, summary["run_id"])
    assert process.returncode == 0, err
    assert (run_dir / "report.html").is_file() and "Traceback" not in err
    outcomes = summary["citizens"]["by_outcome"]
    assert outcomes["error"] > 0 and set(outcomes) <= {"error", "incomplete"}, outcomes
    # Nothing was sent, so no trace to show.
    assert summary["errors"] == [{"endpoint": "endless", "kind": "template took over 50 ms",
                                  "count": outcomes["error"], "trace_id": None}]
    # The first step reached the target, every time, and nothing else did.
    assert served_by_target["requests"]["by_endpoint"] == {
        "GET /form": summary["requests"]["total"]}
    assert summary["requests"]["total"] >= outcomes["error"]
