"""Demographic templates: trait distributions and behaviour of a kind of citizen.

A template is a YAML file in demographics/ (or anywhere, named by path). Each
trait has a kind that decides which distribution forms it accepts; every
distribution draws a whole block of citizens at once with numpy, which is what
keeps citizen generation off the load generator's critical path.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from esr.permissions import file_inside
from esr.population.presets import PRESETS
from esr.scenario import yaml_fields as f
from esr.scenario.yaml_source import MAX_FILE_BYTES, Document, KeyPath, parse_yaml, read_yaml
from esr.units import Span

DEMOGRAPHICS_DIR = Path(__file__).resolve().parent / "templates"

EMPLOYMENT = ("employed", "unemployed", "retired", "student", "not_in_labor_force")
DIGITAL_COMFORT = ("low", "medium", "high")
US_STATES = tuple(PRESETS["us_population"])

# Bounds of each numeric trait, so a typo (age 250, income -5) is caught at load time.
NUMERIC_BOUNDS = {"age": (0, 120), "income": (0, 100_000_000), "household_size": (1, 20)}


# ---- distributions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Constant:
    value: object

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, dtype=object if isinstance(self.value, str) else None)

    def __str__(self) -> str:
        return f"always {self.value}"


@dataclass(frozen=True)
class Probability:
    p: float

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.random(n) < self.p

    def __str__(self) -> str:
        return f"{self.p:.1%} true"


@dataclass(frozen=True)
class Weights:
    values: tuple
    weights: tuple[float, ...]  # normalised to sum to 1

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        index = rng.choice(len(self.values), size=n, p=self.weights)
        return np.asarray(self.values, dtype=object)[index]

    def __str__(self) -> str:
        shown = sorted(zip(self.values, self.weights, strict=True), key=lambda vw: -vw[1])[:12]
        more = f", … ({len(self.values)} values)" if len(self.values) > len(shown) else ""
        return ", ".join(f"{v}: {w:.1%}" for v, w in shown) + more


@dataclass(frozen=True)
class Uniform:
    low: int
    high: int

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.low, self.high + 1, size=n)

    def __str__(self) -> str:
        return f"uniform {self.low}..{self.high}"


@dataclass(frozen=True)
class Bands:
    """Whole numbers uniform within each inclusive band, bands chosen by weight."""

    bands: tuple[tuple[int, int], ...]
    weights: tuple[float, ...]

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        lows = np.array([b[0] for b in self.bands])
        widths = np.array([b[1] - b[0] + 1 for b in self.bands])
        index = rng.choice(len(self.bands), size=n, p=self.weights)
        return lows[index] + (rng.random(n) * widths[index]).astype(np.int64)

    def __str__(self) -> str:
        return ", ".join(f"{lo}-{hi}: {w:.1%}"
                         for (lo, hi), w in zip(self.bands, self.weights, strict=True))


@dataclass(frozen=True)
class Normal:
    mean: float
    sd: float
    low: float
    high: float

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.clip(np.rint(rng.normal(self.mean, self.sd, n)), self.low, self.high)

    def __str__(self) -> str:
        return f"normal mean {self.mean:g} sd {self.sd:g}, within {self.low:g}..{self.high:g}"


@dataclass(frozen=True)
class LogNormal:
    median: float
    sigma: float
    low: float
    high: float

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        values = rng.lognormal(math.log(self.median), self.sigma, n)
        return np.clip(np.rint(values), self.low, self.high)

    def __str__(self) -> str:
        return (f"lognormal median {self.median:g} sigma {self.sigma:g}, "
                f"within {self.low:g}..{self.high:g}")


Distribution = Constant | Probability | Weights | Uniform | Bands | Normal | LogNormal


# ---- the template model ----------------------------------------------------------------------


@dataclass(frozen=True)
class Traits:
    age: Distribution
    income: Distribution
    veteran: Distribution
    household_size: Distribution
    disability: Distribution
    employment: Distribution
    state: Distribution
    language: Distribution
    digital_comfort: Distribution


TRAIT_KINDS = {"age": "number", "income": "number", "veteran": "boolean",
               "household_size": "number", "disability": "boolean", "employment": "category",
               "state": "category", "language": "category", "digital_comfort": "category"}
TRAIT_NAMES = tuple(field.name for field in fields(Traits))
CATEGORY_VALUES = {"employment": EMPLOYMENT, "digital_comfort": DIGITAL_COMFORT,
                   "state": US_STATES}


@dataclass(frozen=True)
class Behavior:
    think_time: Span  # pause between steps of a journey
    patience: float  # seconds a step may take before the citizen is frustrated
    retries: int  # further tries of a failed step


BEHAVIOR_KEYS = tuple(field.name for field in fields(Behavior))


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    file: str
    traits: Traits
    behavior: Behavior


TEMPLATE_KEYS = ("template", "description", "traits", "behavior")


def available_templates(directory: Path = DEMOGRAPHICS_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yml"))


def template_file(name: str, relative_to: Path | None = None) -> Path | None:
    """A template name from demographics/, or a file under the scenario's folder (None when
    the path leads outside it). Without a folder, as a name on esr-locust's own command
    line, a path is taken as given."""
    if name.endswith((".yml", ".yaml")) or "/" in name:
        return Path(name) if relative_to is None else file_inside(relative_to, name)
    return DEMOGRAPHICS_DIR / f"{name}.yml"


def load_template(path: Path, problems: list | None = None) -> Template | None:
    """Read and check one template file; problems go to the given list (or raise)."""
    template, found = _read_template_file(path)
    if problems is None:
        from esr.errors import ScenarioError
        if found:
            raise ScenarioError(list(found))
    else:
        problems.extend(found)
    return template


# Templates read lately, by file name and content: a long-lived process (the service, the web
# UI, a test run) reads the same few again with every scenario that names them, and YAML with
# every value's place in the file is parsed in Python, 10-30 ms a template. Whatever the file
# holds is read each time; only a content already read is not parsed again.
TEMPLATES_KEPT = 32
_read_lately: dict[tuple[str, bytes], tuple[Template | None, tuple]] = {}


def _read_template_file(path: Path) -> tuple[Template | None, tuple]:
    """The template in a file and the problems found in it (read_yaml's caps and errors)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        data = text = None
    if text is None or len(data) > MAX_FILE_BYTES:
        doc = read_yaml(path)  # says what is wrong with the file, as for any YAML file
        return read_template(doc, expected_name=path.stem), tuple(doc.problems)
    key = (str(path), hashlib.sha256(data).digest())
    known = _read_lately.get(key)
    if known is None:
        doc = parse_yaml(text, str(path))  # what read_yaml does once it has the text
        known = read_template(doc, expected_name=path.stem), tuple(doc.problems)
        if len(_read_lately) >= TEMPLATES_KEPT:
            _read_lately.clear()
        _read_lately[key] = known
    return known


def read_template(doc: Document, expected_name: str) -> Template | None:
    if doc.problems:
        return None
    if not (isinstance(doc.data, dict) and set(TEMPLATE_KEYS) & doc.data.keys()):
        # Say nothing of what the file holds: it may be any file, not a template at all.
        doc.problem((), "not a demographic template", "a template is a mapping with the keys "
                    "template, traits and behavior, like those in demographics/")
        return None
    data = doc.data
    f.check_keys(doc, (), data, TEMPLATE_KEYS, required=("template", "traits", "behavior"))
    name = f.text(doc, ("template",), data.get("template", expected_name))
    if name and name != expected_name:
        doc.problem(("template",), f"the template is named '{name}' but its file is "
                    f"'{expected_name}.yml'", "make the two names agree")
    description = data.get("description", "")
    if not isinstance(description, str):
        doc.problem(("description",), f"expected text, got {f.describe(description)}")
    # A missing section is already reported as missing: don't read it as empty as well.
    traits = read_traits(doc, ("traits",), data["traits"], complete=True) \
        if "traits" in data else None
    behavior = read_behavior(doc, ("behavior",), data["behavior"], complete=True) \
        if "behavior" in data else None
    if doc.problems:
        return None
    return Template(expected_name, description, doc.file, traits, behavior)


def read_traits(doc: Document, path: KeyPath, value: object, complete: bool,
                base: Traits | None = None) -> Traits | None:
    """All traits for a template (complete), or overrides on top of a base template's."""
    data = f.mapping(doc, path, value, "traits")
    if data is f.INVALID:
        return None
    f.check_keys(doc, path, data, TRAIT_NAMES, required=TRAIT_NAMES if complete else ())
    read = {name: read_distribution(doc, (*path, name), name, data[name])
            for name in TRAIT_NAMES if name in data}
    if any(v is f.INVALID for v in read.values()) or (complete and len(read) < len(TRAIT_NAMES)):
        return None
    return Traits(**read) if base is None else replace(base, **read)


def read_behavior(doc: Document, path: KeyPath, value: object, complete: bool,
                  base: Behavior | None = None) -> Behavior | None:
    data = f.mapping(doc, path, value, "behavior")
    if data is f.INVALID:
        return None
    f.check_keys(doc, path, data, BEHAVIOR_KEYS, required=BEHAVIOR_KEYS if complete else ())
    readers = {"think_time": lambda p, v: f.span(doc, p, v),
               "patience": lambda p, v: _positive_duration(doc, p, v),
               "retries": lambda p, v: f.number(doc, p, v, integer=True, minimum=0, maximum=10)}
    read = {key: readers[key]((*path, key), data[key]) for key in BEHAVIOR_KEYS if key in data}
    if any(v is f.INVALID for v in read.values()) or (complete and len(read) < len(BEHAVIOR_KEYS)):
        return None
    return Behavior(**read) if base is None else replace(base, **read)


def _positive_duration(doc: Document, path: KeyPath, value: object) -> float:
    seconds = f.duration(doc, path, value)
    if seconds is not f.INVALID and seconds <= 0:
        doc.problem(path, "patience must be longer than zero")
        return f.INVALID
    return seconds


# ---- distributions as written ----------------------------------------------------------------

_FORMS = {"number": ("uniform", "normal", "lognormal", "bands", "weights"),
          "boolean": (), "category": ("weights", "preset")}
_CLIPS = ("min", "max")


def read_distribution(doc: Document, path: KeyPath, trait: str, value: object):
    kind = TRAIT_KINDS[trait]
    if kind == "boolean":
        if isinstance(value, bool):
            return Constant(value)
        p = f.number(doc, path, value, minimum=0, maximum=1)
        return p if p is f.INVALID else Probability(float(p))
    if not isinstance(value, dict):
        return _constant(doc, path, trait, value)
    forms = [key for key in value if key in _FORMS[kind]]
    if len(forms) != 1:
        allowed = [*_FORMS[kind], *(_CLIPS if kind == "number" else ())]
        f.check_keys(doc, path, value, allowed)
        doc.problem(path, f"a {kind} distribution needs exactly one of "
                    f"{', '.join(_FORMS[kind])}" + (f", got {len(forms)}" if forms else ""))
        return f.INVALID
    form = forms[0]
    f.check_keys(doc, path, value, [form, *(_CLIPS if form in ("normal", "lognormal") else ())])
    reader = {"uniform": _uniform, "normal": _normal, "lognormal": _normal, "bands": _bands,
              "weights": _weights, "preset": _preset}[form]
    return reader(doc, path, trait, value, form)


def _constant(doc, path, trait, value):
    if TRAIT_KINDS[trait] == "number":
        low, high = NUMERIC_BOUNDS[trait]
        number = f.number(doc, path, value, integer=True, minimum=low, maximum=high)
        return number if number is f.INVALID else Constant(number)
    category = _category_value(doc, path, trait, value)
    return category if category is f.INVALID else Constant(category)


def _fits(trait: str, value: object) -> bool:
    allowed = CATEGORY_VALUES.get(trait)
    if allowed is not None:
        return value in allowed
    # language: ISO 639-1 codes and 'other'
    return isinstance(value, str) and (value == "other" or (len(value) == 2 and value.islower()))


def _category_value(doc, path, trait, value):
    if _fits(trait, value):
        return value
    if trait not in CATEGORY_VALUES:
        doc.problem(path, f"expected a two-letter language code (ISO 639-1) or 'other', "
                    f"got {f.describe(value)}")
        return f.INVALID
    return f.choice(doc, path, value, CATEGORY_VALUES[trait], what=trait.replace("_", " "))


def _in_bounds(doc, path, trait, value):
    low, high = NUMERIC_BOUNDS[trait]
    return f.number(doc, path, value, minimum=low, maximum=high)


def _uniform(doc, path, trait, value, form):
    bounds = value[form]
    if not (isinstance(bounds, list) and len(bounds) == 2):
        doc.problem((*path, form), "expected [low, high]")
        return f.INVALID
    low, high = (_in_bounds(doc, (*path, form, i), trait, b) for i, b in enumerate(bounds))
    if low is f.INVALID or high is f.INVALID:
        return f.INVALID
    if low > high:
        doc.problem((*path, form), f"low {low} is above high {high}", "write [low, high]")
        return f.INVALID
    return Uniform(int(low), int(high))


def _normal(doc, path, trait, value, form):
    params = f.mapping(doc, (*path, form), value[form], f"the {form} parameters")
    if params is f.INVALID:
        return f.INVALID
    centre = "mean" if form == "normal" else "median"
    spread = "sd" if form == "normal" else "sigma"
    f.check_keys(doc, (*path, form), params, (centre, spread), required=(centre, spread))
    low, high = NUMERIC_BOUNDS[trait]
    middle = f.number(doc, (*path, form, centre), params.get(centre, 1),
                      minimum=low, maximum=high, above=0 if form == "lognormal" else None)
    width = f.number(doc, (*path, form, spread), params.get(spread, 1), above=0)
    clip_low = _in_bounds(doc, (*path, "min"), trait, value.get("min", low))
    clip_high = _in_bounds(doc, (*path, "max"), trait, value.get("max", high))
    if f.INVALID in (middle, width, clip_low, clip_high) or centre not in params:
        return f.INVALID
    if clip_low > clip_high:
        doc.problem((*path, "min"), f"min {clip_low} is above max {clip_high}")
        return f.INVALID
    kind = Normal if form == "normal" else LogNormal
    return kind(float(middle), float(width), float(clip_low), float(clip_high))


def _bands(doc, path, trait, value, form):
    rows = value[form]
    if not isinstance(rows, list) or not rows:
        doc.problem((*path, form), "expected a list of [low, high, weight] bands")
        return f.INVALID
    bands, weights = [], []
    for i, row in enumerate(rows):
        where = (*path, form, i)
        if not (isinstance(row, list) and len(row) == 3):
            doc.problem(where, f"expected [low, high, weight], got {f.describe(row)}")
            continue
        low = f.number(doc, (*where, 0), row[0], integer=True, minimum=NUMERIC_BOUNDS[trait][0])
        high = f.number(doc, (*where, 1), row[1], integer=True, maximum=NUMERIC_BOUNDS[trait][1])
        weight = f.number(doc, (*where, 2), row[2], above=0)
        if f.INVALID in (low, high, weight):
            continue
        if low > high:
            doc.problem(where, f"band {low}-{high} runs backwards", "write [low, high, weight]")
            continue
        bands.append((low, high))
        weights.append(weight)
    if len(bands) != len(rows):
        return f.INVALID
    return Bands(tuple(bands), _normalised(weights))


def _weights(doc, path, trait, value, form):
    table = f.mapping(doc, (*path, form), value[form], "a table of value: weight")
    if table is f.INVALID:
        return f.INVALID
    if not table:
        doc.problem((*path, form), "no values to choose from", "give at least one value: weight")
        return f.INVALID
    values, weights = [], []
    for key, weight in table.items():
        where = (*path, form, key)
        if TRAIT_KINDS[trait] == "number":
            item = _in_bounds(doc, where, trait, _as_number(key))
        else:
            item = _category_value(doc, where, trait, key)
        w = f.number(doc, where, weight, minimum=0)
        if item is not f.INVALID and w is not f.INVALID:
            values.append(item)
            weights.append(w)
    if len(values) != len(table):
        return f.INVALID
    if sum(weights) <= 0:
        doc.problem((*path, form), "the weights add up to zero",
                    "give at least one value a positive weight")
        return f.INVALID
    return Weights(tuple(values), _normalised(weights))


def _preset(doc, path, trait, value, form):
    name = f.choice(doc, (*path, form), value[form], PRESETS, what="preset")
    if name is f.INVALID:
        return f.INVALID
    table = PRESETS[name]
    if not all(_fits(trait, key) for key in table):
        doc.problem((*path, form), f"preset '{name}' does not fit {trait}")
        return f.INVALID
    return Weights(tuple(table), _normalised(list(table.values())))


def _as_number(key: object) -> object:
    if isinstance(key, str):
        try:
            return int(key)
        except ValueError:
            return key
    return key


def _normalised(weights: list[float]) -> tuple[float, ...]:
    total = float(sum(weights))
    return tuple(w / total for w in weights)
