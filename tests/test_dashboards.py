"""The deploy side of ESR's metrics: Grafana's dashboard, Prometheus's configuration, and the
compose profile that runs them (deploy/, docker-compose.yml's `observability` profile).

No Grafana or Prometheus runs here (no Docker engine): the dashboard's every PromQL expression
is read by a small tokenizer and must name only samples esr/metrics.py exports, with their
labels; the tokenizer is itself tested on known expressions and on misspelt names, so the
check can fail. Prometheus's configuration is checked by its own `promtool` when installed
(scripts/test installs it) and by its structure always.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
import yaml

from esr.metrics import DEFAULT_METRICS_PORT, METRICS

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "esr.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}  # the dashboard's variable
SCRAPED = {"master", "service"}  # compose services whose figures Prometheus scrapes

# ---- the samples ESR exports --------------------------------------------------------------------

SUFFIXES = {"counter": ("",), "gauge": ("",), "info": ("",),  # names given as exported
            "histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every sample it scrapes


def exported_samples() -> dict[str, set[str]]:
    """Every sample name ESR serves, with the labels it may carry."""
    samples = {}
    for name, metric in METRICS.items():
        assert metric.kind in SUFFIXES, f"{name}: a metric kind this test does not know"
        for suffix in SUFFIXES[metric.kind]:
            extra = {"le"} if suffix == "_bucket" else {"quantile"} if suffix == "" and \
                metric.kind == "summary" else set()
            samples[name + suffix] = set(metric.labels) | extra | TARGET_LABELS
    return samples


SAMPLES = exported_samples()

# ---- PromQL, as far as a dashboard's expressions need ----------------------------------------

FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "exp", "floor", "histogram_avg", "histogram_count", "histogram_fraction",
    "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters",
    "hour", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln",
    "log10", "log2", "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
    "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
    "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_desc", "sqrt", "stddev_over_time",
    "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year",
    "start", "end",  # @ start() / @ end()
}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
WORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}  # not metric names
MATCH_OPERATORS = {"=", "!=", "=~", "!~"}

TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<variable>\$(?:\{[^}]*\}|\w+))                     # Grafana's: $run, ${datasource}
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w:]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w:]))
  | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<punct>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@])
""", re.VERBOSE)


@dataclass
class Selector:
    metric: str
    matchers: set[str] = field(default_factory=set)  # label names in its {…}


@dataclass
class Expression:
    selectors: list[Selector]
    grouping: set[str]  # label names in by/without/on/ignoring/group_left/group_right (…)

    @property
    def metrics(self) -> list[str]:
        return [s.metric for s in self.selectors]


def tokens(expr: str) -> list[tuple[str, str]]:
    found, at = [], 0
    while at < len(expr):
        match = TOKEN.match(expr, at)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[at:at + 20]!r} in {expr!r}")
        if match.lastgroup != "space":
            found.append((match.lastgroup, match.group()))
        at = match.end()
    return found


def parse(expr: str) -> Expression:
    """The series selectors and grouping labels of a PromQL expression: a metric name is an
    identifier that is not a function, an aggregation, a keyword, nor inside {…}, […] or a
    label list."""
    toks = tokens(expr)
    selectors: list[Selector] = []
    grouping: set[str] = set()
    named_at = -1  # the token that named the last selector
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "punct" and text == "{":
            close = _closing(toks, i, "{", "}")
            labels, named = _matchers(toks[i + 1:close], expr)
            if i > 0 and named_at == i - 1 and not named:
                selectors[-1].matchers = labels
            elif named and not (i > 0 and named_at == i - 1):  # {__name__="…"}
                selectors.append(Selector(named, labels))
            else:
                raise ValueError(f"cannot tell the metric of the selector at {i} in {expr!r}")
            i = close + 1
        elif kind == "punct" and text == "[":
            i = _closing(toks, i, "[", "]") + 1
        elif kind == "name" and text in LABEL_LISTS:
            if following == "(":
                close = _closing(toks, i + 1, "(", ")")
                grouping |= {t for k, t in toks[i + 2:close] if k == "name"}
                i = close + 1
            else:  # group_left without labels
                i += 1
        elif kind == "name" and (text in AGGREGATIONS or following == "("):
            if text not in AGGREGATIONS | FUNCTIONS:
                raise ValueError(f"{text!r} is no PromQL function, in {expr!r}")
            i += 1
        elif kind == "name" and text.lower() not in WORDS:
            selectors.append(Selector(text))
            named_at = i
            i += 1
        else:
            i += 1
    return Expression(selectors, grouping)


