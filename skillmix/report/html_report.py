"""``report.html``: one self-contained page for a run, built from the report's view model
(:mod:`skillmix.report.view`) and ``summary.json`` plus, for the answer browser, every answer
of the run (:mod:`skillmix.report.answers`).

The sections live in their own modules: the leaderboards (``html_leaderboard``), the run's
settings, failures, usage and cost (``html_sections``), rates, agreement and examples
(``html_analysis``), the answer browser (``html_answers``); the plots in ``figures``.
"""

from __future__ import annotations

from skillmix.artifacts import Summary
from skillmix.report.answers import AnswerSet
from skillmix.report.figures import (
    cost_figure,
    item_failures_image,
    metric_images,
    rate_label,
    rates_image,
)
from skillmix.report.html_analysis import (
    agreement_section,
    gallery_section,
    item_failures_section,
    rates_details,
    rates_section,
)
from skillmix.report.html_answers import answers_section
from skillmix.report.html_leaderboard import leaderboard_table, leaderboards_section
from skillmix.report.html_sections import (
    cost_section,
    failures_section,
    partial_banner,
    reproduction_section,
    settings_section,
    usage_section,
)
from skillmix.report.markup import Image, Safe, el, figure, page
from skillmix.report.plots import DEFAULT_DPI
from skillmix.report.view import (
    ReportView,
    cost_points,
    entry_label,
    model_descriptions,
    report_view,
    ungraded_models,
)

__all__ = [
    "cost_image",
    "cost_points",
    "leaderboard_table",
    "metric_images",
    "model_descriptions",
    "rate_label",
    "render_html",
    "ungraded_models",
]

NAV = (
    ("leaderboards", "Leaderboards"),
    ("plots", "Metrics vs k"),
    ("settings", "Settings"),
    ("reproduce", "Reproduce"),
    ("items", "Rubric items"),
    ("skills", "Per skill"),
    ("topics", "Per topic"),
    ("agreement", "Grader agreement"),
    ("failures", "Failures & retries"),
    ("usage", "Usage & cost"),
    ("cost", "Score vs cost"),
    ("gallery", "Example answers"),
    ("answers", "All answers"),
)


def cost_image(summary: Summary, dpi: int) -> Image | None:
    """The score against cost of a run (None before anything is graded)."""
    if not summary.leaderboards:
        return None
    board = summary.leaderboards[0]
    return cost_figure(cost_points(summary), board.metric, board.score_label, dpi)


def plots_section(images: list[Image]) -> Safe:
    return el(
        "section",
        el("h2", "Metrics vs k"),
        el("div", *[figure(i) for i in images], class_="plots"),
        id="plots",
    )


def subtitle(summary: Summary, view: ReportView) -> Safe:
    """The run id, its design in one line, and the banner of a partial run."""
    e = summary.experiment
    return el(
        "div",
        el("code", summary.run_id),
        f" · {len(e.students)} students · k = {', '.join(map(str, e.ks))} · "
        f"M = {e.combinations} · G = {e.generation_rounds} · {view.rounds_text} · "
        f"grader {e.grader.model} · reported {summary.reported_at}",
        *[el("div", el("strong", "Note: "), mark, class_="mark") for mark in view.header_marks],
        partial_banner(view.partial),
    )


def rate_sections(
    summary: Summary, skills_img: Image | None, topics_img: Image | None, links: bool = False
) -> list[Safe]:
    """Per skill (and category) and per topic: the heatmaps and their tables; ``links``: the
    skill and topic cells open the answer browser."""
    return [
        rates_section(
            "skills",
            "Per-skill success",
            "Per skill and model, pooled over k: the skill's voted point per combination with "
            "generation rounds combined as the headline metrics combine them, averaged over "
            "combinations (n = combinations). Per category: the same over every skill of the "
            "category.",
            skills_img,
            el(
                "div",
                rates_details(summary.category_rates, "category", extra=["skills"])
                if summary.category_rates is not None
                else None,
                rates_details(summary.skill_rates, "skill", extra=["category"], links=links),
            ),
        ),
        rates_section(
            "topics",
            "Per-topic Ratio of Full Marks",
            "Share of combinations with full marks (generation rounds combined) per topic and "
            "model, pooled over k (n = combinations).",
            topics_img,
            rates_details(summary.topic_rates, "topic", links=links),
        ),
    ]


def render_html(
    summary: Summary,
    *,
    dpi: int = DEFAULT_DPI,
    answers: AnswerSet | None = None,
    view: ReportView | None = None,
) -> tuple[str, list[Image]]:
    """The page and the images embedded in it; ``answers``: every answer of the run for the
    answer browser (left out without); ``view``: the report's view model, when already
    built (else built here)."""
    view = view or report_view(summary)
    boards = summary.leaderboards
    metric_imgs = metric_images(boards, lambda row: entry_label(row, boards), dpi)
    skills_img = rates_image(
        "skills-heatmap",
        summary.skill_rates,
        "skill",
        "Per-skill success across models",
        "mean voted skill point",
        dpi,
    )
    topics_img = rates_image(
        "topics-heatmap",
        summary.topic_rates,
        "topic",
        "Per-topic Ratio of Full Marks across models",
        "Ratio of Full Marks",
        dpi,
    )
    cost_img = cost_image(summary, dpi)
    items_img = item_failures_image(view.items, dpi)
    body = [
        leaderboards_section(view, links=answers is not None),
        plots_section(metric_imgs),
        settings_section(summary),
        reproduction_section(view.reproduction),
        item_failures_section(view.items, items_img),
        *rate_sections(summary, skills_img, topics_img, links=answers is not None),
        agreement_section(summary.agreement),
        failures_section(summary),
        usage_section(summary.usage, summary.gpu_usage),
        cost_section(view.cost, view.cost_metric, cost_img),
        gallery_section(summary.gallery),
        answers_section(answers) if answers is not None else None,
    ]
    footer = el(
        "span",
        f"skillmix {summary.skillmix_version} · run created {summary.created_at} · "
        f"report built {summary.reported_at} · SKILL-MIX (Yu et al. 2023, arXiv 2310.17567)",
    )
    images = [
        *metric_imgs,
        *[i for i in (items_img, skills_img, topics_img, cost_img) if i is not None],
    ]
    title = f"SKILL-MIX report: {summary.run_id}"
    nav = [
        item
        for item in NAV
        if (answers is not None or item[0] != "answers")
        and (view.reproduction is not None or item[0] != "reproduce")
        and (view.items is not None or item[0] != "items")
    ]
    return page(title, subtitle(summary, view), nav, body, footer), images
