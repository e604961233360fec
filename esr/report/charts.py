"""Charts for the report card, as inline SVG strings.

The report card is one self-contained HTML file that WeasyPrint also turns into a PDF, so a
chart must be an ``<svg>`` element with nothing outside it: no files, no links, raster parts as
data: URIs. Text stays text (searchable PDF, small files); output is deterministic so two
reports of the same run are byte-identical. Every label may come from the target under test
(endpoint names), so labels are sanitised, never parsed as mathtext, and left to matplotlib's
SVG writer to escape.

Figures are built with the object-oriented ``Figure`` API (no pyplot, so no global figure
registry to leak into) inside an ``rc_context`` (so the caller's rcParams are untouched).
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

matplotlib.use("Agg")  # never open a window; harmless since pyplot is not used here

WIDTH_IN = 9.0  # 648 SVG units: ~900 px on screen, full text width in the PDF
RASTER_DPI = 150  # heatmap cells only; axes and text stay vector
LABEL_MAX = 48
THIN_BUCKETS = 500  # a long line keeps <= 4 points per bucket (~1.6 px at 900 px wide)
EMPTY_CELL = "#c8c8c8"
SPAN_GREYS = ("#f0f0f0", "#e2e2e2")

_RC = {
    "svg.fonttype": "none",  # <text>, not glyph paths
    "svg.hashsalt": "esr-report-card",  # stable ids -> deterministic output
    "svg.image_inline": True,
    "text.parse_math": False,  # "$x$" in an endpoint name is literal text
    "text.usetex": False,
    "font.family": ["sans-serif"],
    "font.sans-serif": ["DejaVu Sans"],  # ships with matplotlib; SVG falls back to sans-serif
    "font.size": 9,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=matplotlib.colormaps["tab10"].colors),
    "legend.frameon": False,
    "path.simplify": True,
}
# Without these matplotlib writes a date (not deterministic) and RDF with http:// URIs.
_NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
_PATH_DATA = re.compile(r' d="[^"]*"')
_NUMBER = re.compile(r"-?\d+\.\d+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def line_chart(series: dict[str, list[tuple[float, float]]], *, title: str, y_label: str,
               x_label: str = "seconds since start", marks: list[tuple[float, str]] = (),
               spans: list[tuple[float, float, str]] = (), y_min: float | None = 0) -> str:
    """Lines over time; ``None`` y values break a line. Marks are events, spans are phases."""
    if not series:
        return _no_data(title)
    with _style():
        fig, ax = _figure(4.0, title, x_label, y_label, title_pad=16 if spans else 6)
        for i, (start, end, label) in enumerate(spans):
            ax.axvspan(start, end, color=SPAN_GREYS[i % 2], lw=0, zorder=0)
            ax.text((start + end) / 2, 1.005, _label(label, 24), transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=7, color="#555555", clip_on=False)
        handles = []
        for i, points in enumerate(series.values()):
            xs, ys = _thin(*_xy(points))
            style = "-" if i < 10 else "--"  # tab10 repeats after ten series
            handles += ax.plot(xs, ys, lw=1.2, ls=style, zorder=2)
        for x, label in marks:
            ax.axvline(x, color="#333333", lw=0.8, ls=(0, (4, 3)), zorder=3)
            ax.text(x, 0.98, " " + _label(label, 32), transform=ax.get_xaxis_transform(),
                    rotation=90, ha="right", va="top", fontsize=7, color="#333333",
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1})
        ax.margins(x=0)
        if y_min is not None:
            ax.set_ylim(bottom=y_min)
        ax.grid(axis="y", color="#dddddd", lw=0.6)
        _legend(fig, handles, list(series))
        return _svg(fig)


def heatmap(rows: list[str], columns: list[float], values: list[list[float | None]], *,
            title: str, unit: str = "ms", x_label: str = "seconds since start") -> str:
    """One row per endpoint, one column per time bucket; ``None`` cells stay empty."""
    if not rows or not columns:
        return _no_data(title)
    if len(values) != len(rows) or any(len(row) != len(columns) for row in values):
        raise ValueError("values must have one row per row label and one cell per column")
    grid = np.ma.masked_invalid(np.array(
        [[math.nan if v is None else float(v) for v in row] for row in values], dtype=float))
    with _style():
        fig, ax = _figure(1.6 + 0.16 * len(rows), title, x_label, None)
        # Masked (None) cells are transparent: a light hatch shows through, so an empty cell
        # never reads as a low or (in greyscale print) high value.
        ax.patch.set(facecolor="white", hatch="////", hatchcolor=EMPTY_CELL, linewidth=0)
        top = float(grid.max()) if grid.count() else 0.0
        mesh = ax.pcolormesh(_edges(columns), np.arange(len(rows) + 1), grid, cmap="viridis",
                             norm=Normalize(0, top if top > 0 else 1.0), rasterized=True)
        ax.set_yticks(np.arange(len(rows)) + 0.5, labels=[_label(r) for r in rows],
                      fontsize=8 if len(rows) <= 30 else 7)
        ax.set_ylim(len(rows), 0)  # first row on top
        ax.tick_params(axis="y", length=0)
        fig.colorbar(mesh, ax=ax, label=_label(unit, 16), fraction=0.04, pad=0.01)
        return _svg(fig)


def bar_chart(categories: list[str], series: dict[str, list[float]], *, title: str,
              y_label: str, stacked: bool = True, horizontal: bool = False) -> str:
    """Counts per category, one colour per series; stacked or side by side."""
    if not categories or not series:
        return _no_data(title)
    if any(len(counts) != len(categories) for counts in series.values()):
        raise ValueError("every series needs one value per category")
    with _style():
        height = max(3.0, 1.6 + 0.3 * len(categories)) if horizontal else 4.0
        fig, ax = _figure(height, title, None, None)
        positions = np.arange(len(categories), dtype=float)
        width = 0.8 if stacked else 0.8 / len(series)
        base = np.zeros(len(categories))
        handles = []
        for i, counts in enumerate(series.values()):
            heights = np.array([float(v) if _finite(v) else 0.0 for v in counts])
            offset = positions if stacked else positions - 0.4 + width * (i + 0.5)
            if horizontal:
                handles.append(ax.barh(offset, heights, height=width, left=base))
            else:
                handles.append(ax.bar(offset, heights, width=width, bottom=base))
            if stacked:
                base = base + heights
        labels = [_label(c, 32) for c in categories]
        value_axis = ax.xaxis if horizontal else ax.yaxis
        value_axis.set_label_text(_label(y_label))
        ax.grid(axis="x" if horizontal else "y", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
        if horizontal:
            ax.set_yticks(positions, labels=labels)
            ax.set_ylim(len(categories) - 0.5, -0.5)
        else:
            crowded = len(categories) > 6 or max(map(len, labels)) > 12
            ax.set_xticks(positions, labels=labels, rotation=30 if crowded else 0,
                          ha="right" if crowded else "center")
        _legend(fig, handles, list(series))
        return _svg(fig)


# -- shared pieces -----------------------------------------------------------------------------

@contextmanager
def _style() -> Iterator[None]:
    # Figures must be built *and* saved inside: tick labels are created at draw time.
    with matplotlib.rc_context(_RC):
        yield


def _figure(height_in: float, title: str, x_label: str | None, y_label: str | None,
            title_pad: float = 6) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(WIDTH_IN, height_in), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(_label(title, 120), pad=title_pad)  # pad leaves room for span labels
    if x_label:
        ax.set_xlabel(_label(x_label))
    if y_label:
        ax.set_ylabel(_label(y_label))
    return fig, ax


def _legend(fig: Figure, handles: list, names: list[str]) -> None:
    # Explicit labels: auto-collection would silently drop names starting with "_".
    if handles:
        fig.legend(handles, [_label(n, 40) for n in names], loc="outside lower center",
                   ncols=min(len(handles), 4))


def _no_data(title: str) -> str:
    with _style():
        fig = Figure(figsize=(WIDTH_IN, 1.0))
        fig.text(0.01, 0.7, _label(title, 120), fontsize=11, fontweight="bold", va="center")
        fig.text(0.01, 0.3, "no data", color="#666666", va="center")
        return _svg(fig)


def _label(text: object, limit: int = LABEL_MAX) -> str:
    """Untrusted text made displayable: one line, printable, bounded length.

    XML 1.0 forbids most control characters and lone surrogates break UTF-8, and matplotlib's
    writer escapes only markup, so those are removed here; <, > and & are left to the writer.
    """
    text = unicodedata.normalize("NFC", _CONTROL.sub(" ", str(text)))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _xy(points: list[tuple[float, float | None]]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(x, y if _finite(y) else math.nan) for x, y in points if _finite(x)]
    data = np.array(pairs, dtype=float).reshape(-1, 2)
    data = data[np.argsort(data[:, 0], kind="stable")]
    return data[:, 0], data[:, 1]


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _thin(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep each x bucket's first, lowest, highest and last point and its first gap.

    At print resolution the line looks the same, but a long run no longer grows the SVG.
    """
    if len(xs) <= 4 * THIN_BUCKETS or xs[-1] == xs[0]:
        return xs, ys
    bucket = np.minimum(((xs - xs[0]) / (xs[-1] - xs[0]) * THIN_BUCKETS).astype(int),
                        THIN_BUCKETS - 1)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    keep = set()
    for start, end in zip(starts, np.r_[starts[1:], len(xs)], strict=True):
        chunk = ys[start:end]
        finite = np.isfinite(chunk)
        keep.update((start, end - 1))
        if finite.any():
            keep.update((start + np.nanargmin(chunk), start + np.nanargmax(chunk)))
        if not finite.all():
            keep.add(start + int(np.argmin(finite)))  # first None: the line must break here
    index = np.array(sorted(keep))
    return xs[index], ys[index]