def _closing(toks: list[tuple[str, str]], at: int, opening: str, closing: str) -> int:
    depth = 0
    for j in range(at, len(toks)):
        if toks[j][0] == "punct":
            depth += {opening: 1, closing: -1}.get(toks[j][1], 0)
        if depth == 0:
            return j
    raise ValueError(f"no {closing!r} for {opening!r}")


def _matchers(toks: list[tuple[str, str]], expr: str) -> tuple[set[str], str]:
    """Label names in `label op "value", …`, and the metric named by __name__ if any."""
    labels, named = set(), ""
    while toks:
        (label, op, value), toks = (toks[:3] + [("", "")] * 3)[:3], toks[3:]
        if label[0] != "name" or op[1] not in MATCH_OPERATORS or value[0] != "string":
            raise ValueError(f"cannot read the label matchers of {expr!r}")
        if label[1] == "__name__":
            named = value[1][1:-1]
        else:
            labels.add(label[1])
        if toks and toks[0][1] != ",":
            raise ValueError(f"cannot read the label matchers of {expr!r}")
        toks = toks[1:]
    return labels, named


LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?"
                          r"(?P<label>\w+)\s*\)\s*$")


def promql(expr: str) -> str:
    """The PromQL in a query: a Grafana variable's label_values(SELECTOR, LABEL) holds some."""
    grafana = LABEL_VALUES.match(expr)
    return (grafana["selector"] or "") if grafana else expr


def problems_of(expr: str, where: str, legend: str = "") -> list[str]:
    """What is wrong with one dashboard expression: unknown samples or labels."""
    grafana = LABEL_VALUES.match(expr)
    try:
        parsed = parse(promql(expr))
    except ValueError as error:
        return [f"{where}: {error}"]
    found = []
    if not parsed.metrics:
        found.append(f"{where}: names no metric: {expr!r}")
    labels: set[str] = set()
    for selector in parsed.selectors:
        if selector.metric not in SAMPLES:
            found.append(f"{where}: {selector.metric!r} is not a sample ESR exports "
                         f"(esr/metrics.py)")
            continue
        labels |= SAMPLES[selector.metric]
        if unknown := selector.matchers - SAMPLES[selector.metric]:
            found.append(f"{where}: {selector.metric} has no label {sorted(unknown)}")
    used = parsed.grouping | set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    if grafana:
        used.add(grafana["label"])
    if labels and (unknown := used - labels - {"__name__"}):
        found.append(f"{where}: labels {sorted(unknown)} are on none of its metrics")
    return found


# ---- the dashboard --------------------------------------------------------------------------


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", ()))  # a collapsed row holds its panels


def expressions(dashboard: dict) -> Iterator[tuple[str, str, str]]:
    """(where, PromQL, legend template) for every query in the dashboard."""
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", ()):
            yield (f"panel {panel.get('title')!r} query {target.get('refId')}",
                   target.get("expr", ""), target.get("legendFormat", ""))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            yield f"variable ${variable['name']}", text, ""
            if variable.get("definition"):
                yield f"variable ${variable['name']} (definition)", variable["definition"], ""
    for annotation in dashboard["annotations"]["list"]:
        if annotation.get("datasource", {}).get("type") == "prometheus":
            legend = " ".join(annotation.get(key, "") for key in ("titleFormat", "textFormat"))
            legend += "".join(f" {{{{{k.strip()}}}}}"
                              for k in annotation.get("tagKeys", "").split(",") if k.strip())
            text = annotation.get("expr") or annotation.get("target", {}).get("expr", "")
            yield f"annotation {annotation['name']!r}", text, legend


def dashboard_problems(dashboard: dict) -> list[str]:
    return [problem for where, expr, legend in expressions(dashboard)
            for problem in problems_of(expr, where, legend)]


def test_the_tokenizer_finds_metric_names_and_only_those():
    expr = parse('histogram_quantile(0.95, sum by (endpoint, le) (rate('
                 'esr_request_duration_seconds_bucket{run=~"$run", endpoint!="/pay"}'
                 '[$__rate_interval])))')
    assert expr.metrics == ["esr_request_duration_seconds_bucket"]
    assert expr.selectors[0].matchers == {"run", "endpoint"}
    assert expr.grouping == {"endpoint", "le"}
    expr = parse('sum(rate(esr_request_failures_total{run="a"}[5m])) by (endpoint)\n'
                 '  / on (endpoint) group_left sum by (endpoint) '
                 '(rate(esr_requests_total[1m30s] offset 5m))')
    assert expr.metrics == ["esr_request_failures_total", "esr_requests_total"]
    assert expr.grouping == {"endpoint"}
    assert parse("esr_workers > bool 0 and esr_citizens_active").metrics == [
        "esr_workers", "esr_citizens_active"]
    assert parse('{__name__="esr_workers", run="x"}').metrics == ["esr_workers"]
    assert parse("max(esr_workers @ end()) * 1e3 + 0.5").metrics == ["esr_workers"]
    # Strings and Grafana's variables are no metric names.
    assert parse('label_replace(esr_workers, "esr_fake", "$1", "run", "(.*)")').metrics == [
        "esr_workers"]
    assert parse("sum(esr_service_runs) / $divisor").metrics == ["esr_service_runs"]


