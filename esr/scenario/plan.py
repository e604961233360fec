"""What `esr-locust compile` shows: the user classes a scenario becomes, and its stage table.

No Locust here: the plan needs only the classes' names, which the engine's compiler takes
from `class_name` too, so the plan and the classes cannot disagree.
"""

from __future__ import annotations

import re

from esr.scenario.model import Scenario
from esr.scenario.stages import Phase, plan_stages
from esr.units import format_duration


def class_name(group_name: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", group_name)
    return "Citizen" + "".join(word[:1].upper() + word[1:] for word in words if word)



def plan_text(scenario: Scenario, time_scale: float = 1.0, user_scale: float = 1.0) -> str:
    """What `esr-locust compile` prints: classes, weights and the stage table."""
    total = sum(group.count for group in scenario.citizens)
    lines = [f"scenario: {scenario.name}  (seed {scenario.seed}, target {scenario.target})",
             "", "user classes:"]
    for group in scenario.citizens:
        name = class_name(group.name)
        lines.append(f"  {name:<24} weight {group.count:>7} ({group.count / total:6.1%})  "
                     f"template {group.template}, think {group.behavior.think_time}, "
                     f"patience {format_duration(group.behavior.patience)}, "
                     f"retries {group.behavior.retries}")
    steps = scenario.journey
    lines += ["", "journey: " + (" -> ".join(f"{s.method} {s.path}" for s in steps) if steps
                                 else "POST /apply with the citizen's traits (default)")]
    if scenario.load_profile.arrival_rate is not None:
        rate = scenario.load_profile.arrival_rate * user_scale / time_scale
        lines.append(f"open model: {rate * 60:g} arrivals/min, each citizen acts once")
    lines += ["", "stages:", _stage_table(plan_stages(scenario, time_scale, user_scale))]
    return "\n".join(lines)


def _stage_table(phases: tuple[Phase, ...]) -> str:
    rows = [("from", "to", "phase", "citizens", "spawn rate/s")]
    rows += [(format_duration(p.start), format_duration(p.end), p.name, str(p.citizens),
              f"{p.spawn_rate:g}") for p in phases]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     for row in rows)
