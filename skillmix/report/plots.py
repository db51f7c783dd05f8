"""Report figures as PNG bytes (matplotlib, Agg, no pyplot state, safe in worker threads).

matplotlib is imported inside the functions only, so ``skillmix --help`` stays light. Colours
are the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies) without
its yellow, which vanishes on white, plus a dark wine; marker and line-style cycles on top keep
any number of models tellable apart. Beyond :data:`SMALL_MULTIPLES_FROM` models a metric plot
becomes small multiples (one panel per model, the others faint behind it). Heatmaps use the
perceptually uniform ``viridis`` map. Figure sizes are fixed by the data's shape (see the
``*_size`` functions, in CSS pixels), never by a tight bounding box, so a figure's size is known
in advance; figures are drawn at :data:`SCALE` times that size, sharp on high-density screens.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from skillmix.report.markup import Image, png_size

OKABE_ITO = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#882255",  # wine (Tol), in place of Okabe-Ito's yellow
)
SCALE = 2  # pixels per CSS pixel of every figure
SMALL_MULTIPLES_FROM = 7  # this many series or more: one panel per series
PANEL_COLUMNS = 4
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")
DEFAULT_DPI = 100
MAX_HEATMAP_ROWS = 60
LEGEND_COLUMNS = 3
MAX_LABEL = 40


@dataclass(frozen=True)
class Point:
    k: int
    mean: float | None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Series:
    label: str
    points: tuple[Point, ...]
    style: int | None = None  # index into the style cycle; keeps a model's look across plots


def style(i: int) -> dict[str, Any]:
    """Colour, marker and line style of the i-th series (unique for the first 8 * 4 * 8)."""
    n = len(OKABE_ITO)
    return {
        "color": OKABE_ITO[i % n],
        "marker": MARKERS[(i // n + i) % len(MARKERS)],
        "linestyle": LINESTYLES[(i // n) % len(LINESTYLES)],
    }


def _short(label: str, limit: int = MAX_LABEL) -> str:
    """At most ``limit`` characters, cut in the middle: model names that share a long prefix
    (``org/model-...-v1``, ``org/model-...-v2``) stay tellable apart by their ends."""
    if len(label) <= limit:
        return label
    keep = limit - 1
    head = (keep + 1) // 2
    return label[:head] + "…" + label[len(label) - (keep - head) :]


SEPARATORS = "-_/ .:"


def _common_prefix(items: Sequence[str]) -> str:
    first, last = min(items), max(items)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def distinct_labels(labels: Sequence[str], limit: int) -> list[str]:
    """Labels of at most ``limit`` characters that stay tellable apart: when some are too
    long, the part every label shares at the start (up to a separator) becomes "…", then
    each is cut in the middle if still too long. The tables carry the full names."""
    out = list(labels)
    if len(set(out)) > 1 and any(len(x) > limit for x in out):
        prefix = _common_prefix(out)
        cut = max((prefix.rfind(c) for c in SEPARATORS), default=-1) + 1
        if cut > 1:
            out = ["…" + x[cut:] for x in out]
    return [_short(x, limit) for x in out]


def _pixels(inches: float, dpi: int) -> int:
    return round(inches * dpi)


def _figure(width_px: int, height_px: int, dpi: int) -> Any:
    from matplotlib.figure import Figure  # deferred: matplotlib takes ~1 s; only plots need it

    # A quarter pixel of slack: Agg truncates the canvas size to whole pixels.
    return Figure(
        figsize=((width_px + 0.25) / dpi, (height_px + 0.25) / dpi), dpi=dpi, layout="constrained"
    )


def _png(fig: Any) -> bytes:
    """The figure as a 256-colour PNG: plots have few colours, and a palette PNG is a
    quarter of the size of a full-colour one (pages embed every plot)."""
    # deferred: matplotlib and PIL take ~1 s to import; only drawing a plot needs them
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image as PILImage

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    width, height = canvas.get_width_height()
    rgb = PILImage.frombuffer("RGBA", (width, height), canvas.buffer_rgba()).convert("RGB")
    palette = rgb.quantize(
        colors=256, method=PILImage.Quantize.FASTOCTREE, dither=PILImage.Dither.NONE
    )
    buf = io.BytesIO()
    palette.save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def _scaled_figure(width_px: int, height_px: int, dpi: int) -> Any:
    """A figure of that CSS size, drawn at :data:`SCALE` times the resolution."""
    return _figure(width_px * SCALE, height_px * SCALE, dpi * SCALE)


def _image(name: str, title: str, fig: Any, caption: str) -> Image:
    png = _png(fig)
    w, h = png_size(png)
    return Image(name, title, png, w, h, caption, scale=SCALE)


def metric_plot_size(series: int, dpi: int = DEFAULT_DPI) -> tuple[int, int]:
    """(width, height) in CSS pixels of :func:`metric_plot` for this many series."""
    if series >= SMALL_MULTIPLES_FROM:
        rows = math.ceil(series / PANEL_COLUMNS)
        return _pixels(9.0, dpi), _pixels(0.7 + 2.1 * rows, dpi)
    legend_rows = max(1, math.ceil(series / LEGEND_COLUMNS))
    return _pixels(7.5, dpi), _pixels(4.3 + 0.24 * legend_rows, dpi)


def _errorbars(
    ax: Any,
    s: Series,
    offset: float,
    st: dict[str, Any],
    *,
    thin: bool = False,
    label: str | None = None,
) -> None:
    pts = [p for p in s.points if p.mean is not None]
    xs = [p.k + offset for p in pts]
    ys = [p.mean for p in pts]
    lower = [max(0.0, (p.mean or 0) - p.low) if p.low is not None else 0.0 for p in pts]
    upper = [max(0.0, p.high - (p.mean or 0)) if p.high is not None else 0.0 for p in pts]
    ax.errorbar(
        xs,
        ys,
        yerr=None if thin else [lower, upper],
        label=_short(s.label) if label is None else label,
        color="#c7ccd1" if thin else st["color"],
        marker=None if thin else st["marker"],
        linestyle="-" if thin else st["linestyle"],
        linewidth=1 if thin else 2,
        markersize=5,
        capsize=3,
        elinewidth=1.2,
        zorder=1 if thin else 3,
    )


def _small_multiples(fig: Any, series: Sequence[Series], ylabel: str, title: str) -> None:
    """One panel per series (in the given order), the other series faint behind it, so that
    many models stay readable."""
    rows = math.ceil(len(series) / PANEL_COLUMNS)
    axes = fig.subplots(rows, PANEL_COLUMNS, sharex=True, sharey=True, squeeze=False)
    ks = sorted({p.k for s in series for p in s.points})
    titles = distinct_labels([s.label for s in series], 24)
    for i, ax in enumerate(axes.flat):
        if i >= len(series):
            ax.set_visible(False)
            continue
        s = series[i]
        for other in series:
            if other is not s:
                _errorbars(ax, other, 0.0, {}, thin=True)
        _errorbars(ax, s, 0.0, style(i if s.style is None else s.style))
        ax.set_title(titles[i], fontsize=10)
        _k_axes(ax, ks, margin=0.4, labelsize=8, gridwidth=0.6)
    fig.supxlabel("k (skills per text)", fontsize=10)
    fig.supylabel(ylabel, fontsize=10)
    fig.suptitle(title, fontsize=13, fontweight="bold")


def _one_panel(fig: Any, series: Sequence[Series], ylabel: str, title: str) -> None:
    """A line per series, dodged sideways a little so that their error bars do not hide each
    other."""
    ax = fig.subplots()
    ks = sorted({p.k for s in series for p in s.points})
    spread = 0.22 if len(ks) > 1 else 0.12
    n = len(series)
    labels = distinct_labels([s.label for s in series], MAX_LABEL)
    for i, s in enumerate(series):
        offset = 0.0 if n == 1 else spread * (i / (n - 1) - 0.5)
        _errorbars(ax, s, offset, style(i if s.style is None else s.style), label=labels[i])
    ax.set_xlabel("k (skills per text)", fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.set_title(title, fontsize=13, fontweight="bold")
    _k_axes(ax, ks, margin=0.5, labelsize=10, gridwidth=0.8)
    if series:
        fig.legend(
            loc="outside lower center",
            ncols=min(LEGEND_COLUMNS, n),
            frameon=False,
            fontsize=10,
        )


def _k_axes(ax: Any, ks: list[int], *, margin: float, labelsize: int, gridwidth: float) -> None:
    """k ticks, a 0..1 rate axis, a light horizontal grid and no top or right frame."""
    ax.set_xticks(ks)
    if ks:
        ax.set_xlim(min(ks) - margin, max(ks) + margin)
    ax.set_ylim(-0.03, 1.03)
    ax.tick_params(labelsize=labelsize)
    ax.grid(True, axis="y", color="#d0d7de", linewidth=gridwidth)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def metric_plot(
    name: str,
    series: Sequence[Series],
    *,
    ylabel: str,
    title: str,
    caption: str = "",
    dpi: int = DEFAULT_DPI,
) -> Image:
    """One metric against k, a line per series, 95% intervals as error bars. Series are
    dodged sideways a little so that their error bars do not hide each other. With
    :data:`SMALL_MULTIPLES_FROM` series or more: a panel per series."""
    width, height = metric_plot_size(len(series), dpi)
    fig = _scaled_figure(width, height, dpi)
    if len(series) >= SMALL_MULTIPLES_FROM:
        _small_multiples(fig, series, ylabel, title)
    else:
        _one_panel(fig, series, ylabel, title)
    return _image(name, title, fig, caption)


def heatmap_rows(total: int) -> int:
    """How many rows a heatmap of ``total`` rows shows (the hardest and easiest halves when
    there are more than :data:`MAX_HEATMAP_ROWS`)."""
    return min(total, MAX_HEATMAP_ROWS)


def heatmap_size(rows: int, columns: int, dpi: int = DEFAULT_DPI) -> tuple[int, int]:
    """(width, height) in pixels of :func:`heatmap` for a table of that shape."""
    shown = heatmap_rows(rows)
    width = max(6.0, 3.6 + 0.85 * columns)
    height = 1.9 + 0.2 * max(shown, 3)
    return _pixels(width, dpi), _pixels(height, dpi)


def heatmap(
    name: str,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    values: Sequence[Sequence[float | None]],
    *,
    title: str,
    colorbar: str,
    caption: str = "",
    dpi: int = DEFAULT_DPI,
) -> Image:
    """Rows x columns of rates in [0, 1] (None: not observed, drawn grey). Rows are shown in
    the order given; beyond :data:`MAX_HEATMAP_ROWS` the first and last halves are kept."""

    width, height = heatmap_size(len(row_labels), len(column_labels), dpi)
    fig = _scaled_figure(width, height, dpi)
    ax = fig.subplots()
    labels = list(row_labels)
    data = [list(r) for r in values]
    skipped = 0
    if len(labels) > MAX_HEATMAP_ROWS:
        half = MAX_HEATMAP_ROWS // 2
        skipped = len(labels) - 2 * half
        labels = labels[:half] + labels[-half:]
        data = data[:half] + data[-half:]
    grid = np.array(
        [[math.nan if v is None else float(v) for v in row] for row in data], dtype=float
    ).reshape(len(labels), len(column_labels))
    from matplotlib import colormaps  # deferred: matplotlib takes ~1 s; only plots need it

    cmap = colormaps["viridis"].with_extremes(bad="#e6e6e6")
    im = ax.imshow(
        np.ma.masked_invalid(grid),
        cmap=cmap,
        vmin=0.0,
        vmax=1.0,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_yticks(range(len(labels)), [_short(x, 38) for x in labels], fontsize=8)
    rotate = len(column_labels) > 4 or max((len(c) for c in column_labels), default=0) > 12
    ax.xaxis.tick_top()  # model names above the columns, rotated to read upwards when long
    ax.set_xticks(
        range(len(column_labels)),
        distinct_labels(column_labels, 30),
        fontsize=9,
        rotation=40 if rotate else 0,
        ha="left" if rotate else "center",
        rotation_mode="anchor",
    )
    if len(column_labels) <= 14:
        for (r, c), v in np.ndenumerate(grid):
            if not math.isnan(v):
                ax.text(
                    c,
                    r,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v < 0.55 else "black",
                )
    if skipped:
        ax.axhline(MAX_HEATMAP_ROWS // 2 - 0.5, color="#D55E00", linewidth=2.5, zorder=5)
        ax.set_xlabel(f"{skipped} middle rows omitted at the red line", fontsize=9)
    ax.set_title(title, fontsize=12, fontweight="bold")
    bar = fig.colorbar(im, ax=ax, shrink=min(1.0, 6.0 / max(1, len(labels)) + 0.3), pad=0.02)
    bar.set_label(colorbar)
    return _image(name, title, fig, caption)


ZERO_AXES_NOTE = " Both axes start at zero."
LOG_AXIS_NOTE = (
    " The score axis starts at zero; the cost axis is logarithmic (the costs span more than a "
    "factor of 20), so it does not start at zero."
)


def scatter_size(dpi: int = DEFAULT_DPI) -> tuple[int, int]:
    return _pixels(7.5, dpi), _pixels(4.8, dpi)


def scatter_plot(
    name: str,
    points: Sequence[tuple[str, float, float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    caption: str = "",
    dpi: int = DEFAULT_DPI,
) -> Image:
    """Labelled points (label, x, y), e.g. a model's score against its cost. Both axes start
    at zero; x goes on a log scale when it spans more than a factor of 20, and then the
    caption says that its axis does not start at zero."""
    width, height = scatter_size(dpi)
    fig = _scaled_figure(width, height, dpi)
    ax = fig.subplots()
    for i, (label, x, y) in enumerate(points):
        st = style(i)
        ax.scatter([x], [y], color=st["color"], marker=st["marker"], s=55, zorder=3, clip_on=False)
        ax.annotate(
            _short(label, 24),
            (x, y),
            xytext=(6, 4),
            textcoords="offset points",
            fontsize=9,
            color="#1b1f24",
        )
    ax.set_ylim(0, 1.05)
    xs = [x for _, x, _ in points if x > 0]
    if xs and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
        ax.margins(x=0.15)
        caption += LOG_AXIS_NOTE
    else:
        ax.set_xlim(0, 1.15 * max(xs) if xs else 1)
        caption += ZERO_AXES_NOTE
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.set_title(title, fontsize=13, fontweight="bold")
    ax.grid(True, color="#d0d7de", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _image(name, title, fig, caption)