def test_the_check_catches_misspelt_metrics_labels_and_functions():
    assert problems_of("rate(esr_requests_total[5m])", "ok") == []
    for wrong, why in [
        ("rate(esr_request_total[5m])", "'esr_request_total' is not a sample"),
        ("sum(esr_requests)", "'esr_requests' is not a sample"),  # a counter without _total
        ("histogram_quantile(0.9, rate(esr_request_duration_seconds[5m]))",
         "'esr_request_duration_seconds' is not a sample"),  # a histogram without _bucket
        ('esr_workers{endpoint="/pay"}', "esr_workers has no label ['endpoint']"),
        ("sum by (cohort) (esr_journeys_total)", "labels ['cohort'] are on none"),
        ("rat(esr_requests_total[5m])", "'rat' is no PromQL function"),
        ("vector(1)", "names no metric"),
    ]:
        assert any(why in problem for problem in problems_of(wrong, "x")), (wrong, why)
    assert "labels ['age']" in problems_of("esr_journeys_total", "x", "{{age}}")[0]
    assert "labels ['cohort']" in problems_of("label_values(esr_run_info, cohort)", "x")[0]


def test_the_dashboard_loads_for_a_current_grafana():
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    run = variables["run"]
    assert run["definition"] == run["query"]["query"] == "label_values(esr_run_info, run)"
    assert run["datasource"] == DATASOURCE


def test_every_query_names_only_metrics_esr_exports():
    dashboard = load_dashboard()
    found = list(expressions(dashboard))
    assert len(found) > 20 and all(expr for _, expr, _ in found)
    assert dashboard_problems(dashboard) == []


def test_a_misspelt_metric_in_the_dashboard_would_be_caught():
    dashboard = load_dashboard()
    panel = next(p for p in all_panels(dashboard["panels"]) if p.get("targets"))
    panel["targets"][0]["expr"] = panel["targets"][0]["expr"].replace("esr_", "esr_x", 1)
    assert [p for p in dashboard_problems(dashboard)
            if p.startswith(f"panel {panel['title']!r}") and "is not a sample" in p]


def test_every_metric_esr_exports_is_on_the_dashboard():
    used = {metric for _, expr, _ in expressions(load_dashboard())
            for metric in parse(promql(expr)).metrics}
    families = {name for name in METRICS
                if not any(s in used for s in (name + x for x in SUFFIXES[METRICS[name].kind]))}
    assert families == set(), "metrics no panel, variable or annotation shows"


