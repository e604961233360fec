"""Report-card charts: self-contained, escaped, deterministic, small SVG."""

from __future__ import annotations

import gc
import random
import re
import resource
import xml.etree.ElementTree as ET

import matplotlib
import pytest
from matplotlib import _pylab_helpers
from matplotlib.figure import Figure

from esr.report.charts import bar_chart, heatmap, line_chart

SVG = "{http://www.w3.org/2000/svg}"
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
HOSTILE = "<script>alert(1)</script> & $x$"
HOSTILE_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; $x$"


def _line(label: str = "p95", n: int = 50, title: str = "Latency") -> str:
    rng = random.Random(7)
    series = {f"{label} {i}": [(t * 0.5, rng.uniform(50, 400)) for t in range(n)]
              for i in range(3)}
    return line_chart(series, title=title, y_label="ms", marks=[(5.0, f"kill {label}")],
                      spans=[(0.0, 10.0, "ramp_up"), (10.0, 20.0, label)])


def _heatmap(label: str = "GET /x", n_rows: int = 4, n_cols: int = 10,
             title: str = "p95 by endpoint") -> str:
    rng = random.Random(7)
    rows = [f"{label} {i}" for i in range(n_rows)]
    values = [[None if rng.random() < 0.1 else rng.uniform(5, 900) for _ in range(n_cols)]
              for _ in rows]
    return heatmap(rows, [c * 10.0 for c in range(n_cols)], values, title=title)


def _bars(label: str = "25-34", title: str = "Outcomes", **kwargs) -> str:
    return bar_chart(["18-24", label], {"approved": [10, 20], label: [3, 4]}, title=title,
                     y_label="citizens", **kwargs)


CHARTS = {
    "line": _line,
    "heatmap": _heatmap,
    "bars": _bars,
    "bars_grouped_horizontal": lambda **kw: _bars(stacked=False, horizontal=True, **kw),
}


def _root(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg"
    assert root.get("viewBox") and root.get("width") == "100%" and root.get("height") is None
    return root


def _texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def _self_contained(svg: str, root: ET.Element) -> None:
    assert set(re.findall(r"https?://[^\"'\s<>]*", svg)) <= NAMESPACES
    hrefs = [v for el in root.iter() for k, v in el.attrib.items() if k.endswith("href")]
    assert all(h.startswith(("#", "data:")) for h in hrefs)


@pytest.mark.parametrize("make", CHARTS.values(), ids=CHARTS.keys())
def test_chart_is_inline_svg_with_text_title(make):
    svg = make(title="Chart title")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    root = _root(svg)
    assert "Chart title" in _texts(root)
    _self_contained(svg, root)


@pytest.mark.parametrize("make", CHARTS.values(), ids=CHARTS.keys())
def test_hostile_labels_are_escaped_text(make):
    svg = make(label=HOSTILE, title=f"t {HOSTILE}")
    assert "<script" not in svg and HOSTILE_ESCAPED in svg
    texts = _texts(_root(svg))
    assert f"t {HOSTILE}" in texts  # one literal string: "$x$" was not read as mathtext
    assert any(HOSTILE in t for t in texts if not t.startswith("t "))


@pytest.mark.parametrize("make", CHARTS.values(), ids=CHARTS.keys())
def test_same_input_same_bytes(make):
    assert make() == make()


def test_size_budgets():
    assert len(_line(n=2_000)) < 150_000
    assert len(_line(n=20_000)) < 150_000  # long runs are thinned, not drawn point by point
    big = _heatmap(n_rows=50, n_cols=120)
    assert len(big) < 300_000
    assert 'xlink:href="data:image/png;base64' in big  # cells rasterised, labels still text
    assert "GET /x 49" in _texts(_root(big))


def test_none_breaks_the_line():
    def paths(ys):
        svg = line_chart({"a": list(enumerate(ys))}, title="gaps", y_label="ms")
        return [p.get("d") for p in _root(svg).iter(f"{SVG}path")]

    assert not any(d.count("M") == 2 for d in paths([1, 2, 3, 4, 5]))
    assert any(d.count("M") == 2 for d in paths([1, 2, None, 4, 5]))
    _root(line_chart({"a": [(0, None), (1, None)]}, title="all gaps", y_label="ms"))


def test_empty_heatmap_cells_and_all_empty_grid():
    for values in ([[None, 5.0], [7.0, None]], [[None, None], [None, None]]):
        _root(heatmap(["a", "b"], [0.0, 10.0], values, title="sparse"))


@pytest.mark.parametrize("svg", [
    line_chart({}, title="Nothing yet", y_label="ms"),
    heatmap([], [], [], title="Nothing yet"),
    bar_chart([], {}, title="Nothing yet", y_label="n"),
], ids=["line", "heatmap", "bars"])
def test_empty_input_says_no_data(svg):
    texts = _texts(_root(svg))
    assert "Nothing yet" in texts and "no data" in texts


def test_labels_are_sanitised_and_underscore_names_kept():
    svg = line_chart({"_hidden?": [(0, 1), (1, 2)], "b\x00\x1b\ud800": [(0, 2), (1, 3)]},
                     title="ctl\x07 chars", y_label="ms")
    texts = _texts(_root(svg))  # control characters and surrogates would break the XML
    assert "_hidden?" in texts and "ctl chars" in texts


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError):
        heatmap(["a", "b"], [0.0], [[1.0]], title="t")
    with pytest.raises(ValueError):
        bar_chart(["a", "b"], {"s": [1]}, title="t", y_label="n")


def test_charts_inlined_together_share_no_ids():
    ids = [{el.get("id") for el in _root(make()).iter() if el.get("id")} for make in
           (_line, _heatmap)]
    assert ids[0] and ids[1] and not ids[0] & ids[1]


def test_global_state_untouched_and_no_leak():
    fonttype = matplotlib.rcParams["svg.fonttype"]
    bar_chart(["a"], {"n": [1]}, title="warm-up", y_label="n")  # fonts and caches load once
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for i in range(50):
        bar_chart(["a", f"cohort {i % 5}"], {"n": [1, i]}, title="t", y_label="n")
    gc.collect()
    assert not _pylab_helpers.Gcf.figs  # pyplot's registry never sees these figures
    assert not [o for o in gc.get_objects() if isinstance(o, Figure)]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 50_000
    assert matplotlib.rcParams["svg.fonttype"] == fonttype
