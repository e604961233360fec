"""Scenario -> Locust: one CitizenUser subclass per citizen group, and the load shape.

Classes are made with type(), never from generated source; every process builds
the same classes from the same scenario file, since workers find them by name.
"""

from __future__ import annotations

from esr.engine.journey import CitizenUser
from esr.engine.shape import ScenarioShape
from esr.scenario.model import Scenario
from esr.scenario.plan import class_name


def user_classes(scenario: Scenario) -> dict[str, type[CitizenUser]]:
    """The generated classes by name, weighted by each group's count."""
    classes = {}
    for index, group in enumerate(scenario.citizens):
        name = class_name(group.name)
        classes[name] = type(name, (CitizenUser,), {
            "group": group, "group_index": index, "weight": group.count, "abstract": False,
            "host": scenario.target, "__module__": __name__})
    return classes


def locustfile_globals(scenario: Scenario) -> dict[str, type]:
    """What a locustfile must bind at module level for Locust to find ESR's run."""
    return {**user_classes(scenario), "ScenarioShape": ScenarioShape}
