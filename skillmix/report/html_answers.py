"""report.html's answer browser: every answer of the run, filterable and sortable, its data
embedded compressed and its rows built by the page's script."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, urlencode

from skillmix.report.answers import Answer, AnswerSet, browser_payload
from skillmix.report.markup import Safe, el

# The answer browser's columns: (header, sort key or None, numeric).
ANSWER_COLUMNS = (
    ("", None, False),
    ("model", "model", False),
    ("k", "k", True),
    ("comb.", "combination", True),
    ("round", "round", True),
    ("topic", "topic", False),
    ("skills", None, False),
    ("full marks", "score", True),
    ("skill fraction", "score", True),
    ("points", "score", True),
)
SORT_OPTIONS = (
    ("model", "model"),
    ("k", "k"),
    ("combination", "combination"),
    ("round", "generation round"),
    ("topic", "topic"),
    ("score", "score"),
)


def answers_href(student: str, k: int | None = None, **filters: str | None) -> str:
    """A link that opens the answer browser filtered to a model (and a k, a skill or a
    topic): ``#answers?student=S&k=K&skill=X``, applied by the page's script."""
    query = {"student": student, "k": None if k is None else str(k), **filters}
    params = {key: value for key, value in query.items() if value is not None}
    return "#answers?" + urlencode(params, quote_via=quote)


def _select(ident: str, label: str, options: Sequence[tuple[str, str]]) -> Safe:
    return el(
        "label",
        label,
        el("select", *[el("option", text, value=value) for value, text in options], id=ident),
    )


def answer_filters(answers: Sequence[Answer]) -> Safe:
    """The browser's filter and sort controls (hidden until the script runs)."""
    students = list(dict.fromkeys(a.unit.student for a in answers))
    ks = sorted({a.unit.k for a in answers})
    rounds = sorted({a.unit.generation_round for a in answers})
    return el(
        "div",
        _select("ab-model", "model", [("", "all"), *[(x, x) for x in students]]),
        _select("ab-k", "k", [("", "all"), *[(str(k), str(k)) for k in ks]]),
        _select("ab-round", "generation round", [("", "all"), *[(str(r), str(r)) for r in rounds]]),
        el("label", "skill contains", el("input", type="search", id="ab-skill", size=16)),
        el("label", "topic contains", el("input", type="search", id="ab-topic", size=16)),
        _select(
            "ab-score",
            "score",
            [
                ("", "all"),
                ("full", "full marks"),
                ("not-full", "not full marks"),
                ("all-skills", "all skills shown"),
                ("unscored", "no usable verdict"),
                *([("ungraded", "not graded yet")] if any(not a.graded for a in answers) else []),
            ],
        ),
        _select("ab-sort", "sort by", SORT_OPTIONS),
        el("label", el("input", type="checkbox", id="ab-desc"), "descending", class_="inline"),
        id="ab-filters",
        class_="filters",
        hidden=True,
    )


def answers_section(data: AnswerSet) -> Safe:
    """Every answer, filterable and sortable; opening one shows its conversation, each grading
    round's reply and points, the vote and the grading prompt. The data are embedded
    compressed (:func:`skillmix.report.answers.browser_payload`) and rows are built by the
    page's script a page at a time, so a large run stays a fast page."""
    answers = data.answers
    filters = answer_filters(answers)
    head = el(
        "tr",
        *[
            el(
                "th",
                title,
                scope="col",
                class_="num" if numeric else None,
                data_sort=key,
            )
            for title, key, numeric in ANSWER_COLUMNS
        ],
    )
    grid = el(
        "table",
        el(
            "caption",
            "Answers matching the filters; ▸ opens the conversation, the verdicts and the "
            "grading prompt.",
        ),
        el("thead", head),
        el("tbody"),
        id="ab-table",
    )
    return el(
        "section",
        el("h2", "All answers"),
        el(
            "p",
            f"{len(answers)} answers (one per model, k, generation round and combination"
            + (
                f"; {waiting} not graded yet: a partial run"
                if (waiting := sum(1 for a in answers if not a.graded))
                else ""
            )
            + "). Full marks, skill fraction and points are the answer's voted "
            "points, as the metrics count them (before generation rounds are combined). "
            "The same numbers, without the texts, are in answers.jsonl and scores.csv next "
            "to this page.",
            class_="note",
        ),
        filters,
        el("p", f"Loading {len(answers)} answers…", id="ab-status", aria_live="polite"),
        grid,
        el("button", "Show more", type="button", id="ab-more", hidden=True),
        el(
            "noscript",
            el("p", "The answer browser needs JavaScript; every answer is in answers.jsonl."),
        ),
        el(
            "script",
            Safe(browser_payload(data)),
            type="application/octet-stream",
            id="ab-data",
            data_count=len(answers),
        ),
        id="answers",
    )
