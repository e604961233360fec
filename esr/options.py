"""ESR's own command-line options, fixed when the process starts.

Locust's web UI copies every field posted to `/swarm` whose name is a parsed option into
`environment.parsed_options` (that is how its custom-argument fields work), and a master
sends its parsed options to its workers with every spawn message. So ESR reads its options
(every one whose dest starts with `esr_`, whoever added it) once, at `init`, into an
`EsrOptions`; keeps them out of the web form; and leaves in `parsed_options` only read-only
views of the same values, which neither a form post nor a spawn message can change.
What a worker needs to know of each run (its id and scales) comes from its master in ESR's
own messages (engine.RunValues), never through the form.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

PREFIX = "esr_"  # every option ESR adds has a dest starting with this (--esr-...)
FIXED = "_esr_fixed_options"  # where the fixed options hang on parsed_options' new class


class EsrOptions:
    """This process's ESR options, read-only: `options.reports_dir` is --esr-reports-dir."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, object]):
        frozen = {name: tuple(v) if isinstance(v, list) else v for name, v in values.items()}
        object.__setattr__(self, "_values", MappingProxyType(frozen))

    def __getattr__(self, name: str):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"ESR has no option --esr-{name.replace('_', '-')}") from None

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"ESR's options are fixed when the process starts (--esr-"
                             f"{name.replace('_', '-')})")

    def __repr__(self) -> str:
        return f"EsrOptions({dict(self._values)!r})"


def hide_from_web_form(parser) -> None:
    """Locust renders a form field for every custom option it may show: none of ESR's."""
    for action in parser._actions:
        if action.dest.startswith(PREFIX):
            action.include_in_web_ui = False


def fix_options(parsed_options) -> EsrOptions:
    """Take ESR's options out of reach of the web form, once; return them, read-only.

    The values move from the namespace's own attributes (which Locust's /swarm handler and
    a worker's spawn handler write through `vars()`) to read-only properties of a class of
    its own: `/swarm` no longer sees a field it may set, the master no longer sends them to
    its workers, and anything reading `parsed_options.esr_...` reads the value fixed here.
    """
    if parsed_options is None:  # an Environment made in Python, without a command line
        return EsrOptions({})
    if isinstance(getattr(type(parsed_options), FIXED, None), EsrOptions):  # init fired again
        return getattr(type(parsed_options), FIXED)
    held = {name: value for name, value in vars(parsed_options).items()
            if name.startswith(PREFIX)}
    fixed = EsrOptions({name[len(PREFIX):]: value for name, value in held.items()})
    views = {name: property(lambda _, name=name: getattr(fixed, name[len(PREFIX):]))
             for name in held}
    views[FIXED] = fixed
    for name in held:
        delattr(parsed_options, name)
    parsed_options.__class__ = type("FixedOptions", (type(parsed_options),), views)
    return fixed
