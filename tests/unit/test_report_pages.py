"""The report pages beyond the numbers: the answer browser and its data, per-answer exports,
accessible tables and colours, plots for many models, the score-against-cost view, partial
runs, Markdown with plots and line breaks, the compare baseline view, file permissions.

The crafted run of test_report.py (hostile text in names, topics, answers and replies) is
reused, so the browser's data are checked to carry that text unchanged (the page renders it
with ``textContent``, never as markup).
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import os
import re
import stat
from collections.abc import Iterator
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from skillmix.report.answers import ANSWER_MARK
from skillmix.report.html_answers import answers_href
from skillmix.report.markup import COLORS, CONTRAST_PAIRS, contrast
from skillmix.report.plots import (
    OKABE_ITO,
    SMALL_MULTIPLES_FROM,
    Point,
    Series,
    metric_plot,
    metric_plot_size,
)
from skillmix.store.local import LocalStore
from skillmix.store.runs import RunStore
from tests.helpers import run_cli
from tests.report_checks import markdown_table_rows_ok, parse_page
from tests.unit.test_report import EVIL_MODEL, EVIL_TOPIC, make_crafted_run


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pages")
    run_dir, _ = make_crafted_run(root)
    result = run_cli("report", str(run_dir))
    assert result.exit_code == 0, result.stderr
    report = run_dir / "report"
    return {
        "run": run_dir,
        "report": report,
        "html": (report / "report.html").read_text(encoding="utf-8"),
        "md": (report / "report.md").read_text(encoding="utf-8"),
        "summary": json.loads((report / "summary.json").read_text(encoding="utf-8")),
    }


def browser_data(html: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/octet-stream" id="ab-data"[^>]*>([^<]*)<', html)
    assert found
    data: dict[str, Any] = json.loads(gzip.decompress(base64.b64decode(found.group(1))))
    return data


# the answer browser -----------------------------------------------------------------------
def test_answer_browser_carries_every_answer_with_its_story(crafted: dict[str, Any]) -> None:
    html = crafted["html"]
    page = parse_page(html)
    assert 'id="answers"' in html and 'href="#answers"' in html
    for control in ("ab-model", "ab-k", "ab-round", "ab-skill", "ab-topic", "ab-score", "ab-sort"):
        assert f'id="{control}"' in html
    data = browser_data(html)
    strings, answers = data["strings"], data["answers"]
    assert len(answers) == 2 * 3  # two students x three combinations, one round each
    assert f'data-count="{len(answers)}"' in html
    # hostile text travels unchanged (the page shows it as text)
    assert EVIL_TOPIC in strings and any("<script>alert(2)</script>" in s for s in strings)
    first = answers[0]
    turns = first[12]
    assert turns and strings[turns[0][1]].startswith("Answer: ")
    rounds = first[13]
    assert [r[0] for r in rounds] == [1, 2, 3] and all(len(r[2]) == 5 for r in rounds)
    assert first[8] is not None and first[9] is not None  # voted points, metric items
    # each answer's rubric labels: its k skills, then topic, sense and length
    assert [strings[x] for x in first[15]][2:] == ["on topic", "makes sense", "length (computed)"]
    # the model filter offers each student, in leaderboard order, and so do the answers
    ranked = [r["student"] for r in crafted["summary"]["leaderboards"][0]["rows"]]
    select = re.search(r'<select id="ab-model">(.*?)</select>', html, re.S)
    assert select and re.findall(r'<option value="([^"]*)">', select.group(1)) == ["", *ranked]
    assert list(dict.fromkeys(strings[a[0]] for a in answers)) == ranked
    assert page.scripts and "Loading 6 answers" in html


def test_grading_prompt_is_stored_once_per_combination(tmp_path: Path) -> None:
    from skillmix.method.points import MetricOptions
    from skillmix.report.answers import AnswerSet, browser_rows, collect_answers
    from tests.unit.test_report import grade

    records = []
    for student, answer in (("a", "Bees hum."), ("b", "Wasps buzz.")):
        for r in (1, 2):
            rec = grade([1, 1, 1, 1, 1], r=r, student=student, answer=answer)
            records.append(rec.model_copy(update={"prompt": f"Grade this: {answer} Thanks."}))
    data: AnswerSet = collect_answers("run-1", [], records, MetricOptions())
    rows = browser_rows(data)
    templates = {rows["strings"][r[4]] for a in rows["answers"] for r in a[13]}
    assert templates == {f"Grade this: {ANSWER_MARK} Thanks."}
    for a in rows["answers"]:
        answer = rows["strings"][a[7]]
        prompt = rows["strings"][a[13][0][4]].replace(ANSWER_MARK, answer)
        assert prompt == f"Grade this: {answer} Thanks."
        assert a[12] == []  # no generation record: no conversation, and no error


def test_answers_jsonl_and_scores_csv(crafted: dict[str, Any]) -> None:
    report = crafted["report"]
    lines = [json.loads(x) for x in (report / "answers.jsonl").read_text().splitlines()]
    assert len(lines) == 6
    run_id = crafted["summary"]["run_id"]
    by_key = {(x["student"], x["index"]): x for x in lines}
    evil = by_key[("evil", 1)]  # rounds [0,0,1,1,1] x2 and [1,0,1,1,1]: majority 0,0
    assert evil["run_id"] == run_id and evil["model"] == EVIL_MODEL and evil["k"] == 2
    assert [r["points"] for r in evil["rounds"]] == [[0, 0, 1, 1, 1]] * 2 + [[1, 0, 1, 1, 1]]
    assert evil["voted"][:2] == [0, 0] and evil["full_marks"] == 0
    assert by_key[("evil", 0)]["full_marks"] == 1 and by_key[("evil", 0)]["skill_fraction"] == 1
    rows = list(csv.DictReader(io.StringIO((report / "scores.csv").read_text())))
    assert len(rows) == 6 * 3  # one row per grading verdict
    mine = [r for r in rows if r["student"] == "evil" and r["index"] == "1"]
    assert [r["points"] for r in mine] == ["0 0 1 1 1", "0 0 1 1 1", "1 0 1 1 1"]
    assert {r["full_marks"] for r in mine} == {"0"} and {r["run_id"] for r in mine} == {run_id}
    # the exports agree with the gallery's voted points
    for card in crafted["summary"]["gallery"]:
        line = by_key[(card["student"], card["index"])]
        assert line["voted"] == card["points"]


def test_gallery_never_shows_one_combination_twice(crafted: dict[str, Any]) -> None:
    from skillmix.method.points import MetricOptions
    from skillmix.report.analysis import select_examples, voted_units
    from tests.unit.test_report import grade

    # combination 0 is the best in round 1; its round 2 names a skill and is also the worst
    records = []
    for r in (1, 2, 3):
        records += [
            grade([1, 1, 1, 1, 1], index=0, r=r, g=1),
            grade([0, 0, 0, 0, 0], index=0, r=r, g=2, answer="A red herring."),
            grade([1, 0, 1, 1, 1], index=1, r=r),
        ]
    opts = MetricOptions(filter_explicit_name="word")
    chosen = select_examples(voted_units(records, opts), opts)
    assert [(c.kind, c.index) for c in chosen] == [("best", 0), ("worst", 1)]
    keys = [(c["student"], c["k"], c["index"]) for c in crafted["summary"]["gallery"]]
    assert len(keys) == len(set(keys))


# tables, colours, layout ------------------------------------------------------------------
def test_every_data_table_has_a_caption_and_scoped_headers(
    crafted: dict[str, Any], compared: dict[str, Any]
) -> None:
    # both pages: every table has one caption, and every header cell a scope
    for page in (crafted["html"], compared["html"]):
        for t in re.findall(r"<table[^>]*>.*?</table>", page, re.S):
            assert t.count("<caption") == 1 and re.match(r"<table[^>]*><caption>", t), t[:120]
            assert all("scope=" in th for th in re.findall(r"<th(?:\s[^>]*)?>", t)), t[:300]
    html = crafted["html"]
    tables = re.findall(r"<table[^>]*>.*?</table>", html, re.S)
    assert len(tables) > 8
    for t in tables:
        if "<thead" in t:
            assert re.match(r"<table[^>]*><caption>", t), t[:120]
            head = re.search(r"<thead>(.*?)</thead>", t, re.S)
            assert head
            assert all("scope=" in th for th in re.findall(r"<th[^>]*>", head.group(1))), t[:200]
        else:
            assert all('scope="row"' in th for th in re.findall(r"<th[^>]*>", t)), t[:200]
    # n visible without hovering: in each leaderboard's caption, and per-skill "rate (n)"
    assert html.count("n = 3 combinations in every cell") == 3
    assert re.search(r"<td class=\"num[^\"]*\"[^>]*>\d\.\d\d \(n=\d+\)†?</td>", html)


def test_colours_meet_wcag_aa() -> None:
    for fg, bg in CONTRAST_PAIRS:
        assert contrast(COLORS[fg], COLORS[bg]) >= 4.5, (fg, bg)
    assert round(contrast("#ffffff", "#000000"), 1) == 21.0
    # every plot colour is visible on white (no pale yellow)
    assert all(contrast(c, "#ffffff") >= 2.0 for c in OKABE_ITO)
    assert "#F0E442" not in OKABE_ITO


def test_layout_rules_for_narrow_screens(crafted: dict[str, Any]) -> None:
    html = crafted["html"]
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in html
    css = re.search(r"<style>(.*?)</style>", html, re.S)
    assert css
    style = css.group(1)
    # tables scroll in their own box; grids never ask for more than the screen's width
    assert re.search(r"\ntable \{[^}]*display: block;[^}]*overflow-x: auto", style)
    assert "minmax(min(380px, 100%), 1fr)" in style and "minmax(min(420px, 100%), 1fr)" in style
    assert "@media (max-width: 600px)" in style


# plots ------------------------------------------------------------------------------------
def _series(n: int) -> list[Series]:
    return [
        Series(f"model-{i}", (Point(2, 0.1 * (i % 9), 0.0, 0.5), Point(3, 0.5, 0.2, 0.9)))
        for i in range(n)
    ]


def test_many_models_get_small_multiples_at_twice_the_resolution() -> None:
    few = metric_plot("m", _series(3), ylabel="y", title="t")
    many = metric_plot("m", _series(SMALL_MULTIPLES_FROM + 1), ylabel="y", title="t")
    assert (few.scale, many.scale) == (2, 2)
    assert few.css_size == metric_plot_size(3) and many.css_size == metric_plot_size(8)
    assert (few.width, few.height) == (2 * few.css_size[0], 2 * few.css_size[1])
    assert many.css_size[0] > few.css_size[0]  # the panel grid is wider, and 2 rows tall
    assert metric_plot_size(8)[1] < metric_plot_size(12)[1]


def test_score_against_cost_view(crafted: dict[str, Any]) -> None:
    html = crafted["html"]
    assert 'id="cost"' in html and 'data-name="score-vs-cost"' in html
    assert (crafted["report"] / "plots" / "score-vs-cost.png").is_file()
    section = html[html.index('id="cost"') :]
    section = section[: section.index("</section>")]
    for student in ("evil", "plain"):
        assert f"<td>{student}</td>" in section


# partial runs -----------------------------------------------------------------------------
def test_partial_run_lists_the_models_not_graded_yet(tmp_path: Path) -> None:
    run_dir, _ = make_crafted_run(tmp_path)
    for manifest in (run_dir / "grades").rglob("_SUCCESS"):
        if "/plain/" in manifest.as_posix():
            manifest.unlink()  # nothing of "plain" graded yet
    result = run_cli("report", str(run_dir))
    assert result.exit_code == 0, result.stderr
    html = (run_dir / "report" / "report.html").read_text(encoding="utf-8")
    assert "Not graded yet, so not ranked: plain." in html
    md = (run_dir / "report" / "report.md").read_text(encoding="utf-8")
    assert "Not graded yet, so not ranked: plain." in md


# markdown ---------------------------------------------------------------------------------
def test_markdown_shows_plots_and_keeps_line_breaks(crafted: dict[str, Any]) -> None:
    md = crafted["md"]
    markdown_table_rows_ok(md)
    for name, title in (
        ("metric-full_marks", "Ratio of Full Marks vs k"),
        ("skills-heatmap", "Per-skill success across models"),
        ("score-vs-cost", "Ratio of Full Marks against tokens"),
    ):
        assert f"\n![{title}](plots/{name}.png)\n\n" in md
        assert (crafted["report"] / "plots" / f"{name}.png").is_file()
    from skillmix.report.markdown import md_block

    assert md_block("one *a*\n\ntwo | b") == ["> one \\*a\\*", ">", "> two \\| b"]


# compare ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compared(crafted: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("compare")
    run = str(crafted["run"])
    result = run_cli(
        "compare", run, run, "--out", str(out), "--baseline", "plain@2", "--format", "json"
    )
    assert result.exit_code == 0, result.stderr
    return {
        "doc": json.loads(result.stdout),
        "html": (out / "compare.html").read_text(encoding="utf-8"),
        "md": (out / "compare.md").read_text(encoding="utf-8"),
    }


def test_compare_baseline_differences(compared: dict[str, Any], crafted: dict[str, Any]) -> None:
    doc = compared["doc"]
    view = doc["baseline"]
    assert (view["run"], view["chosen"]) == (2, "--baseline")
    rows = {(r["model"], r["run"]): r for r in doc["leaderboards"][0]["rows"]}
    base = next(
        r for r in doc["leaderboards"][0]["rows"] if r["run"] == 2 and r["student"] == "plain"
    )
    full = next(m for m in view["metrics"] if m["metric"] == "full_marks")
    assert len(full["rows"]) == 3  # the other entries: evil x2, plain of run 1
    for diff in full["rows"]:
        entry = rows[(diff["model"], diff["run"])]
        assert diff["mean"] == pytest.approx(entry["score"] - base["score"])
        cell, bcell = entry["cells"]["2"], base["cells"]["2"]
        assert diff["per_k"]["2"] == pytest.approx(cell["mean"] - bcell["mean"])
    same = next(d for d in full["rows"] if d["run"] == 1 and d["model"].startswith("plain"))
    assert same["mean"] == 0  # the same model of the same run, compared with itself
    # per skill: evil's voted point minus plain's, per skill, from the summary's rates
    rates = crafted["summary"]["skill_rates"]
    col = {c: i for i, c in enumerate(rates["columns"])}
    evil_col = view["columns"].index(next(c for c in view["columns"] if c.startswith("evil")))
    for row in view["skills"]:
        source = next(r for r in rates["rows"] if r["skill"] == row["name"])
        expected = source["values"][col["evil"]] - source["values"][col["plain"]]
        assert row["differences"][evil_col] == pytest.approx(expected)
        assert row["category"]
    assert view["categories"] and all(r["name"] for r in view["categories"])


def test_compare_page_marks_runs_and_models(
    compared: dict[str, Any], crafted: dict[str, Any]
) -> None:
    html = compared["html"]
    parse_page(html, links=True)
    assert "2 runs · ranked by" in html and "1 runs" not in html
    assert '<th scope="col">same?</th>' in html
    assert "same model in run #2" in html and "same model in run #1" in html
    report = (crafted["run"] / "report" / "report.html").resolve().as_uri()
    assert html.count(f'href="{report}"') >= 2 + 3 * 4  # runs table + every leaderboard row
    assert 'id="baseline"' in html and "Per skill category" in html
    md = compared["md"]
    markdown_table_rows_ok(md)
    assert "## Differences from plain" in md and "2 runs; ranked by" in md


def test_compare_of_one_run_says_one_run(crafted: dict[str, Any], tmp_path: Path) -> None:
    result = run_cli("compare", str(crafted["run"]), "--out", str(tmp_path / "c"))
    assert result.exit_code == 0, result.stderr
    html = (tmp_path / "c" / "compare.html").read_text(encoding="utf-8")
    assert "1 run · ranked by" in html
    assert "Differences from evil" in html or "Differences from plain" in html  # the leader


def test_compare_unknown_baseline_is_one_line_and_writes_nothing(
    crafted: dict[str, Any], tmp_path: Path
) -> None:
    run = str(crafted["run"])
    out = tmp_path / "c"
    for name, words in (("nobody", "no such model"), ("plain", "is in 2 runs")):
        result = run_cli("compare", run, run, "--out", str(out), "--baseline", name)
        assert result.exit_code == 2
        assert words in result.stderr and len(result.stderr.strip().splitlines()) <= 2
        assert not out.exists()
    assert "plain@1" in result.stderr  # the hint names the NAME@RUN spelling


# permissions ------------------------------------------------------------------------------
@pytest.fixture
def umask() -> Iterator[Any]:
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def test_report_files_have_normal_permissions(umask: Any, tmp_path: Path) -> None:
    run = RunStore(LocalStore(tmp_path / "run"))
    run.write_report_file("report.html", b"<!DOCTYPE html>")
    run.write_report_file("plots/x.png", b"png")
    for name in ("report.html", "plots/x.png"):
        mode = stat.S_IMODE((tmp_path / "run" / "report" / name).stat().st_mode)
        assert mode == 0o644, oct(mode)
    umask(0o077)  # a private umask stays private
    run.write_report_file("summary.json", b"{}")
    assert stat.S_IMODE((tmp_path / "run" / "report" / "summary.json").stat().st_mode) == 0o600
    umask(0o022)
    LocalStore(tmp_path / "s").write_bytes("k", b"x", if_absent=True)  # create-only writes too
    assert stat.S_IMODE((tmp_path / "s" / "k").stat().st_mode) == 0o644


def test_a_whole_report_is_readable_by_others(umask: Any, tmp_path: Path) -> None:
    run_dir, _ = make_crafted_run(tmp_path)
    assert run_cli("report", str(run_dir)).exit_code == 0
    files = [p for p in (run_dir / "report").rglob("*") if p.is_file()]
    assert len(files) >= 10
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(0o644)}


def test_plot_labels_stay_tellable_apart() -> None:
    from skillmix.report.plots import distinct_labels

    names = [f"organisation-model-name-v{i}-instruct-2025" for i in range(10)]
    short = distinct_labels(names, 30)
    assert len(set(short)) == 10 and all(len(x) <= 30 for x in short)
    assert short[3] == "…v3-instruct-2025"
    assert distinct_labels(["alpha", "bravo"], 30) == ["alpha", "bravo"]  # short: unchanged
    cut = distinct_labels(["x" * 50, "y" * 50], 20)
    assert [len(c) for c in cut] == [20, 20] and cut[0] != cut[1]


def test_leaderboard_rows_show_backend_model_id_and_sampling(
    crafted: dict[str, Any], compared: dict[str, Any]
) -> None:
    for html in (crafted["html"], compared["html"]):
        board = re.search(r'<table class="leaderboard".*?</table>', html, re.S)
        assert board
        rows = re.findall(r"<tr[^>]*>(.*?)</tr>", board.group(0), re.S)[1:]
        # once per row, in its own column (not again under the name)
        assert rows and all(r.count('<td class="model">mock: ') == 1 for r in rows)
        assert "model-desc" not in board.group(0)
        assert "mock: plain-model (max_tokens 512)" in board.group(0)  # the default max_tokens
        assert board.group(0).count("<caption") == 1
        # the first label cell (after rank and groups) names the student (the run's own name,
        # or with its run)
        names = [re.sub(r"<[^>]+>", "", re.findall(r"<td[^>]*>(.*?)</td>", r)[2]) for r in rows]
        assert all(n.split(" (")[0] in {"evil", "plain"} for n in names), names
    # the cell's data attributes keep the plain student name
    assert 'data-student="plain"' in crafted["html"]


def test_cost_view_uses_dollars_when_every_price_is_known(crafted: dict[str, Any]) -> None:
    from skillmix.artifacts import Summary
    from skillmix.report.html_report import cost_image, cost_points

    summary = Summary.model_validate(crafted["summary"])
    students = [u for u in summary.usage if u.role == "student"]
    assert students
    priced = summary.model_copy(
        update={
            "usage": [
                u.model_copy(update={"cost_usd": 0.5 * (i + 1)}) if u.role == "student" else u
                for i, u in enumerate(summary.usage)
            ]
        }
    )
    points = cost_points(priced)
    board = summary.leaderboards[0]
    assert [p.student for p in points] == [r.student for r in board.rows]
    assert [p.score for p in points] == [r.score for r in board.rows]
    assert all(p.cost_usd is not None and p.cost_usd > 0 for p in points)
    image = cost_image(priced, 100)
    assert image is not None and image.title.endswith("against cost")
    unpriced = cost_image(summary, 100)  # the mock bills nothing: tokens instead
    assert unpriced is not None and unpriced.title.endswith("against tokens")


def test_answer_browser_lists_answers_not_graded_yet(tmp_path: Path) -> None:
    """A partial run: an answer whose grading has not finished is still in the browser, marked
    "not graded yet"; the per-answer exports keep graded answers only."""
    from skillmix.store.runs import grade_prefix
    from tests.unit.test_report import GRADER

    run_dir, _ = make_crafted_run(tmp_path)
    for r in (1, 2, 3):
        (run_dir / grade_prefix(GRADER, "plain", 2, 1, r) / "i2" / "_SUCCESS").unlink()
    result = run_cli("report", str(run_dir))
    assert result.exit_code == 0, result.stderr
    html = (run_dir / "report" / "report.html").read_text(encoding="utf-8")
    data = browser_data(html)
    strings, answers = data["strings"], data["answers"]
    assert len(answers) == 6 and f'data-count="{len(answers)}"' in html
    ungraded = [a for a in answers if not a[13]]
    assert len(ungraded) == 1
    (a,) = ungraded
    assert (strings[a[0]], a[4], a[8], a[9]) == ("plain", 2, None, None)
    assert strings[a[7]].startswith("Bees hum like a")  # the answer, from its generation
    assert a[12]  # and the conversation
    # in the page's order: the model's answers stay together, by k, round and combination
    plain = [x[4] for x in answers if strings[x[0]] == "plain"]
    assert plain == [0, 1, 2]
    assert '<option value="ungraded">not graded yet</option>' in html
    assert "6 answers (one per model, k, generation round and combination; 1 not graded yet" in html
    lines = (run_dir / "report" / "answers.jsonl").read_text().splitlines()
    assert len(lines) == 5


def test_heatmap_rows_name_their_n() -> None:
    """Each heatmap row names its n (combinations), as the tables' cells do."""
    from skillmix.report.html_report import rate_label

    assert rate_label("metaphor", [6, 6, 6], [0.5, 1.0, None]) == "metaphor (n=6)"
    assert rate_label("metaphor", [3, 6, 0], [0.5, 1.0, None]) == "metaphor (n=3–6)"
    long = rate_label("a very long skill name that goes on and on", [12], [1.0])
    assert long.endswith("… (n=12)") and len(long) <= 38