def test_every_panel_has_a_title_a_datasource_and_a_place_of_its_own():
    panels = list(all_panels(load_dashboard()["panels"]))
    assert all(panel.get("title") for panel in panels)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        if panel["type"] != "row":
            assert panel.get("datasource") == DATASOURCE, panel["title"]
            assert panel["targets"] and all(t.get("datasource", DATASOURCE) == DATASOURCE
                                            for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_chaos_is_an_annotation():
    (chaos,) = [a for a in load_dashboard()["annotations"]["list"] if a["name"] == "Chaos"]
    assert chaos["enable"] and chaos["datasource"] == DATASOURCE
    assert parse(chaos["expr"]).metrics == ["esr_chaos_in_force"]


# ---- Prometheus --------------------------------------------------------------------------------


def promtool() -> str | None:
    """Debian's prometheus package's, or the one scripts/test puts beside the venv's Python."""
    beside = Path(sys.executable).parent / "promtool"
    return shutil.which("promtool") or (str(beside) if beside.is_file() else None)


def test_promtool_accepts_the_prometheus_configuration():
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed (scripts/test puts it in .venv/bin from "
                    "Debian's prometheus package)")
    result = subprocess.run([tool, "check", "config", str(PROMETHEUS)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# What Grafana puts in place of its variables before Prometheus sees a query.
GRAFANA_VARIABLES = {"$__rate_interval": "20s", "$__interval": "5s", "$__range": "30m"}


def test_promtool_parses_every_query_of_the_dashboard(tmp_path):
    """Prometheus's own PromQL parser on each expression, as recording rules."""
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed (scripts/test puts it in .venv/bin from "
                    "Debian's prometheus package)")
    rules = []
    for n, (_, expr, _) in enumerate(expressions(load_dashboard())):
        text = promql(expr)
        for variable, value in GRAFANA_VARIABLES.items():
            text = text.replace(variable, value)
        rules.append({"record": f"esr_dashboard:query_{n}", "expr": text})
    assert not any("$__" in rule["expr"] for rule in rules)
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([tool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_prometheus_scrapes_the_metrics_port_of_the_master_and_the_service():
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["global"]["scrape_interval"] == "5s"
    targets = {target for job in config["scrape_configs"]
               for static in job["static_configs"] for target in static["targets"]}
    assert all(job.get("metrics_path", "/metrics") == "/metrics"
               for job in config["scrape_configs"])
    assert targets == {f"{name}:{DEFAULT_METRICS_PORT}" for name in SCRAPED}
    services = compose()["services"]
    for name in SCRAPED:
        command = services[name]["command"]
        bind = command[command.index("--metrics-bind") + 1]
        assert bind == f"0.0.0.0:{DEFAULT_METRICS_PORT}", name
        assert str(DEFAULT_METRICS_PORT) in services[name]["expose"], name
        assert not any(str(DEFAULT_METRICS_PORT) in p for p in services[name].get("ports", ()))


# ---- the compose profile and Grafana's provisioning ------------------------------------------


def mounts(service: dict) -> dict[PurePosixPath, tuple[str, str]]:
    """Container path → (host path, mode) of a service's bind mounts."""
    found = {}
    for volume in service.get("volumes", ()):
        source, target, *mode = volume.split(":")
        found[PurePosixPath(target)] = (source, mode[0] if mode else "rw")
    return found


def host_path(source: str) -> Path:
    return (ROOT / source).resolve()


def test_the_observability_profile_runs_official_images_on_loopback():
    services = compose()["services"]
    for name, image in (("prometheus", "prom/prometheus:"), ("grafana", "grafana/grafana:")):
        service = services[name]
        assert service["profiles"] == ["observability"], name
        assert service["image"].startswith(image) and "build" not in service, name
        assert service["ports"] and all(p.startswith("127.0.0.1:") for p in service["ports"])
        assert all(mode == "ro" for source, mode in mounts(service).values()
                   if source.startswith("./")), f"{name} mounts deploy/ read-only"
    config = mounts(services["prometheus"])[PurePosixPath("/etc/prometheus/prometheus.yml")]
    assert host_path(config[0]) == PROMETHEUS
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_grafana_provisioning_finds_prometheus_and_the_dashboard_where_compose_mounts_them():
    services = compose()["services"]
    grafana = mounts(services["grafana"])
    assert host_path(grafana[PurePosixPath("/etc/grafana/provisioning")][0]) == PROVISIONING
    (datasource,) = [source for path in (PROVISIONING / "datasources").glob("*.yml")
                     for source in yaml.safe_load(path.read_text())["datasources"]]
    assert datasource["type"] == "prometheus" and datasource["access"] == "proxy"
    port = services["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert datasource["url"] == f"http://prometheus:{port}"
    (provider,) = [provider for path in (PROVISIONING / "dashboards").glob("*.yml")
                   for provider in yaml.safe_load(path.read_text())["providers"]]
    assert provider["type"] == "file"
    folder = PurePosixPath(provider["options"]["path"])
    dashboards = [host_path(source) for target, (source, _) in grafana.items()
                  if target.parent == folder or target == folder / DASHBOARD.name]
    assert dashboards == [DASHBOARD]


def test_the_compose_file_with_every_profile_is_valid_for_a_real_compose_implementation():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (scripts/test installs it)")
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "--profile", "service",
                             "--profile", "observability", "config"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "MASTER_MODE": "headless"})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"prometheus", "grafana", "master", "service"} <= set(services)
    assert all(p.startswith("127.0.0.1:") for name in ("prometheus", "grafana")
               for p in services[name]["ports"])


@pytest.mark.parametrize("command", ["master", "serve"])
def test_the_commands_compose_passes_metrics_bind_to_take_it(esr_cli, command):
    result = esr_cli(command, "--help")
    assert result.returncode == 0 and "--metrics-bind" in result.stdout


def test_the_readme_names_every_metric_with_its_kind_and_labels():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Dashboards and traces", 1)[1].split("\n## ", 1)[0]
    rows = {cells[0].strip("` "): cells[1:] for line in section.splitlines()
            if line.startswith("| `") and (cells := [c.strip() for c in line.split("|")[1:-1]])}
    assert set(rows) == set(METRICS)
    for name, (kind, labels, _meaning) in rows.items():
        assert kind.split()[0] == METRICS[name].kind, name
        assert labels == (", ".join(METRICS[name].labels) or "—"), name
