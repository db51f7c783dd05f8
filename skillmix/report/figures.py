"""The report's figures: metric-vs-k plots, per-skill and per-topic heatmaps and the score
against cost, drawn from the leaderboards, the rate tables and the view's cost points (the
numbers they plot are the ones the tables show)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from skillmix.artifacts import CategoryRates, Leaderboard, LeaderboardRow, SkillRates, TopicRates
from skillmix.method.points import METRIC_TITLES
from skillmix.report.item_view import ItemFailuresView
from skillmix.report.markup import Image
from skillmix.report.plots import (
    MAX_HEATMAP_ROWS,
    Point,
    Series,
    heatmap,
    metric_plot,
    scatter_plot,
)
from skillmix.report.view import CostPoint

RowLabel = Callable[[LeaderboardRow], str]


def metric_series(board: Leaderboard, label: RowLabel, styles: Mapping[str, int]) -> list[Series]:
    """Plot series of one leaderboard (one per row, in rank order); ``styles`` maps labels to
    style indexes so that a model looks the same in every plot."""
    out = []
    for row in board.rows:
        points = []
        for k in board.ks:
            cell = row.cells.get(str(k))
            if cell is None or cell.mean is None:
                continue
            ci = cell.ci95 or [None, None]
            points.append(Point(k, cell.mean, ci[0], ci[1]))
        name = label(row)
        out.append(Series(name, tuple(points), styles.get(name)))
    return out


def metric_images(
    boards: Sequence[Leaderboard], label: RowLabel, dpi: int, prefix: str = "metric"
) -> list[Image]:
    """One plot per leaderboard; styles follow the first board's order."""
    styles: dict[str, int] = {}
    for board in boards[:1]:
        for row in board.rows:
            styles.setdefault(label(row), len(styles))
    return [
        metric_plot(
            f"{prefix}-{board.metric}",
            metric_series(board, label, styles),
            ylabel=METRIC_TITLES[board.metric],
            title=f"{METRIC_TITLES[board.metric]} vs k",
            caption=(
                f"{METRIC_TITLES[board.metric]} per model and k: mean over combinations; "
                "error bars: 95% Wilson score interval."
            ),
            dpi=dpi,
        )
        for board in boards
    ]


def rate_label(name: str, ns: Sequence[int], values: Sequence[float | None]) -> str:
    """A heatmap row's label with its n (combinations per cell; a range when the models'
    differ), the name shortened so that the n always shows."""
    counts = sorted({n for n, v in zip(ns, values, strict=False) if v is not None})
    n = "" if not counts else str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    suffix = f" (n={n})" if n else ""
    room = 38 - len(suffix)
    short = name if len(name) <= room else name[: room - 1].rstrip() + "…"
    return short + suffix


def rates_image(
    name: str,
    table_data: SkillRates | TopicRates | CategoryRates,
    what: str,
    title: str,
    colorbar: str,
    dpi: int,
) -> Image | None:
    """A heatmap of a rate table (hardest rows first, as the table sorts them)."""
    if not table_data.rows or not table_data.columns:
        return None
    rows = table_data.rows
    shown = "" if len(rows) <= MAX_HEATMAP_ROWS else f" ({MAX_HEATMAP_ROWS} of {len(rows)} shown)"
    return heatmap(
        name,
        [rate_label(getattr(r, what), r.n, r.values) for r in rows],
        table_data.columns,
        [r.values for r in rows],
        title=title,
        colorbar=colorbar,
        caption=(
            f"Sorted hardest first (by the mean over models, counting cells with n ≥ "
            f"{table_data.min_n}){shown}; grey: not sampled."
        ),
        dpi=dpi,
    )


def item_failures_image(view: ItemFailuresView | None, dpi: int) -> Image | None:
    """A small heatmap: rubric item groups (rows) against models (columns), each cell the
    share of points missed (the table's rates)."""
    if view is None:
        return None
    return heatmap(
        "item-failures",
        list(view.titles),
        [r.model for r in view.rows],
        [[r.cells[i].rate for r in view.rows] for i in range(len(view.groups))],
        title="Which rubric items fail",
        colorbar="share of points missed",
        caption="Per model and rubric item group (skills pooled), pooled over k: the share of "
        "rubric points missed; brighter fails more.",
        dpi=dpi,
    )


def cost_figure(
    points: Sequence[CostPoint], metric: str, score_label: str, dpi: int
) -> Image | None:
    """Each model's headline score against its generation cost (or tokens, when some price
    is unknown or nothing was billed)."""
    if not points:
        return None
    # by cost when every price is known and something cost money (mock runs are free)
    priced = all(p.cost_usd is not None for p in points) and any(p.cost_usd for p in points)
    title = METRIC_TITLES[metric]
    return scatter_plot(
        "score-vs-cost",
        [
            (
                p.student,
                float(p.cost_usd if priced and p.cost_usd is not None else p.tokens),
                p.score,
            )
            for p in points
        ],
        xlabel="generation cost (USD)" if priced else "generation tokens (prompt + completion)",
        ylabel=f"{title} ({score_label})",
        title=f"{title} against {'cost' if priced else 'tokens'}",
        caption=(
            "Each point: a model's headline score against what its answers cost to generate"
            + ("" if priced else " (in tokens: some prices are unknown, or nothing was billed)")
            + "; up and to the left is better."
        ),
        dpi=dpi,
    )