def test_cells_link_to_their_answers(crafted: dict[str, Any], compared: dict[str, Any]) -> None:
    """Issue 23: a leaderboard value opens the answer browser filtered to its model and k (the
    score: to its model); a per-skill or per-topic rate to its model and skill or topic.
    compare.html has no answer browser, so no such links."""
    html = crafted["html"]
    assert re.search(r'<a href="#answers\?student=plain&amp;k=2" class="drill">', html)
    assert '<a href="#answers?student=evil" class="drill">' in html
    skill = crafted["summary"]["skill_rates"]["rows"][0]["skill"]
    href = "#answers?" + urlencode({"student": "evil", "skill": skill}, quote_via=quote)
    assert f'href="{escape(href)}"' in html
    assert 'href="#answers?' not in compared["html"]
    assert (
        answers_href("a b", 3, skill="x&y", topic=None) == "#answers?student=a%20b&k=3&skill=x%26y"
    )


def test_the_ranking_comes_first_and_the_examples_are_folded(crafted: dict[str, Any]) -> None:
    """Issue 23: the headline ranking with its scores is the section's first table (a phone's
    first screen), and the example cards sit behind closed <details>."""
    html = crafted["html"]
    section = html[html.index('id="leaderboards"') :]
    assert section.index('class="ranking"') < section.index('class="leaderboard"')
    assert section.index('class="ranking"') < section.index("What the metrics mean")
    gallery = html[html.index('id="gallery"') : html.index('id="answers"')]
    folds = re.findall(r"<details class=\"examples\"[^>]*>", gallery)
    assert len(folds) == 2 and not any(" open" in f for f in folds)  # evil and plain, k = 2
    assert gallery.count('class="card"') == len(crafted["summary"]["gallery"])
    cards = [m.start() for m in re.finditer('class="card"', gallery)]
    first_fold = gallery.index('<details class="examples"')
    assert all(c > first_fold for c in cards)
