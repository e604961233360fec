"""esr-locust as a user runs it: its output and exit code.

Most commands run in this process (the `esr_cli` fixture, tests/conftest.py); the process
boundary itself, `python -m esr.cli` exiting 2 with no traceback, is checked on a real process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def esr_locust(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esr.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_validate_accepts_every_example(esr_cli):
    examples = sorted(str(p) for p in (ROOT / "examples").glob("*.yml"))
    result = esr_cli("validate", *examples)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok,") == len(examples)


def test_validate_lists_every_problem_of_every_file_and_exits_2(tmp_path):
    """A real process: what a pipeline sees is the exit status and stderr, with no traceback."""
    first = tmp_path / "first.yml"
    first.write_text("scenario: a\ncitizens: {template: senior, count: 1}\n"
                     "load_profile: {ramp_upp: 1m, sustain: 1m}\n")
    second = tmp_path / "second.yml"
    second.write_text("scenario: b\ncitizens: {template:seniors,count:3000}\n"
                      "load_profile: {sustain: 1m}\n")
    result = esr_locust("validate", str(first), str(second), str(ROOT / "examples/spike.yml"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert f"esr-locust: {first}:2:22: citizens.template: unknown template 'senior' " \
           "(did you mean 'seniors'?)" in lines
    assert any(f"{first}:3:16: load_profile.ramp_upp:" in line and "'ramp_up'" in line
               for line in lines)
    assert any(f"{second}:2:12:" in line and "space after each colon" in line for line in lines)
    assert "spike.yml: ok" in result.stdout


def test_validate_a_template_file(esr_cli):
    result = esr_cli("validate", str(ROOT / "demographics" / "veterans.yml"))
    assert result.returncode == 0 and "template 'veterans'" in result.stdout


def test_missing_file_and_bad_arguments_exit_2_without_traceback(esr_cli):
    for args in (["validate", "no/such.yml"], ["citizens"], ["citizens", "x.yml", "--count", "0"],
                 ["nonsense"], ["templates", "senior"]):
        result = esr_cli(*args)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr and result.stderr.strip(), args


def test_templates_lists_and_shows(esr_cli):
    listing = esr_cli("templates")
    assert listing.returncode == 0
    names = [line.split()[0] for line in listing.stdout.splitlines()]
    assert {"low_income", "seniors", "veterans", "families", "students", "disabled"} <= set(names)
    shown = esr_cli("templates", "seniors")
    assert shown.returncode == 0
    assert "62-64" in shown.stdout and "think_time" in shown.stdout and "patience" in shown.stdout


def test_citizens_table_and_json(esr_cli):
    path = str(ROOT / "examples" / "rental_stress.yml")
    table = esr_cli("citizens", path, "--count", "5")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split()[:3] == ["citizen_id", "name", "age"]
    assert len(table.stdout.splitlines()) == 6
    lines = esr_cli("citizens", path, "--count", "3", "--json").stdout.splitlines()
    citizens = [json.loads(line) for line in lines]
    assert [c["citizen_id"] for c in citizens] == [f"low_income-{k:07d}" for k in range(3)]
    for citizen in citizens:
        assert {"age_band", "veteran", "cohort", "date_of_birth", "income", "name"} <= set(citizen)


def test_a_bad_scenario_in_citizens_exits_2(tmp_path, esr_cli):
    path = tmp_path / "bad.yml"
    path.write_text("scenario: x\ncitizens: {template: seniors, count: -3}\n"
                    "load_profile: {sustain: 1m}\n")
    result = esr_cli("citizens", str(path))
    assert result.returncode == 2
    assert f"{path}:2:38: citizens.count: must be at least 1, got -3" in result.stderr


def test_plain_progress_lines_say_the_final_figures_once():
    import io

    from esr.launcher import ProgressLine

    out = io.StringIO()  # not a terminal: plain lines, as in CI logs
    line = ProgressLine(out)
    for final in (False, False, True, True, True):
        line({"phase": "plateau", "citizens": 3, "requests": 10, "failures": 1,
              "outcomes": {"approved": 9}, "final": final})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # the first, then the final one (the others within 5 s are skipped)
    assert "[plateau] citizens 3" in lines[-1] and "errors 10.0%" in lines[-1]


def test_the_master_is_headless_unless_asked_for_the_web_ui():
    from esr.cli import _parser

    parse = _parser().parse_args
    assert parse(["master", "s.yml"]).web is False
    assert parse(["master", "s.yml", "--headless"]).web is False
    assert parse(["master", "s.yml", "--web"]).web is True
