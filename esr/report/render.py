"""The report card's files: self-contained HTML, a PDF of the same page, JUnit XML, summary.json.

Runs after the load, outside the gevent process. The HTML template autoescapes
everything; charts are inline SVG; WeasyPrint may fetch nothing but data: URIs.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from esr.bounded import DISTINCT_VALUES_MAX, VALUE_CHARS_MAX
from esr.errors import BadInput
from esr.report.summary import IMPACT_RATIO_FLOOR, MIN_REFERENCE_COHORT, summarise
from esr.run_directory import REPORT_CARD, SUMMARY
from esr.wire import OUTCOMES

FORMATS = ("html", "pdf", "json", "junit")
_TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(["html", "j2"]), trim_blocks=True,
                         lstrip_blocks=True)


def parse_formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise BadInput(f"unknown report format {', '.join(unknown) or '(none)'}; "
                       f"choose from {', '.join(FORMATS)}")
    return formats


def write_report_card(run_dir: Path, formats=FORMATS, out_dir: Path | None = None
                      ) -> dict[str, Path]:
    """Build the report card of a run directory; the paths of the files written, by format."""
    run_dir = Path(run_dir)
    if {"html", "pdf"} & set(formats):
        from esr.report.card import read_report_card  # pandas and scipy: only for a card

        card = read_report_card(run_dir)
        summary, html = card["summary"], render_html(card)
    else:  # JSON and JUnit need the summary alone, not pandas, scipy and matplotlib (2 s)
        summary, html = summarise(run_dir), None
    out_dir = Path(out_dir) if out_dir else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt in formats:
        path = out_dir / REPORT_CARD[fmt]
        if fmt == "html":
            path.write_text(html, encoding="utf-8")
        elif fmt == "pdf":
            write_pdf(html, path)
        elif fmt == "json" and path != run_dir / SUMMARY:
            shutil.copyfile(run_dir / SUMMARY, path)
        elif fmt == "junit":
            path.write_bytes(junit_xml(summary))
        written[fmt] = path
    return written


def render_html(card: dict) -> str:
    outcomes = [o for o in OUTCOMES if any(
        c["by_outcome"].get(o) for c in card["cohorts"]) or card["citizens"]["by_outcome"].get(o)]
    return _TEMPLATES.get_template("report.html.j2").render(
        card=card, charts=_charts(card), outcomes=outcomes or ["approved", "rejected"],
        fmt=_fmt, pct=_pct, pct1=lambda x: "-" if x is None else f"{x:.1%}",
        floor=IMPACT_RATIO_FLOOR, min_reference=MIN_REFERENCE_COHORT,
        value_chars=VALUE_CHARS_MAX, distinct_max=f"{DISTINCT_VALUES_MAX:,}")


def _charts(card: dict) -> dict[str, str]:
    from esr.report import charts  # matplotlib: only for a card
    timeline = card["timeline"]
    spans = [(p["start"], p["end"], p["name"]) for p in card["phases"]]
    marks = card["marks"]
    heat = card["heatmap"]
    cohorts = card["cohorts"]
    labels = [f"{c['age_band']} {'veteran' if c['veteran'] else 'non-veteran'}"
              for c in cohorts]
    outcomes = sorted({o for c in cohorts for o in c["by_outcome"]},
                      key=lambda o: OUTCOMES.index(o) if o in OUTCOMES else 99)
    return {
        "throughput": charts.line_chart(
            {"requests/s": timeline["rps"], "failures/s": timeline["errors"]},
            title="Throughput", y_label="per second", spans=spans, marks=marks),
        "latency": charts.line_chart(
            {f"p{q}": timeline[f"p{q}"] for q in (50, 95, 99)},
            title="Latency percentiles", y_label="ms", spans=spans, marks=marks),
        "citizens": charts.line_chart(
            {"citizens": timeline["citizens"]}, title="Citizens active", y_label="citizens",
            spans=spans, marks=marks),
        "heatmap": charts.heatmap(heat["rows"], heat["columns"], heat["values"],
                                  title="p95 latency by endpoint and time", unit="ms"),
        "cohorts": charts.bar_chart(labels, {o: [c["by_outcome"].get(o, 0) for c in cohorts]
                                             for o in outcomes},
                                    title="Outcomes by cohort", y_label="citizens",
                                    horizontal=True),
    }


def write_pdf(html: str, path: Path) -> None:
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    # A report card fetches nothing: only inline (data:) resources, such as the heat-map's
    # cells (a PNG inside its SVG), are read.
    HTML(string=html, url_fetcher=URLFetcher(allowed_protocols=("data",))).write_pdf(path)


def junit_xml(summary: dict) -> bytes:
    """One test case per SLO check, failures carrying actual against threshold."""
    checks = summary["slo"]["checks"]
    suite = ET.Element("testsuite", name=f"esr.slo.{summary['scenario']['name']}",
                       tests=str(len(checks)),
                       failures=str(sum(not c["passed"] for c in checks)), errors="0",
                       time=str(summary["duration_s"]), timestamp=summary.get("started_at") or "")
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname="esr.slo", name=check["name"],
                             time="0")
        if not check["passed"]:
            failure = ET.SubElement(case, "failure", type="SLO",
                                    message=f"{check['name']}: actual {_fmt(check['actual'])} "
                                            f"vs threshold {_fmt(check['threshold'])}")
            failure.text = f"metric {check['metric']}, run {summary['run_id']}"
    suites = ET.Element("testsuites", name="esr")
    suites.append(suite)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def _pct(part, whole) -> str:
    return f"{part / whole:.1%}" if whole else "-"
