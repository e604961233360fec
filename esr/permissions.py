"""The one rule of trust: a scenario may make HTTP requests and nothing else.

A scenario is input, not code (it may come from another agency). Whatever else one of
its chaos actions would do on the machine that runs it needs a flag on the command line
of the process that runs it, which no scenario key, web form field, environment variable
or request can set:

    the action                                         needs the flag
    http, latency, error_rate; kill_pod, stop_service,
      restore_service through the target's admin API   nothing
    command: runs a shell command                      --allow-chaos-commands
    signal: reads a pid file, signals that process     --allow-chaos-signals
    anything with compose_project: runs docker         --allow-chaos-containers

(The Locust process itself, as `locust -f locustfiles/esr.py`, takes the same flags
with an --esr- prefix: --esr-allow-chaos-signals.)

HTTP means http:// and https:// URLs only; the only local files a scenario may name are
its templates, inside its own folder. Every check of this rule is a call into this
module: the launcher before anything starts, the Locust process when it starts, each
chaos action before it runs, and the scenario reader for URLs and template paths.
No Locust import here: the launcher uses it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .errors import Problem, ScenarioError

if TYPE_CHECKING:
    from .scenario import ChaosAction, Scenario

HTTP_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class Permission:
    """Something a chaos action may do on this machine once its flag is given."""

    name: str  # commands | signals | containers
    does: str  # what such an action does, for the refusal
    help: str  # what the flag allows, for --help

    @property
    def flag(self) -> str:  # esr-locust run, ui, master
        return f"--allow-chaos-{self.name}"

    @property
    def engine_flag(self) -> str:  # the Locust process: locust -f locustfiles/esr.py
        return f"--esr-allow-chaos-{self.name}"

    @property
    def setting(self) -> str:  # RunSettings, and esr-locust's parsed arguments
        return f"allow_chaos_{self.name}"

    @property
    def option(self) -> str:  # the Locust process's parsed options
        return f"esr_allow_chaos_{self.name}"


COMMANDS = Permission("commands", "runs a shell command on this machine",
                      "let chaos actions run shell commands (action: command)")
SIGNALS = Permission("signals", "reads a pid file and sends a signal to that process",
                     "let chaos actions read pid files and signal those processes "
                     "(action: signal)")
CONTAINERS = Permission("containers", "runs docker compose on this machine",
                        "let chaos actions run docker compose (compose_project)")
PERMISSIONS = (COMMANDS, SIGNALS, CONTAINERS)


def runs_containers(action: ChaosAction) -> bool:
    """Does this action drive a compose project (docker) rather than the target's admin API?"""
    return bool((action.options or {}).get("compose_project"))


def needed_by(action: ChaosAction) -> Permission | None:
    """What an action needs beyond HTTP requests; None when HTTP is all it makes."""
    if action.action == "command":
        return COMMANDS
    if action.action == "signal":
        return SIGNALS
    if runs_containers(action):
        return CONTAINERS
    return None


def granted_by(settings: object, *, engine: bool = False) -> frozenset[str]:
    """The permissions a process was started with: read from its RunSettings or esr-locust
    arguments, or (engine) the Locust process's parsed options. Only a real True counts, so
    text such as a form field's "true" grants nothing."""
    return frozenset(p.name for p in PERMISSIONS
                     if getattr(settings, p.option if engine else p.setting, False) is True)


def named_on(argv: list[str], *, engine: bool = False) -> frozenset[str]:
    """The permissions whose flag is written on this command line."""
    flags = {arg.split("=", 1)[0] for arg in argv}
    return frozenset(p.name for p in PERMISSIONS
                     if (p.engine_flag if engine else p.flag) in flags)


def refusals(scenario: Scenario, granted: frozenset[str], *, engine: bool = False
             ) -> list[Problem]:
    """Every chaos action of the scenario that needs a permission not granted, as a problem
    naming the action's place and the flag that would allow it."""
    found = []
    for action in scenario.chaos:
        permission = needed_by(action)
        if permission is None or permission.name in granted:
            continue
        flag = permission.engine_flag if engine else permission.flag
        found.append(Problem(
            scenario.file, action.line, action.column, action.path,
            f"chaos action '{action.action}' {permission.does}, and a scenario may make HTTP "
            "requests and nothing else", f"allow it with {flag} on the command line"))
    return found


def check(scenario: Scenario, granted: frozenset[str], *, engine: bool = False) -> None:
    """Refuse (exit 2) a scenario with any action the process was not started to allow."""
    refused = refusals(scenario, granted, engine=engine)
    if refused:
        raise ChaosRefused(refused)


class ChaosRefused(ScenarioError):
    """Chaos actions this process was not started to allow."""


def refused_outcome(action: ChaosAction, granted: frozenset[str]) -> str | None:
    """Why the Locust process must not perform this action now, or None when it may."""
    permission = needed_by(action)
    if permission is not None and permission.name not in granted:
        return f"refused: chaos action '{action.action}' needs {permission.engine_flag}"
    return None


def is_http_url(url: str) -> bool:
    """An http:// or https:// URL with a host: the only kind a scenario may request."""
    try:
        parts = urlsplit(url)
        return parts.scheme.lower() in HTTP_SCHEMES and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False


def file_inside(folder: Path, name: str) -> Path | None:
    """A local file a scenario names (a template), resolved through symlinks and '..';
    None when it lies outside the scenario's own folder, or cannot be named at all."""
    try:
        root = os.path.realpath(folder)
        path = os.path.realpath(os.path.join(root, name))  # an absolute name replaces root
    except (ValueError, OSError):  # a NUL byte, a name too long
        return None
    inside = os.path.commonpath([root, path]) == root
    return Path(path) if inside else None
