"""The run report: HTML structure, escaping, images, numbers, Markdown, gallery selection.

The crafted run below holds text no model should be able to smuggle into a report: HTML
(``<script>``) and Markdown specials (``|``, ``*``, ``#``, backticks) in the model id, the
grader's model id, topics, answers and the grader's replies.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from skillmix.artifacts import LeaderboardCell, MetricValueJson
from skillmix.config import Experiment
from skillmix.loading import parse_experiment
from skillmix.method.metrics import aggregate
from skillmix.method.points import MetricOptions
from skillmix.pipeline.context import resolve_context
from skillmix.records import GenerationRecord, GradeRecord, Turn
from skillmix.report.analysis import (
    category_rates,
    select_examples,
    self_grading_warnings,
    skill_rates,
    topic_rates,
    voted_units,
)
from skillmix.report.leaderboard import Entry, competition_ranks, leaderboard, mean_over_k
from skillmix.report.markdown import md_escape
from skillmix.report.markup import Safe, el, fmt, page_script, pct
from skillmix.report.plots import heatmap_size, metric_plot_size, scatter_size
from skillmix.store.local import LocalStore
from skillmix.store.runs import RunStore, generation_prefix, grade_prefix
from tests.helpers import run_cli
from tests.report_checks import (
    aggregate_numbers,
    check_images,
    leaderboard_numbers,
    markdown_table_rows_ok,
    parse_page,
)

EVIL_MODEL = "evil<script>alert(1)</script>|*bold*`x`"
EVIL_GRADER = "judge<b>x</b>|#1"
EVIL_TOPIC = "Bees <script>alert(1)</script> | *x* _y_ `z` # [l](http://example.com)"
GRADER = "judge"


def grade(
    points: list[float] | None,
    *,
    index: int = 0,
    r: int = 1,
    g: int = 1,
    k: int = 2,
    student: str = "s",
    skills: tuple[str, ...] = ("metaphor", "red herring"),
    answer: str = "Bees hum.",
    topic: str = "Beekeeping",
    raw: str | None = None,
) -> GradeRecord:
    return GradeRecord(
        student=student,
        grader=GRADER,
        k=k,
        generation_round=g,
        grading_round=r,
        index=index,
        topic=topic,
        skills=list(skills[:k]),
        answer=answer,
        prompt_version="table-v1",
        style="table",
        raw=raw if raw is not None else f"points {points}",
        points=points,
        parse_status="ok" if points is not None else "empty",
        status="ok" if points is not None else "unparsed",
    )


# a crafted run folder -----------------------------------------------------------------------
def _write_unit(run: RunStore, prefix: str, records: list[Any]) -> None:
    writer = run.writer(prefix, part_size=100, flush_seconds=1e9)
    for record in records:
        writer.add(record)
    writer.flush()
    run.write_manifest(prefix, writer.written)


def make_crafted_run(root: Path) -> tuple[Path, Any]:
    exp = parse_experiment(
        {
            "name": "crafted",
            "ks": [2],
            "combinations": 3,
            "students": [
                {"name": "evil", "backend": "mock", "model": EVIL_MODEL},
                {"name": "plain", "backend": "mock", "model": "plain-model"},
            ],
            "grader": {"name": GRADER, "backend": "mock", "model": EVIL_GRADER, "rounds": 3},
            "metrics": {"bootstrap_samples": 200},
        }
    )
    ctx = resolve_context(exp)
    run_dir = root / ctx.run_id
    run = RunStore(LocalStore(run_dir))
    run.write_run_json(ctx.to_run_json())
    skills = ctx.combinations(2)[0].skills
    name = skills[0].split("(")[0].strip()
    answers = {
        0: "Bees hum <script>alert(1)</script> | *loudly* and `softly` & more",
        1: "Bees | hum **twice** <b>bold</b> with # hashes and [brackets]",
        2: f"Bees hum like a {name} <img src=x onerror=alert(1)> in the hive",
    }
    # (per grading round) points: index 0 full marks, 1 no skill, 2 names a skill
    plan = {
        "evil": {
            0: [[1, 1, 1, 1, 1]] * 3,
            1: [[0, 0, 1, 1, 1]] * 2 + [[1, 0, 1, 1, 1]],
            2: [[1, 1, 1, 1, 1]] * 3,
        },
        "plain": {0: [[1, 0, 1, 1, 1]] * 3, 1: [[1, 1, 1, 1, 0]] * 3, 2: [[0, 1, 1, 0, 1]] * 3},
    }
    for student, by_index in plan.items():
        gens = []
        for i, rounds in by_index.items():
            topic = EVIL_TOPIC if i == 0 else f"Topic {i} *star* | pipe"
            gens.append(
                GenerationRecord(
                    student=student,
                    model=EVIL_MODEL if student == "evil" else "plain-model",
                    k=2,
                    generation_round=1,
                    index=i,
                    topic=topic,
                    skills=list(skills),
                    prompt_version="two-turn-v1",
                    turns=[Turn(user="u", assistant=f"Answer: {answers[i]}")],
                    answer=answers[i],
                )
            )
            for r, points in enumerate(rounds, start=1):
                record = grade(
                    [float(p) for p in points],
                    index=i,
                    r=r,
                    student=student,
                    skills=tuple(skills),
                    answer=answers[i],
                    topic=topic,
                    raw="Here's the grading table: <script>alert(2)</script> | x |",
                )
                _write_unit(run, grade_prefix(GRADER, student, 2, 1, r) + f"/i{i}", [record])
        _write_unit(run, generation_prefix(student, 2, 1), gens)
    return run_dir, ctx


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("crafted")
    run_dir, ctx = make_crafted_run(root)
    out = root / "out"
    result = run_cli("report", str(run_dir), "--out", str(out), "--format", "json")
    assert result.exit_code == 0, result.stderr
    return {
        "run": run_dir,
        "ctx": ctx,
        "out": out,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "html": (out / "report.html").read_text(encoding="utf-8"),
        "md": (out / "report.md").read_text(encoding="utf-8"),
        "summary": json.loads((out / "summary.json").read_text(encoding="utf-8")),
    }


def test_html_is_well_formed_and_self_contained(crafted: dict[str, Any]) -> None:
    page = parse_page(crafted["html"])
    assert {"table", "figure", "img", "section", "nav"} <= set(page.tags)
    for anchor in ("leaderboards", "plots", "settings", "skills", "topics", "agreement"):
        assert f'id="{anchor}"' in crafted["html"]
    for anchor in ("failures", "usage", "gallery"):
        assert f'href="#{anchor}"' in crafted["html"]
    # written into --out only: the run folder is only read
    assert not (crafted["run"] / "report").exists()
    assert "report.html" in crafted["stderr"].strip().splitlines()[-1]


def test_run_text_is_escaped_in_html(crafted: dict[str, Any]) -> None:
    html = crafted["html"]
    # the page's own two script elements (checked by parse_page) aside, nothing from the run
    outside = re.sub(r"<script[^>]*>[^<]*</script>", "", html)
    outside = outside.replace(f"<script>{page_script()}</script>", "")
    for raw in ("<script", "<b>x</b>", "<b>bold</b>", "<img src=x"):
        assert raw not in outside
    assert "evil&lt;script&gt;alert(1)&lt;/script&gt;|*bold*" in html
    assert "judge&lt;b&gt;x&lt;/b&gt;" in html
    assert "Bees hum &lt;script&gt;alert(1)&lt;/script&gt;" in html
    # The escaped text reads back as the original text.
    text = "".join(parse_page(html).text)
    assert EVIL_MODEL in text and EVIL_TOPIC in text


def test_images_decode_with_their_sizes(crafted: dict[str, Any]) -> None:
    page = parse_page(crafted["html"])
    sizes = check_images(page)
    summary = crafted["summary"]
    expected = {
        "metric-full_marks": metric_plot_size(2),
        "metric-all_skills": metric_plot_size(2),
        "metric-skill_fraction": metric_plot_size(2),
        "skills-heatmap": heatmap_size(len(summary["skill_rates"]["rows"]), 2),
        "topics-heatmap": heatmap_size(len(summary["topic_rates"]["rows"]), 2),
        "score-vs-cost": scatter_size(),
        "item-failures": heatmap_size(4, 2),
    }
    assert sizes == expected
    for image in page.images:  # the same PNGs are written next to the report
        assert (crafted["out"] / "plots" / f"{image.name}.png").read_bytes() == image.png


def test_leaderboard_numbers_equal_aggregate_json(crafted: dict[str, Any]) -> None:
    result = run_cli("aggregate", str(crafted["run"]), "--format", "json")
    assert result.exit_code == 0, result.stderr
    shown = leaderboard_numbers(parse_page(crafted["html"]))
    assert shown == aggregate_numbers(json.loads(result.stdout))
    assert len(shown) == 2 * 3  # two students, one k, three metrics


def test_markdown_escapes_run_text(crafted: dict[str, Any]) -> None:
    md = crafted["md"]
    markdown_table_rows_ok(md)
    assert "<script" not in md and "<b>" not in md and "<img" not in md
    assert "\\*loudly\\*" in md and "\\`softly\\`" in md
    assert "evil&lt;script>alert(1)&lt;/script>\\|\\*bold\\*" in md
    assert "## Leaderboards" in md and "## Grader agreement across grading rounds" in md
    assert "## Example answers" in md


def test_summary_has_the_new_sections(crafted: dict[str, Any]) -> None:
    s = crafted["summary"]
    for key in ("leaderboards", "agreement", "gallery", "skill_rates", "topic_rates", "quality"):
        assert key in s
    assert s["status"] == "complete"
    agreement = {(r["student"], r["k"]): r["items"] for r in s["agreement"]["rows"]}
    # evil: index 1 split 2/1 on the first skill, everything else unanimous
    evil = agreement[("evil", "all")]
    assert evil["skills"]["subjects"] == 6 and evil["skills"]["percent"] == pytest.approx(
        (5 + 1 / 3) / 6
    )
    assert evil["topic"]["percent"] == 1.0 and evil["topic"]["kappa"] is None
    quality = {(q["student"], q["k"]): q for q in s["quality"]}
    assert quality[("evil", 2)]["grades"] == 9 and quality[("evil", 2)]["generations"] == 3


def test_summary_says_which_rubric_items_fail_per_model(crafted: dict[str, Any]) -> None:
    """Issue 23: per model, the share of rubric points missed per item group (skills pooled),
    from the voted points the metrics count (name filter applied, length point computed)."""
    section = crafted["summary"]["item_failures"]
    assert section["groups"] == ["skills", "topic", "sense", "length"]
    rows = {r["student"]: r for r in section["rows"]}
    # evil: index 1 votes no skill, index 2 names its first skill (filtered to 0)
    evil = {g: (c["failed"], c["points"]) for g, c in rows["evil"]["items"].items()}
    assert evil == {"skills": (3, 6), "topic": (0, 3), "sense": (0, 3), "length": (0, 3)}
    # plain: the grader's length 0 is replaced by the computed point; index 2 makes no sense
    plain = {g: (c["failed"], c["points"]) for g, c in rows["plain"]["items"].items()}
    assert plain == {"skills": (2, 6), "topic": (0, 3), "sense": (1, 3), "length": (0, 3)}
    assert rows["evil"]["worst"] == "skills" and rows["evil"]["answers"] == 3
    for text in (crafted["html"], crafted["md"]):
        assert "Which rubric items fail" in text and "0.50 (3/6)" in text


def test_gallery_picks_best_worst_and_explicit_names(crafted: dict[str, Any]) -> None:
    evil = [g for g in crafted["summary"]["gallery"] if g["student"] == "evil"]
    kinds = {g["kind"]: g for g in evil}
    assert kinds["best"]["index"] == 0 and kinds["best"]["scores"]["full_marks"] == 1.0
    assert kinds["worst"]["index"] == 1
    hit = kinds["explicit_name"]
    assert hit["index"] == 2 and hit["named_filtered"] and hit["points"][0] == 0.0
    assert len(hit["rounds"]) == 3 and hit["rubric"][-1] == "length (computed)"


def test_partially_graded_run_reports_what_is_finished(tmp_path: Path) -> None:
    run_dir, _ = make_crafted_run(tmp_path)
    unfinished = next((run_dir / "grades").rglob("_SUCCESS"))
    unfinished.unlink()  # one grading unit not finished yet
    result = run_cli("report", str(run_dir))
    assert result.exit_code == 0, result.stderr
    assert "warning: partial run: 17 of 18 grading verdicts" in result.stderr
    html = (run_dir / "report" / "report.html").read_text(encoding="utf-8")
    parse_page(html)
    assert "Partial run: " in html
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert summary["status"] == "partial"
    assert "**Partial run**" in (run_dir / "report" / "report.md").read_text(encoding="utf-8")


def test_partial_run_never_counts_more_verdicts_than_planned(tmp_path: Path) -> None:
    """Defect fixed: grades of a generation unit without a manifest (unfinished, or its
    manifest lost) were counted but not planned: "partial run: 18 of 9 grading verdicts"."""
    run_dir, _ = make_crafted_run(tmp_path)
    (run_dir / generation_prefix("plain", 2, 1) / "_SUCCESS").unlink()
    result = run_cli("report", str(run_dir))
    assert result.exit_code == 0, result.stderr
    assert "warning: partial run: 9 of 9 grading verdicts and 3 of 6 generations" in result.stderr
    counts = json.loads((run_dir / "report" / "summary.json").read_text())["counts"]
    assert counts["grades"] <= counts["planned_grades"]


# pure pieces ---------------------------------------------------------------------------------
def test_competition_ranks_share_ties() -> None:
    assert competition_ranks([0.5, 0.2, 0.5, None, 0.1]) == [1, 3, 1, None, 4]
    assert competition_ranks([]) == []


def test_leaderboard_ranks_by_mean_over_common_ks() -> None:
    def cell(mean: float) -> LeaderboardCell:
        return LeaderboardCell(mean=mean, stderr=0.1, ci95=[0.0, 1.0], n=1, unparsed=0)

    entries = [
        Entry(
            student="a",
            grader="g",
            ks=[2, 3],
            metrics={"full_marks": {"2": cell(0.9), "3": cell(0.1)}},
        ),
        Entry(student="b", grader="g", ks=[2], metrics={"full_marks": {"2": cell(0.5)}}),
    ]
    board = leaderboard(entries, "full_marks")
    assert board.ranked_over_ks == [2] and board.ks == [2, 3]
    assert [(r.student, r.rank, r.score) for r in board.rows] == [
        ("a", 1, 0.9),
        ("b", 2, 0.5),
    ]
    assert board.rows[1].cells["3"] is None
    assert mean_over_k({"2": MetricValueJson(mean=0.5, stderr=None, ci95=None)}, [2, 3]) is None


def test_md_escape() -> None:
    assert md_escape("a|b") == "a\\|b"
    assert md_escape("line\nnext") == "line next"
    assert md_escape("*x* _y_ `z` <s> [l](u) #") == "\\*x\\* \\_y\\_ \\`z\\` &lt;s> [l\\](u) #"
    # only where markup could start: no visible escapes in ordinary names and our own numbers
    assert md_escape("mock_grader #1 a-b") == "mock_grader #1 a-b"
    assert md_escape("tied: +0.011 [-0.133, +0.144], p < 0.001") == (
        "tied: +0.011 [-0.133, +0.144], p < 0.001"
    )
    assert md_escape("# x") == "\\# x" and md_escape("- x") == "\\- x"
    assert md_escape("1. x") == "1\\. x" and md_escape("![i](u)") == "![i\\](u)"
    assert md_escape("a & b") == "a & b" and md_escape("&amp;") == "&amp;amp;"
    assert md_escape("back\\slash|") == "back\\slash\\|"


NASTY = [
    "*bold* _it_ `code` ~~del~~ <b>x</b> <script>alert(1)</script> <!-- c --> <http://a.b>",
    "[link](http://x) ![img](http://y) [ref][r] [r]: http://z [^1]: note",
    "# heading",
    "- item",
    "+ item",
    "1. item",
    "2) item",
    "> quote",
    "---",
    "===",
    "a\\",
    "trailing backslash \\",
    "\\*not bold\\*",
    "&amp; &#65; &lt;",
    "cell | cell",
    "tied: +0.011 [-0.133, +0.144], p < 0.001 (23:22 of 90)",
    "#1 quickstart-01a0fd25 and a_b_c and x > y",
]


@pytest.mark.parametrize("text", NASTY)
def test_md_escape_renders_as_plain_text(text: str) -> None:
    """Rendered by a CommonMark renderer (with tables, as GitHub does), an escaped text is that
    text and nothing else: no markup survives, and no escape is visible."""
    import html as html_lib

    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    for line in (
        md_escape(text),
        "> " + md_escape(text),
        "| a |\n|---|\n| " + md_escape(text) + " |",
    ):
        rendered = md.render(line)
        tags = set(re.findall(r"</?([a-z0-9]+)", rendered))
        assert tags <= {"p", "blockquote", "table", "thead", "tbody", "tr", "th", "td"}, (
            line,
            rendered,
        )
        shown = html_lib.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()
        if line.startswith("|"):
            shown = shown.removeprefix("a").strip()
        assert shown == text, (line, rendered)


def test_el_escapes_text_and_attributes() -> None:
    out = el("td", "<b>&", title='"x"<', data_value="1", class_="num", hidden=True, skip=None)
    assert (
        out == '<td title="&quot;x&quot;&lt;" data-value="1" class="num" hidden>&lt;b&gt;&amp;</td>'
    )
    assert el("p", Safe("<i>ok</i>"), 3) == "<p><i>ok</i>3</p>"
    assert el("img", src="data:x") == '<img src="data:x">'
    assert fmt(-0.0001) == "0.00" and fmt(None) == "n/a" and pct(0.5) == "50.0%"


def test_gallery_selection_rules() -> None:
    opts = MetricOptions(filter_explicit_name="word")
    records = []
    # index 0 and 1 both full marks: the tie goes to index 0; index 2: no points at all
    # (never best or worst); index 3 worst; indexes 4 (two rounds) and 5 name a skill.
    for r in (1, 2, 3):
        records += [
            grade([1, 1, 1, 1, 1], index=0, r=r),
            grade([1, 1, 1, 1, 1], index=1, r=r),
            grade(None, index=2, r=r),
            grade([0, 0, 0, 1, 1], index=3, r=r),
            grade([1, 1, 1, 1, 1], index=4, r=r, answer="A red herring."),
            grade([1, 1, 1, 1, 1], index=4, r=r, g=2, answer="A red herring."),
            grade([1, 1, 1, 1, 1], index=5, r=r, answer="Metaphor time."),
        ]
    units = voted_units(records, opts)
    assert [u.index for u in units if u.scores is None] == [2]
    chosen = select_examples(units, opts)
    assert [(c.kind, c.index, c.generation_round) for c in chosen] == [
        ("best", 0, 1),
        ("worst", 3, 1),
        ("explicit_name", 4, 1),  # round 2 of the same combination is not repeated
        ("explicit_name", 5, 1),
    ]
    assert chosen[2].named_skills == ["red herring"]
    # With the filter off, names are still reported, but as not filtered.
    off = select_examples(
        voted_units(records, MetricOptions(filter_explicit_name="off")),
        MetricOptions(filter_explicit_name="off"),
    )
    hits = [c for c in off if c.kind == "explicit_name"]
    assert hits and not any(c.named_filtered for c in hits)


def test_one_unit_is_shown_once() -> None:
    opts = MetricOptions()
    units = voted_units([grade([1, 1, 1, 1, 1], r=r) for r in (1, 2)], opts)
    assert [c.kind for c in select_examples(units, opts)] == ["best"]


def test_pooled_rates_match_the_metrics_per_k() -> None:
    opts = MetricOptions(bootstrap_samples=0)
    records = []
    for i, (topic, pts) in enumerate(
        [("Bees", [1, 0, 1, 1, 1]), ("Bees", [1, 1, 1, 1, 1]), ("Jazz", [0, 1, 1, 1, 1])]
    ):
        names = ("metaphor", "red herring") if i < 2 else ("red herring", "irony")
        for r in (1, 2, 3):
            records.append(grade([float(p) for p in pts], index=i, r=r, topic=topic, skills=names))
    (row,) = aggregate([r.to_graded_answer() for r in records], opts)
    skills = skill_rates([row], min_n=1)
    assert {r.skill: r.values[0] for r in skills.rows} == pytest.approx(row.per_skill)
    assert {r.skill: r.n[0] for r in skills.rows} == {"metaphor": 2, "red herring": 3, "irony": 1}
    topics = topic_rates([row], min_n=1)
    assert {r.topic: r.values[0] for r in topics.rows} == pytest.approx(row.per_topic)
    assert {r.topic: r.n[0] for r in topics.rows} == {"Bees": 2, "Jazz": 1}
    first, last = skills.rows[0].mean, skills.rows[-1].mean
    assert first is not None and last is not None
    assert first <= last  # hardest first


def test_hardest_first_ignores_cells_below_min_n() -> None:
    """A skill seen once and failed must not top the "hardest" list over a skill failed in
    most of many combinations; it sorts last, and its n is shown."""
    opts = MetricOptions(bootstrap_samples=0)
    records = [
        grade([0.0, 1, 1, 1, 1], index=0, skills=("rare", "x")),
        *[
            grade([0.0 if i % 4 else 1.0, 1, 1, 1, 1], index=i, skills=("common", "y"))
            for i in range(1, 13)
        ],
    ]
    (row,) = aggregate([r.to_graded_answer() for r in records], opts)
    table = skill_rates([row], categories={"rare": "c1", "common": "c2"}, min_n=5)
    names = [r.skill for r in table.rows]
    assert names.index("common") < names.index("rare")
    rare = next(r for r in table.rows if r.skill == "rare")
    assert rare.values == [0.0] and rare.n == [1] and table.min_n == 5
    cats = category_rates([row], {"rare": "c1", "common": "c2", "x": "c1", "y": "c2"}, min_n=5)
    by_name = {r.category: r for r in cats.rows}
    assert by_name["c2"].n == [24] and by_name["c2"].skills == 2
    assert by_name["c2"].values[0] == pytest.approx((3 + 12) / 24)
    assert by_name["c1"].n == [2] and [r.category for r in cats.rows] == ["c2", "c1"]


def test_self_grading_is_warned() -> None:
    students = [
        {"name": "a", "backend": "openai", "model": "gpt-4o"},
        {"name": "b", "backend": "openai", "model": "gpt-4o-mini"},
    ]
    grader = {"name": "judge", "backend": "openai", "model": "gpt-4o"}

    def experiment(grader: dict[str, str]) -> Experiment:
        return Experiment.model_validate(
            {"name": "e", "ks": [2], "students": students, "grader": grader}
        )

    (line,) = self_grading_warnings(experiment(grader))
    assert "student 'a'" in line and "(openai: gpt-4o)" in line
    assert self_grading_warnings(experiment({**grader, "model": "other"})) == []


def test_aggregate_rejects_an_unknown_filter_skill(tmp_path: Path) -> None:
    run_dir, ctx = make_crafted_run(tmp_path)
    result = run_cli("aggregate", str(run_dir), "--filter-skills", "nosuch")
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith("error: --filter-skills: unknown skill 'nosuch'")
    assert len(result.stderr.strip().splitlines()) == 1
    known = ctx.combinations(2)[0].skills[0]
    result = run_cli("aggregate", str(run_dir), "--filter-skills", known, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["settings"]["filter_skills"] == [known]


def test_self_grading_warns_on_stderr_and_in_the_report(tmp_path: Path) -> None:
    result = run_cli(
        "evaluate", "--model", "judge", "--grader", "judge", "--k", "2", "-n", "3",
        "--grading-rounds", "1", "--store", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "warning: self-grading: student 'judge'" in result.stderr
    (report,) = tmp_path.glob("*/report")
    summary = json.loads((report / "summary.json").read_text())
    assert summary["warnings"] and "self-grading" in summary["warnings"][0]
    assert "self-grading" in (report / "report.md").read_text()
    assert "self-grading" in (report / "report.html").read_text()
    board = summary["leaderboards"][0]
    assert board["score_label"] == "mean over k = 2"
    row = board["rows"][0]
    assert (row["model_id"], row["backend"], row["tie_group"]) == ("judge", "mock", 1)
    assert summary["metrics"]["settings"]["interval_method"].startswith("95% Wilson")
    assert summary["category_rates"]["rows"]
    rebuilt = run_cli("report", str(report.parent))
    assert rebuilt.exit_code == 0 and "warning: self-grading" in rebuilt.stderr
