"""esr-locust: the pipeline face of ESR. Parses arguments, calls the API, renders the result.

Every failure a user can cause is an EsrError, caught here once and printed as
one line per problem, with the exit code its kind carries.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import fields

from . import __version__
from .errors import EXIT_OK, BadInput, EsrError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_OK
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
    from .validation import validate_file

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
    from .demographics import available_templates, load_template, template_file

    names = available_templates()
    if args.name is None:
        for name in names:
            template = load_template(template_file(name))
            print(f"{name:<12} {template.description}")
        return EXIT_OK
    file = template_file(args.name)
    if not file.is_file():
        from .fields import did_you_mean
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
    parser.add_argument("--count", type=_positive_int, default=10, metavar="N",
                        help="how many citizens to show (default 10)")
    parser.add_argument("--json", action="store_true", help="JSON lines with every trait")


def citizens(args: argparse.Namespace) -> int:
    from .citizens import preview
    from .scenario import load_scenario

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# ---- schema ------------------------------------------------------------------------------------


def schema(args: argparse.Namespace) -> int:
    from .schema import scenario_schema

    print(json.dumps(scenario_schema(), indent=2))
    return EXIT_OK


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


# ---- demo --------------------------------------------------------------------------------------


def demo(args: argparse.Namespace) -> int:
    """Until the run engine lands: check every example scenario and show a few citizens."""
    from .demographics import DEMOGRAPHICS_DIR

    examples = sorted((DEMOGRAPHICS_DIR.parent / "examples").glob("*.yml"))
    validate(argparse.Namespace(files=[str(p) for p in examples]))
    seed = next(p for p in examples if p.name == "mixed_demographics.yml")
    print(f"\nThe first citizens of {seed.name}:")
    return citizens(argparse.Namespace(scenario=str(seed), count=8, json=False))


COMMANDS: dict[str, tuple[Callable, str, Callable]] = {
    "validate": (validate, "check scenario and template files; exit 2 listing every problem",
                 _validate_arguments),
    "templates": (templates, "list demographic templates, or show one", _templates_arguments),
    "citizens": (citizens, "preview the first citizens a scenario makes", _citizens_arguments),
    "schema": (schema, "print the JSON Schema of the scenario language", _no_arguments),
    "demo": (demo, "the demo: check the example scenarios and preview their citizens",
             _no_arguments),
}

if __name__ == "__main__":
    sys.exit(main())
