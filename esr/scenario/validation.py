"""Checking files without running them: scenarios, and the templates they use."""

from __future__ import annotations

from pathlib import Path

from esr.population.demographics import load_template
from esr.scenario.reader import load_scenario
from esr.scenario.yaml_source import read_yaml
from esr.units import format_duration


def validate_file(path: str | Path) -> str:
    """Check a scenario or a template file; a one-line summary, or ScenarioError."""
    path = Path(path)
    data = read_yaml(path).data
    if isinstance(data, dict) and "traits" in data and "scenario" not in data:
        template = load_template(path)
        return f"template '{template.name}'"
    scenario = load_scenario(path)
    groups = ", ".join(f"{g.name} x{g.count}" for g in scenario.citizens)
    return (f"'{scenario.name}': {groups}; "
            f"{format_duration(scenario.load_profile.duration)} of load")
