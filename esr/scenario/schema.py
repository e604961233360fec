"""JSON Schema of the scenario language, for editors (VS Code's YAML extension) and CI linters.

Built from the same key tables the loader reads, so the two cannot drift apart on
names; semantic checks (a spike after the end, …) remain the loader's alone.
"""

from __future__ import annotations

from esr.population.demographics import (
    BEHAVIOR_KEYS,
    DIGITAL_COMFORT,
    EMPLOYMENT,
    TRAIT_KINDS,
    US_STATES,
)
from esr.population.presets import PRESETS
from esr.scenario import reader as s
from esr.units import DURATION_EXAMPLES, DURATION_PATTERN, RATE_EXAMPLES, RATE_PATTERN

SCHEMA_ID = "https://esr.invalid/schema/scenario-v1.json"

DURATION = {"oneOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"const": 0}],
            "description": f"a duration such as {DURATION_EXAMPLES}"}
RATE = {"type": "string", "pattern": RATE_PATTERN, "description": f"a rate such as {RATE_EXAMPLES}"}
SPAN = {"anyOf": [DURATION, {"type": "string", "pattern": r"^[0-9.hms ]+\.\.[0-9.hms ]+$"}],
        "description": "a duration, or a range such as 2s..10s"}


def _closed(properties: dict, required: tuple = (), **extra) -> dict:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False, **extra}


def _weights(keys: dict) -> dict:
    return _closed({"weights": {"type": "object", **keys,
                                "additionalProperties": {"type": "number", "minimum": 0}}},
                   ("weights",))


