"""esr-locust: the pipeline face of ESR. Parses arguments, calls the API, renders the result.

Every failure a user can cause is an EsrError, caught here once and printed as
one line per problem, with the exit code its kind carries.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from esr import __version__
from esr.arguments import (
    host_port,
    local_workers,
    metrics_arguments,
    non_negative_int,
    positive_float,
    positive_int,
    workers_argument,
)
from esr.errors import EXIT_OK, BadInput, EsrError
from esr.service_commands import SERVICE_COMMANDS

DEMO_SCENARIO = Path(__file__).resolve().parent / "demo" / "scenario.yml"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_OK
    # `docker stop` sends SIGTERM: stop as gracefully as after a Ctrl-C, losing nothing.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.handler(args) or EXIT_OK
    except EsrError as error:
        for line in error.lines():
            print(f"esr-locust: {line}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("esr-locust: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `esr-locust citizens … | head` closed our output early
        sys.stderr.close()
        return EXIT_OK


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esr-locust", description="ESR: rehearse a public-service launch with synthetic "
        "citizens on Locust.")
    parser.add_argument("--version", action="version", version=f"esr-locust {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, (handler, help_text, arguments) in COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        arguments(command)
        command.set_defaults(handler=handler)
    return parser


# ---- validate ----------------------------------------------------------------------------------


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="scenario or template files")


def validate(args: argparse.Namespace) -> int:
    from esr.scenario.validation import validate_file

    problems = []
    for file in args.files:
        try:
            print(f"{file}: ok, {validate_file(file)}")
        except EsrError as error:
            problems.extend(error.lines())
    if problems:
        raise _Many(problems)
    return EXIT_OK


class _Many(BadInput):
    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self._lines = lines

    def lines(self) -> list[str]:
        return self._lines


# ---- templates ---------------------------------------------------------------------------------


def _templates_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show this template's distributions")


def templates(args: argparse.Namespace) -> int:
    from esr.population.demographics import available_templates, load_template, template_file

    names = available_templates()
    if args.name is None:
        for name in names:
            template = load_template(template_file(name))
            print(f"{name:<12} {template.description}")
        return EXIT_OK
    file = template_file(args.name)
    if not file.is_file():
        from esr.scenario.yaml_fields import did_you_mean
        hint = did_you_mean(args.name, names) or f"known templates: {', '.join(names)}"
        raise BadInput(f"unknown template '{args.name}' ({hint})")
    template = load_template(file)
    print(f"{template.name}: {template.description}\n  file: {template.file}\n  traits:")
    for field in fields(template.traits):
        print(f"    {field.name:<16} {getattr(template.traits, field.name)}")
    behavior = template.behavior
    print(f"  behavior:\n    think_time       {behavior.think_time}\n"
          f"    patience         {behavior.patience:g}s\n    retries          {behavior.retries}")
    return EXIT_OK


# ---- citizens ----------------------------------------------------------------------------------

_PREVIEW_COLUMNS = ("citizen_id", "name", "age", "age_band", "veteran", "income",
                    "household_size", "state", "language", "digital_comfort")


def _citizens_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO")
    parser.add_argument("--count", type=positive_int, default=10, metavar="N",
                        help="how many citizens to show (default 10)")
    parser.add_argument("--json", action="store_true", help="JSON lines with every trait")


def citizens(args: argparse.Namespace) -> int:
    from esr.population.citizens import preview
    from esr.scenario.reader import load_scenario

    scenario = load_scenario(args.scenario)
    rows = preview(scenario, args.count)
    if args.json:
        for citizen in rows:
            print(json.dumps(citizen))
        return EXIT_OK
    rows = [[str(citizen[c]) for c in _PREVIEW_COLUMNS] for citizen in rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_PREVIEW_COLUMNS)]
    for row in [list(_PREVIEW_COLUMNS), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return EXIT_OK




# ---- schema ------------------------------------------------------------------------------------


def schema(args: argparse.Namespace) -> int:
    from esr.scenario.schema import scenario_schema

    print(json.dumps(scenario_schema(), indent=2))
    return EXIT_OK


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


# ---- compile, run, target, demo -----------------------------------------------------------------


def _scale_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--time-scale", type=positive_float, default=1.0, metavar="F",
                        help="multiply every duration by F (0.01 turns 30m into 18s)")
    parser.add_argument("--user-scale", type=positive_float, default=1.0, metavar="F",
                        help="multiply every citizen count by F")


def _compile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO")
    _scale_arguments(parser)


def compile_plan(args: argparse.Namespace) -> int:
    from esr.scenario.plan import plan_text
    from esr.scenario.reader import load_scenario

    print(plan_text(load_scenario(args.scenario), args.time_scale, args.user_scale))
    return EXIT_OK


def _local_run_arguments(parser: argparse.ArgumentParser) -> None:
    """What `run` and `ui` both ask: the scenario, its target, local workers, permissions."""
    parser.add_argument("scenario", metavar="SCENARIO")
    parser.add_argument("--host", metavar="URL", help="target base URL (overrides target:)")
    workers_argument(parser)
    _permission_arguments(parser)


def _permission_arguments(parser: argparse.ArgumentParser) -> None:
    """A scenario may make HTTP requests and nothing else: these flags allow more."""
    from .permissions import PERMISSIONS

    for permission in PERMISSIONS:
        parser.add_argument(permission.flag, action="store_true", help=permission.help)


def _permissions(args: argparse.Namespace) -> dict[str, bool]:
    """The permission flags given, as RunSettings fields."""
    from .permissions import PERMISSIONS

    return {p.setting: getattr(args, p.setting) for p in PERMISSIONS}


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    _local_run_arguments(parser)
    parser.add_argument("--run-dir", metavar="DIR", help="where the run's files go "
                        "(default reports/<run-id>)")
    _scale_arguments(parser)
    metrics_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from esr.launcher import RunSettings

    settings = RunSettings(scenario=Path(args.scenario), host=args.host,
                           workers=local_workers(args),
                           run_dir=Path(args.run_dir) if args.run_dir else None,
                           time_scale=args.time_scale, user_scale=args.user_scale,
                           **_permissions(args))
    return _run_and_report(settings, args)


def _run_and_report(settings, args: argparse.Namespace | None = None) -> int:

    from esr.launcher import Launch, describe_plan

    launch = Launch.prepare(settings)
    print(describe_plan(settings, launch), file=sys.stderr)
    with _metrics(args, lambda: [launch.run_dir]) as metrics:
        launch.start()
        exit_code = _follow_and_report(launch)
        if metrics is not None:
            metrics.linger(args.metrics_linger)
    return exit_code


def _follow_and_report(launch) -> int:
    from esr.alerts import LiveAlerts
    from esr.launcher import ProgressLine

    result = launch.wait(ProgressLine(alerts=LiveAlerts.for_scenario(launch.scenario)))
    # The report card's modules (pandas, scipy: 2 s of CPU) load once the run is over, never
    # beside it: loaded in a thread while it went on, even at the lowest priority, they made
    # a load process sharing their core drop hundreds of open-model arrivals a run (none
    # without them; benchmarks/open_model.py pins both to one core).
    from esr.report.render import write_report_card

    _print_summary(result.summary)
    written = write_report_card(result.run_dir, launch.scenario.report_formats)
    for fmt, path in written.items():
        if fmt != "html":
            print(f"  {fmt}: {path}", file=sys.stderr)
    print(written.get("html") or result.run_dir / "summary.json")
    return result.exit_code


@contextlib.contextmanager
def _metrics(args: argparse.Namespace | None, run_dirs: Callable[[], list[Path]]):
    """The Prometheus endpoint of --metrics-bind while the block runs (None without it)."""
    bind = getattr(args, "metrics_bind", None)
    if bind is None:
        yield None
        return
    from esr.metrics import MetricsServer

    try:
        server = MetricsServer(bind, run_dirs)
    except OSError as error:
        raise BadInput(f"--metrics-bind {bind[0]}:{bind[1]}: cannot listen there "
                       f"({error.strerror}); choose another port") from None
    print(f"esr-locust: metrics on {server.url}", file=sys.stderr)
    with server:
        yield server


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (reports/<run-id>)")
    parser.add_argument("--format", default="html,pdf,json,junit", metavar="LIST",
                        help="comma-separated: html, pdf, json, junit (default: all)")
    parser.add_argument("--out", metavar="DIR", help="where to write (default: the run directory)")


def report(args: argparse.Namespace) -> int:
    from esr.report.render import parse_formats, write_report_card

    written = write_report_card(Path(args.run_dir), parse_formats(args.format),
                                Path(args.out) if args.out else None)
    for path in written.values():
        print(path)
    return EXIT_OK


def _print_summary(summary: dict) -> None:
    requests, citizens, slo = summary["requests"], summary["citizens"], summary["slo"]
    print(f"requests {requests['total']} ({requests['failures']} failed), "
          f"{requests['rps']:.1f}/s, p50 {requests['p50_ms']:.0f} ms, "
          f"p95 {requests['p95_ms']:.0f} ms, p99 {requests['p99_ms']:.0f} ms", file=sys.stderr)
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(citizens["by_outcome"].items()))
    print(f"citizens {citizens['total']}: {outcomes}", file=sys.stderr)
    for cohort in summary["cohorts"]:
        if cohort["flagged"]:
            print(f"  flagged: {cohort['age_band']} {'veterans' if cohort['veteran'] else ''}"
                  f" approved at {cohort['impact_ratio']:.2f}x the best cohort's rate",
                  file=sys.stderr)
    for check in slo["checks"]:
        print(f"  SLO {check['name']}: {check['actual']} vs {check['threshold']} "
              f"{'ok' if check['passed'] else 'FAILED'}", file=sys.stderr)
    if summary["lost"]["workers"] or summary["lost"]["requests_unaccounted"]:
        print(f"  lost: {summary['lost']}", file=sys.stderr)
    generator = summary["load_generator"]
    if generator["limited"]:
        print(f"  the load generator, not the target, was the limit: "
              f"{'; '.join(generator['findings'])}. {generator['advice']}", file=sys.stderr)


def _master_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO")
    parser.add_argument("--expect-workers", type=positive_int, default=1, metavar="N",
                        help="start when N workers have connected (default 1)")
    parser.add_argument("--bind", type=host_port, default=("127.0.0.1", 5557),
                        metavar="HOST:PORT", help="where workers connect (default "
                        "127.0.0.1:5557, this machine only; 0.0.0.0:5557 for other hosts)")
    parser.add_argument("--host", metavar="URL", help="target base URL (overrides target:)")
    parser.add_argument("--run-dir", metavar="DIR")
    _permission_arguments(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--headless", dest="web", action="store_false",
                      help="run the scenario at once and end with the report card (default)")
    mode.add_argument("--web", dest="web", action="store_true",
                      help="serve Locust's web UI with ESR's tab; runs start from the browser")
    parser.set_defaults(web=False)
    _web_arguments(parser)
    _scale_arguments(parser)
    metrics_arguments(parser)


WEB_BIND = ("127.0.0.1", 8089)  # this machine only: the web UI starts load against any host


def _web_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--web-bind", type=host_port, default=WEB_BIND, metavar="HOST:PORT",
                        help=f"where the web UI listens (default {WEB_BIND[0]}:{WEB_BIND[1]}; "
                             "anything else without --web-login is warned about)")
    parser.add_argument("--web-login", action="store_true",
                        help="require a login to the web UI (user and password from "
                             "ESR_WEB_USER and ESR_WEB_PASSWORD)")


def master(args: argparse.Namespace) -> int:
    """A master for workers on other hosts: one headless run and its report card, or the
    web UI, where each run started gets its own run directory and report card."""
    from esr.launcher import RunSettings

    settings = RunSettings(scenario=Path(args.scenario), host=args.host,
                           workers=args.expect_workers, bind=args.bind,
                           run_dir=Path(args.run_dir) if args.run_dir else None,
                           time_scale=args.time_scale, user_scale=args.user_scale,
                           **_permissions(args),
                           web=args.web_bind if args.web else None, web_login=args.web_login,
                           reports_dir=Path(args.run_dir or "reports"))
    return _serve_web_ui(settings, args) if args.web else _run_and_report(settings, args)


def _ui_arguments(parser: argparse.ArgumentParser) -> None:
    _local_run_arguments(parser)
    parser.add_argument("--reports-dir", default="reports", metavar="DIR",
                        help="where each run started in the UI gets its directory "
                        "(default reports/)")
    _web_arguments(parser)
    _scale_arguments(parser)
    metrics_arguments(parser)


def ui(args: argparse.Namespace) -> int:
    """Locust's web UI with ESR's classes, shape and tab, and local workers."""
    from esr.launcher import RunSettings

    return _serve_web_ui(RunSettings(
        scenario=Path(args.scenario), host=args.host, workers=local_workers(args),
        time_scale=args.time_scale, user_scale=args.user_scale,
        **_permissions(args), web=args.web_bind,
        web_login=args.web_login, reports_dir=Path(args.reports_dir)), args)


def _serve_web_ui(settings, args: argparse.Namespace) -> int:
    from esr.launcher import Launch
    from esr.metrics import latest_run

    launch = Launch.prepare(settings)
    with _metrics(args, lambda: latest_run(settings.reports_dir)):
        launch.start()
        host, port = settings.web
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        print(f"esr-locust: web UI on http://{shown}:{port}/ (runs go to "
              f"{settings.reports_dir}/; Ctrl-C ends)", file=sys.stderr)
        return launch.serve()


def _worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO", nargs="?",
                        help="the same scenario file as the master's (checked by its hash); "
                             "without it, a standing worker: it takes each run's scenario "
                             "from the master, one run after another")
    parser.add_argument("--master", type=host_port, required=True, metavar="HOST:PORT",
                        help="the master's worker port (a service's --pool address)")


def worker(args: argparse.Namespace) -> int:
    import os

    from esr.launcher import worker_command

    if args.scenario is None:
        return _standing_worker(args.master)
    command, env = worker_command(Path(args.scenario), args.master)
    os.execve(command[0], command, env)  # signals (docker stop) reach Locust directly
    return EXIT_OK  # not reached


def _standing_worker(master: tuple[str, int]) -> int:
    from esr.launcher import worker_arguments
    from esr.pool import StandingWorker

    standing = StandingWorker(master, lambda scenario: worker_arguments(scenario, master))
    signal.signal(signal.SIGTERM, standing.stop)  # docker stop, kubectl delete: end gracefully
    print(f"esr-locust worker: a standing worker of the pool at {master[0]}:{master[1]} "
          "(Ctrl-C ends)", file=sys.stderr)
    try:
        return standing.serve()
    except KeyboardInterrupt:
        standing.stop()
        return EXIT_OK




def _target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=non_negative_int, default=8080, help="0 picks a free port")
    parser.add_argument("--capacity", type=positive_int, default=8,
                        help="applications handled at once; more queue")
    parser.add_argument("--service-ms", type=positive_float, default=5.0,
                        help="time each application takes")


def target(args: argparse.Namespace) -> int:
    from esr.demo.target import serve

    serve(host=args.host, port=args.port, capacity=args.capacity, service_ms=args.service_ms)
    return EXIT_OK


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    workers_argument(parser)
    parser.add_argument("--service", action="store_true",
                        help="run it through a local ESR service, as an agency would, and "
                        "print the report link")






def demo(args: argparse.Namespace) -> int:
    """The bundled demo target on a free port, and a short scenario against it."""
    from esr.demo.process import demo_target
    from esr.launcher import RunSettings

    with demo_target() as url:
        print(f"esr-locust: demo target at {url}", file=sys.stderr)
        if args.service:
            from esr.demo.through_service import demo_through_service

            return demo_through_service(DEMO_SCENARIO, url, local_workers(args))
        settings = RunSettings(scenario=DEMO_SCENARIO, host=url, workers=local_workers(args))
        return _run_and_report(settings)






COMMANDS: dict[str, tuple[Callable, str, Callable]] = {
    "validate": (validate, "check scenario and template files; exit 2 listing every problem",
                 _validate_arguments),
    "templates": (templates, "list demographic templates, or show one", _templates_arguments),
    "citizens": (citizens, "preview the first citizens a scenario makes", _citizens_arguments),
    "schema": (schema, "print the JSON Schema of the scenario language", _no_arguments),
    "compile": (compile_plan, "show what a scenario will run: classes, weights, stages",
                _compile_arguments),
    "run": (run, "run a scenario headless and write its run directory", _run_arguments),
    "report": (report, "build the report card of a run directory", _report_arguments),
    "ui": (ui, "serve Locust's web UI with the scenario and ESR's tab", _ui_arguments),
    "master": (master, "run as the master of workers on other hosts (headless or web UI)",
               _master_arguments),
    "worker": (worker, "run as a worker of a master on another host", _worker_arguments),
    "target": (target, "serve the bundled demo rental-assistance service", _target_arguments),
    "demo": (demo, "run the demo scenario against the bundled target", _demo_arguments),
}

# The service's commands (serve, tokens, audit, submit, runs, watch, fetch) live apart.
COMMANDS.update(SERVICE_COMMANDS)

if __name__ == "__main__":
    sys.exit(main())