def _edges(columns: list[float]) -> np.ndarray:
    """Bucket starts -> cell edges; the last bucket is as wide as the typical one."""
    starts = np.asarray(columns, dtype=float)
    step = float(np.median(np.diff(starts))) if len(starts) > 1 else 1.0
    return np.append(starts, starts[-1] + (step or 1.0))


def _svg(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", dpi=RASTER_DPI, metadata=_NO_METADATA)
    svg = buf.getvalue().decode("utf-8")
    svg = svg[svg.index("<svg"):].strip()  # drop the XML declaration and DOCTYPE
    # Scale with the page: width follows the container, height follows the viewBox.
    root_end = svg.index(">")
    root = re.sub(r' (width|height)="[^"]*"', "", svg[:root_end]) + ' width="100%"'
    svg = root + svg[root_end:]
    # Path data to 0.1 unit (~0.14 px at 900 px): matplotlib writes six decimals.
    svg = _PATH_DATA.sub(lambda m: _NUMBER.sub(_round, m.group(0)), svg)
    return _scope_ids(svg)


def _round(number: re.Match) -> str:
    text = f"{float(number.group(0)):.1f}".removesuffix(".0")
    return "0" if text == "-0" else text


def _scope_ids(svg: str) -> str:
    """Prefix ids so several charts inlined in one HTML page never share one."""
    prefix = "c" + hashlib.sha256(svg.encode("utf-8")).hexdigest()[:8] + "-"

    def fix(tag: re.Match) -> str:
        out = re.sub(r'\bid="', f'id="{prefix}', tag.group(0))
        return out.replace("url(#", f"url(#{prefix}").replace('href="#', f'href="#{prefix}')

    # Text and attribute values are escaped by the writer, so "<...>" is always a tag.
    return re.sub(r"<[^>]*>", fix, svg)