def _trait(kind: str, values: tuple | None) -> dict:
    if kind == "boolean":
        return {"oneOf": [{"type": "boolean"}, {"type": "number", "minimum": 0, "maximum": 1}]}
    if kind == "number":
        clip = {"min": {"type": "number"}, "max": {"type": "number"}}
        return {"oneOf": [
            {"type": "integer"},
            _closed({"uniform": {"type": "array", "items": {"type": "number"},
                                 "minItems": 2, "maxItems": 2}}, ("uniform",)),
            _closed({"normal": _closed({"mean": {"type": "number"}, "sd": {"type": "number"}},
                                       ("mean", "sd")), **clip}, ("normal",)),
            _closed({"lognormal": _closed({"median": {"type": "number"},
                                           "sigma": {"type": "number"}}, ("median", "sigma")),
                     **clip}, ("lognormal",)),
            _closed({"bands": {"type": "array", "minItems": 1, "items": {
                "type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}}},
                ("bands",)),
            _weights({"propertyNames": {"pattern": r"^\d+$"}}),
        ]}
    value = {"enum": list(values)} if values else {"type": "string",
                                                    "pattern": r"^([a-z]{2}|other)$"}
    names = {"propertyNames": value} if values else {}
    return {"oneOf": [value, _weights(names),
                      _closed({"preset": {"enum": list(PRESETS)}}, ("preset",))]}


def _traits() -> dict:
    values = {"employment": EMPLOYMENT, "digital_comfort": DIGITAL_COMFORT, "state": US_STATES}
    return _closed({name: _trait(kind, values.get(name)) for name, kind in TRAIT_KINDS.items()})


def _behavior() -> dict:
    kinds = {"think_time": SPAN, "patience": DURATION,
             "retries": {"type": "integer", "minimum": 0, "maximum": 10}}
    return _closed({key: kinds[key] for key in BEHAVIOR_KEYS})


def _group() -> dict:
    return _closed({
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"},
        "template": {"type": "string", "description": "a template in demographics/ or a path "
                     "to a template file", "examples": ["low_income", "seniors", "veterans"]},
        "count": {"type": "integer", "minimum": 1},
        "traits": _traits(), "behavior": _behavior()}, ("template", "count"))


def _profile() -> dict:
    stage = _closed({"duration": DURATION, "citizens": {"type": "integer", "minimum": 0},
                     "spawn_rate": {"type": "number", "exclusiveMinimum": 0}},
                    ("duration", "citizens"))
    kinds = {"ramp_up": DURATION, "sustain": DURATION, "ramp_down": DURATION,
             "spike_at": DURATION, "spike_size": {"type": "integer", "minimum": 1},
             "spike_duration": DURATION, "allow_large_spike": {"type": "boolean"},
             "stages": {"type": "array", "items": stage, "minItems": 1}, "arrival_rate": RATE,
             "arrival_spacing": {"enum": list(s.ARRIVAL_SPACINGS)},
             "max_citizens": {"type": "integer", "minimum": 1}}
    return _closed({key: kinds[key] for key in s.PROFILE_KEYS})


def _step() -> dict:
    headers = {"type": "object", "additionalProperties": {"type": "string"}}
    kinds = {"name": {"type": "string"},
             "request": {"type": "string", "pattern": f"^({'|'.join(s.HTTP_METHODS)}) /"},
             "json": {}, "form": {"type": "object"}, "body": {"type": "string"},
             "headers": headers,
             "expect": {"oneOf": [{"type": "integer"}, {"type": "array",
                                                         "items": {"type": "integer"}}]},
             "extract": {"type": "object", "additionalProperties": {
                 "type": "string", "pattern": s.EXTRACT_PATTERN}},
             "think_time": SPAN}
    return _closed({key: kinds[key] for key in s.STEP_KEYS}, ("request",))


def _chaos() -> dict:
    line = {"type": "string", "pattern": r"^\s*\S+\s+\S+\s+after\s+\S+(\s+for\s+\S+)?\s*$",
            "description": "kill_pod svc-fee after 12m [for 2m]"}
    kinds = {"action": {"enum": list(s.CHAOS_ACTIONS)}, "target": {"type": "string"},
             "after": DURATION, "duration": DURATION}
    entry = _closed({key: kinds.get(key, {}) for key in s.CHAOS_KEYS}, ("action", "after"))
    return {"type": "array", "items": {"oneOf": [entry, line]}}


def _slo() -> dict:
    metrics = {m: {"type": "number", "minimum": 0} for m in s.SLO_METRICS}
    endpoints = {"type": "object", "additionalProperties": _closed(metrics)}
    return _closed({**metrics, "endpoints": endpoints, "window": DURATION,
                    "abort_on_fail": {"type": "boolean"}})


def scenario_schema() -> dict:
    groups = {"oneOf": [_group(), {"type": "array", "items": _group(), "minItems": 1}]}
    kinds = {
        "esr": {"const": s.LANGUAGE_VERSION, "description": "language version"},
        "scenario": {"type": "string", "description": "the scenario's name"},
        "description": {"type": "string"},
        "target": {"type": "string", "pattern": "^https?://"},
        "seed": {"type": "integer", "minimum": 0},
        "reference_date": {"type": "string", "format": "date"},
        "citizens": groups,
        "load_profile": _profile(),
        "journey": {"oneOf": [_step(), {"type": "array", "items": _step(), "minItems": 1}]},
        "probes": {"type": "array", "items": {"enum": list(s.PROBES)}},
        "network_jitter_ms": {"type": "integer", "minimum": 0},
        "chaos": _chaos(),
        "track_legal_blocks": {"type": "boolean"},
        "hitl_skip": {"type": "boolean"},
        "trace_context": {"type": "boolean", "default": True,
                          "description": "send W3C traceparent and baggage (esr.synthetic=true, "
                          "esr.run, esr.cohort) on every request, so the service's tracing "
                          "tells synthetic citizens apart"},
        "slo": _slo(),
        "report": _closed({"formats": {"type": "array", "items": {"enum": list(s.REPORT_FORMATS)}},
                           "title": {"type": "string"},
                           "traits": {"type": "array", "items": {"enum": list(s.REPORT_TRAITS)}}}),
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "ESR scenario", **_closed({key: kinds[key] for key in s.SCENARIO_KEYS},
                                               ("scenario", "citizens", "load_profile"))}
