"""Parity of the report's renderers: report.html, report.md, metrics.csv and the terminal
table of one run show the same numbers, the ones of the view model (every model's value per
k and metric, its standard error, interval bounds and n; every leaderboard row's rank and
score).

Each output is parsed back on its own (no renderer code is reused to read it), so a renderer
that rounds, orders or labels differently makes the check fail; the last tests show that it
does.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.artifacts import Summary
from skillmix.report.reproduction import reproduction
from skillmix.report.view import CellView, ReportView, report_view
from tests.helpers import run_cli

Key = tuple[str, str, int, str]  # (student, grader, k, metric)


@dataclass
class Shown:
    """What one output shows of a cell; None where that output does not show it."""

    mean: str
    stderr: str
    ci: tuple[str, str] | None = None
    n: int | None = None
    exact: tuple[float | None, float | None, float | None, float | None] | None = None


@dataclass
class Outputs:
    html: str
    markdown: str
    csv: str
    terminal: str
    summary: Summary
    view: ReportView = field(init=False)

    def __post_init__(self) -> None:
        self.view = report_view(self.summary)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    tmp = tmp_path_factory.mktemp("parity")
    store = tmp / "store"
    experiment = {
        "name": "parity",
        "seed": 7,
        "ks": [2, 3],
        "combinations": 7,
        "students": [
            {"name": f"s{i}", "backend": "mock", "model": f"mock-{i}", "quality": q}
            for i, q in enumerate((0.9, 0.6, 0.6, 0.2))
        ],
        "grader": {"name": "g", "backend": "mock", "model": "mock-g", "rounds": 3},
        "metrics": {"bootstrap_samples": 200},
        "store": str(store),
    }
    path = tmp / "parity.yaml"
    path.write_text(yaml.safe_dump(experiment))
    result = run_cli("evaluate", "-f", str(path), "--no-progress")
    assert result.exit_code == 0, result.stderr
    (run_dir,) = [p for p in store.iterdir() if p.name.startswith("parity-")]
    result = run_cli("report", str(run_dir))
    assert result.exit_code == 0, result.stderr
    report = run_dir / "report"
    return Outputs(
        html=(report / "report.html").read_text(encoding="utf-8"),
        markdown=(report / "report.md").read_text(encoding="utf-8"),
        csv=(report / "metrics.csv").read_text(encoding="utf-8"),
        terminal=result.stdout,
        summary=Summary.model_validate_json((report / "summary.json").read_bytes()),
    )


# reading each output back ------------------------------------------------------------------
CELL = re.compile(
    r"^(?P<mean>\S+) ± (?P<stderr>n/a \(n<2\)|\S+)"
    r"(?: ?\[(?P<low>[^,\]]+), (?P<high>[^\]]+)\])?(?: n=(?P<n>\d+))?$"
)


TERMINAL_CELL = re.compile(r"^(?P<mean>\S+)(?: \[(?P<low>[^,\]]+), (?P<high>[^\]]+)\])?$")
SCORE = re.compile(r"^(?P<score>[^\s\[]+) ?(?P<ci>\[[^\]]+\])?$")
Ranked = tuple[str, str, str, tuple[float | None, float | None] | None]  # rank, score, ci, exact


def parse_score(text: str) -> tuple[str, str]:
    """A leaderboard's score cell: its text and its interval's text ("" without one)."""
    found = SCORE.match(" ".join(text.split()))
    assert found, f"not a score cell: {text!r}"
    return found["score"], found["ci"] or ""


def parse_terminal_cell(text: str) -> Shown | None:
    """The terminal's ``mean [low, high]`` (the report's Wilson interval, no stderr)."""
    text = " ".join(text.split())
    if text == "—":
        return None
    found = TERMINAL_CELL.match(text)
    assert found, f"not a terminal cell: {text!r}"
    ci = (found["low"], found["high"]) if found["low"] is not None else None
    return Shown(found["mean"], "", ci)


def parse_cell(text: str) -> Shown | None:
    text = " ".join(text.split())
    if text == "—":
        return None
    found = CELL.match(text)
    assert found, f"not a metric cell: {text!r}"
    ci = (found["low"], found["high"]) if found["low"] is not None else None
    return Shown(found["mean"], found["stderr"], ci, int(found["n"]) if found["n"] else None)


class _Leaderboards(HTMLParser):
    """The leaderboard tables of report.html: per row, each ``<td>``'s attributes and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.boards: dict[str, list[list[tuple[dict[str, str], str]]]] = {}
        self.metric: str | None = None
        self.cell: tuple[dict[str, str], list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table" and "leaderboard" in a.get("class", "").split():
            self.metric = a["data-metric"]
            self.boards[self.metric] = []
        elif self.metric and tag == "tr":
            self.boards[self.metric].append([])
        elif self.metric and tag == "td":
            self.cell = (a, [])

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.metric = None
        elif tag == "td" and self.cell is not None and self.metric:
            self.boards[self.metric][-1].append((self.cell[0], "".join(self.cell[1])))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell[1].append(data)


def _number(text: str) -> float | None:
    return None if text in ("", "null") else float(text)


def html_numbers(
    html: str,
) -> tuple[dict[Key, Shown | None], dict[tuple[str, str], Ranked]]:
    """Cells by key (visible text and exact data attributes) and, per (metric, student),
    the rank and score texts with the score's interval (text and exact bounds)."""
    parser = _Leaderboards()
    parser.feed(html)
    cells: dict[Key, Shown | None] = {}
    ranks: dict[tuple[str, str], Ranked] = {}
    for metric, rows in parser.boards.items():
        for tds in rows:
            if not tds:  # the header row
                continue
            score, text = next((a, t) for a, t in tds if "data-score" in a)
            bounds = (
                (_number(score["data-ci-low"]), _number(score["data-ci-high"]))
                if "data-ci-low" in score
                else None
            )
            ranks[(metric, score["data-student"])] = (tds[0][1], *parse_score(text), bounds)
            for a, text in tds:
                if "data-k" not in a:
                    continue
                key = (a["data-student"], a["data-grader"], int(a["data-k"]), metric)
                shown = parse_cell(text)
                if shown is not None:
                    shown.exact = (
                        _number(a["data-value"]),
                        _number(a["data-stderr"]),
                        _number(a["data-ci-low"]),
                        _number(a["data-ci-high"]),
                    )
                    assert int(a["data-n"]) == shown.n
                cells[key] = shown
    return cells, ranks


def split_row(line: str) -> list[str]:
    """A Markdown table row's cells (an escaped ``\\|`` stays inside its cell)."""
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [c.strip() for c in cells]


def markdown_tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """Every table under a heading, as rows of header -> cell."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading = ""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|--"):
            header = split_row(line)
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, split_row(row), strict=True)))
            tables[heading] = rows
    return tables


def markdown_numbers(
    markdown: str, view: ReportView
) -> tuple[dict[Key, Shown | None], dict[Key, Shown | None], dict[tuple[str, str], Ranked]]:
    """Leaderboard cells, metrics-table cells, and (metric, student) -> (rank, score)."""
    tables = markdown_tables(markdown)
    board_cells: dict[Key, Shown | None] = {}
    ranks: dict[tuple[str, str], Ranked] = {}
    for board in view.boards:
        for row in tables[board.title]:
            student, grader = row["student"], row["grader"]
            score = parse_score(row[board.score_label])
            ranks[(board.metric, student)] = (row["rank"], *score, None)
            for k in board.ks:
                board_cells[(student, grader, k, board.metric)] = parse_cell(row[f"k={k}"])
    metric_cells: dict[Key, Shown | None] = {}
    for row in tables["Metrics (mean ± stderr [95% interval] n)"]:
        for metric, title in zip(view.metrics.metrics, view.metrics.titles, strict=True):
            shown = parse_cell(row[title])
            key = (row["student"], row["grader"], int(row["k"]), metric)
            if shown is not None:
                shown.n = int(row["n"])
            metric_cells[key] = shown
    return board_cells, metric_cells, ranks


def csv_numbers(text: str, view: ReportView) -> dict[Key, Shown]:
    out = {}
    for row in csv.DictReader(io.StringIO(text)):
        for metric in view.metrics.metrics:
            mean, stderr, low, high = (
                _number(row[f"{metric}_{part}"])
                for part in ("mean", "stderr", "ci95_low", "ci95_high")
            )
            key = (row["student"], row["grader"], int(row["k"]), metric)
            out[key] = Shown("", "", None, int(row["n"]), (mean, stderr, low, high))
    return out


def terminal_numbers(text: str, view: ReportView) -> dict[Key, Shown | None]:
    """The rich table's body rows (``│`` separated): student, grader, k, n, metrics."""
    out: dict[Key, Shown | None] = {}
    for line in text.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        student, grader, k, n, *values = cells
        for metric, value in zip(view.metrics.metrics, values, strict=False):
            shown = parse_terminal_cell(value)
            if shown is not None:
                shown.n = int(n)
            out[(student, grader, int(k), metric)] = shown
    return out


# what the view says ------------------------------------------------------------------------
def expected(cell: CellView | None, *, ci: bool = True, n: bool = True) -> Shown | None:
    if cell is None:
        return None
    low, high = (cell.ci_text or "[, ]")[1:-1].split(", ")
    return Shown(
        cell.mean_text,
        cell.stderr_text,
        (low, high) if ci and cell.ci_text else None,
        cell.n if n else None,
    )


def view_cells(view: ReportView) -> dict[Key, CellView]:
    return {
        (row.student, row.grader, row.k, metric): cell
        for row in view.metrics.rows
        for metric, cell in row.cells.items()
    }


def parity_problems(outputs: Outputs) -> list[str]:
    """Every place where an output shows another number than the view (empty: parity)."""
    view = outputs.view
    cells = view_cells(view)
    problems: list[str] = []

    def check(what: str, shown: Shown | None, want: Shown | None) -> None:
        got = None if shown is None else Shown(shown.mean, shown.stderr, shown.ci, shown.n)
        if got != want:
            problems.append(f"{what}: shows {got}, the view {want}")

    html_cells, html_ranks = html_numbers(outputs.html)
    md_cells, md_metrics, md_ranks = markdown_numbers(outputs.markdown, view)
    terminal = terminal_numbers(outputs.terminal, view)
    table = csv_numbers(outputs.csv, view)
    for key, cell in cells.items():
        check(f"report.html {key}", html_cells.get(key), expected(cell))
        check(f"report.md leaderboard {key}", md_cells.get(key), expected(cell))
        check(f"report.md metrics {key}", md_metrics.get(key), expected(cell))
        want = expected(cell)
        check(f"terminal {key}", terminal.get(key), want and Shown(want.mean, "", want.ci, want.n))
        exact = (cell.mean, cell.stderr, cell.ci_low, cell.ci_high)
        html = html_cells.get(key)
        if html is None or html.exact != exact:
            problems.append(f"report.html {key}: exact {html and html.exact}, the view {exact}")
        if key not in table or table[key].exact != exact or table[key].n != cell.n:
            problems.append(f"metrics.csv {key}: {table.get(key)}, the view {exact} n={cell.n}")
    for shown_keys, what in (
        (html_cells, "report.html"),
        (md_cells, "report.md"),
        (terminal, "terminal"),
    ):
        extra = set(shown_keys) - set(cells)
        if extra:
            problems.append(f"{what} shows cells the view does not have: {sorted(extra)}")
    for board in view.boards:
        for row in board.rows:
            ranked = (row.rank_text, row.score_text, row.score_ci_text)
            for what, ranks in (("report.html", html_ranks), ("report.md", md_ranks)):
                got = ranks.get((board.metric, row.student))
                if got is None or got[:3] != ranked:
                    problems.append(
                        f"{what} {board.metric} {row.student}: {got}, the view {ranked}"
                    )
            html_row = html_ranks.get((board.metric, row.student))
            if html_row is not None and html_row[3] != row.score_ci:
                problems.append(f"report.html {board.metric} {row.student}: score interval")
    problems += csv_rank_problems(outputs)
    return problems


def csv_rank_problems(outputs: Outputs) -> list[str]:
    """metrics.csv's per-row rank, score and score interval are the leaderboards' (one row
    per model x k, each naming its model id), and its counts add up to summary.json's
    progress per student."""
    view, problems = outputs.view, []
    rows = list(csv.DictReader(io.StringIO(outputs.csv)))
    want_keys = {(r.student, r.grader, r.k) for r in view.metrics.rows}
    if [(r["student"], r["grader"], int(r["k"])) for r in rows] != sorted(want_keys):
        problems.append("metrics.csv: not one row per model x k")
    ids = {s.name: s.model for s in outputs.summary.experiment.students}
    for board in view.boards:
        by_model = {(r.student, r.grader): r for r in board.rows}
        for line in rows:
            ranked = by_model[(line["student"], line["grader"])]
            low, high = ranked.score_ci or (None, None)
            shown = (
                line[f"{board.metric}_rank"],
                _number(line[f"{board.metric}_score"]),
                _number(line[f"{board.metric}_score_ci95_low"]),
                _number(line[f"{board.metric}_score_ci95_high"]),
            )
            if shown != (str(ranked.rank or ""), ranked.score, low, high):
                problems.append(f"metrics.csv {board.metric} {line['student']}: {shown}")
    for line in rows:
        if line["model_id"] != ids[line["student"]]:
            problems.append(f"metrics.csv {line['student']}: model id {line['model_id']}")
    for p in outputs.summary.progress or []:
        words = "answers" if p.phase == "generate" else "verdicts"
        mine = [line for line in rows if line["student"] == p.student]
        for column, want in (("planned", p.planned), ("done", p.done), ("failed", p.failed)):
            name = f"planned_{words}" if column == "planned" else f"{words}_{column}"
            if sum(int(line[name]) for line in mine) != want:
                problems.append(f"metrics.csv {p.student} {name}: not {want}")
    return problems


# the tests ---------------------------------------------------------------------------------
def test_the_view_rounds_its_own_exact_numbers(outputs: Outputs) -> None:
    """The view's texts are the exact numbers rounded (2 digits, 3 for stderr and scores),
    and its ranks follow the scores, so parity with the view is parity with the data."""
    for cell in view_cells(outputs.view).values():
        assert cell.mean is not None and cell.stderr is not None
        assert cell.mean_text == f"{cell.mean:.2f}" and cell.stderr_text == f"{cell.stderr:.3f}"
        assert cell.ci_text == f"[{cell.ci_low:.2f}, {cell.ci_high:.2f}]"
    for board in outputs.view.boards:
        scores = [r.score for r in board.rows]
        assert scores == sorted(scores, key=lambda s: -(s or 0))
        assert all(r.score_text == f"{r.score:.3f}" for r in board.rows if r.score is not None)
        assert all(r.rank_text.rstrip("≈") == str(r.rank) for r in board.rows)


def test_every_output_shows_the_numbers_of_the_view(outputs: Outputs) -> None:
    view = outputs.view
    assert len(view.metrics.rows) == 4 * 2 and len(view.boards) == 3
    assert len({r.rank for b in view.boards for r in b.rows}) > 1  # the ranks differ
    assert all(r.score_ci_text for b in view.boards for r in b.rows)  # scores have intervals
    assert parity_problems(outputs) == []
    # a score interval shown otherwise than the view is caught
    row = view.boards[0].rows[0]
    swapped = outputs.markdown.replace(f"{row.score_text} {row.score_ci_text}", row.score_text)
    assert parity_problems(_tampered(outputs, markdown=swapped))


def _tampered(outputs: Outputs, **changes: str) -> Outputs:
    fields = {n: getattr(outputs, n) for n in ("html", "markdown", "csv", "terminal")}
    return Outputs(**{**fields, **changes}, summary=outputs.summary)


def _round_csv_column(
    text: str, column: str, change: Callable[[str], str] = lambda v: f"{float(v):.2f}"
) -> str:
    """The CSV with the first row's ``column`` changed."""
    rows = list(csv.reader(io.StringIO(text)))
    at = rows[0].index(column)
    rows[1][at] = change(rows[1][at])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _first_cell(view: ReportView) -> CellView:
    return next(iter(view_cells(view).values()))


@pytest.mark.parametrize(
    "tamper",
    [
        # a Markdown leaderboard cell rounded to 3 digits
        lambda o, c: {
            "markdown": o.markdown.replace(
                f"| {c.text} |", f"| {c.mean:.3f}{c.text[len(c.mean_text) :]} |", 1
            )
        },
        # a terminal cell rounded to 1 digit
        lambda o, c: {
            "terminal": o.terminal.replace(c.interval_text, f"{c.mean:.1f} {c.ci_text}", 1)
        },
        # an interval bound of the page rounded up
        lambda o, c: {
            "html": o.html.replace(f">{c.ci_text}<", f">[{c.ci_low:.1f}, {c.ci_high:.2f}]<", 1)
        },
        # a CSV value written as its rounded text
        lambda o, c: {"csv": o.csv.replace(repr(c.mean), c.mean_text, 1)},
        # a CSV score interval rounded
        lambda o, c: {"csv": _round_csv_column(o.csv, "full_marks_score_ci95_low")},
        # a CSV count off by one
        lambda o, c: {"csv": _round_csv_column(o.csv, "answers_done", lambda v: str(int(v) + 1))},
    ],
    ids=["markdown", "terminal", "html", "csv", "csv-score-ci", "csv-counts"],
)
def test_parity_fails_when_one_output_rounds_otherwise(
    outputs: Outputs, tamper: Callable[[Outputs, CellView], dict[str, str]]
) -> None:
    cell = _first_cell(outputs.view)
    change = tamper(outputs, cell)
    ((name, text),) = change.items()
    assert text != getattr(outputs, name), "the tamper found nothing to change"
    assert parity_problems(_tampered(outputs, **change))


def test_parity_fails_for_a_renderer_that_computes(
    outputs: Outputs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A Markdown renderer that formats the exact number itself (3 digits) instead of taking
    the view's text is caught; the rank of a renderer that recounts is caught too."""
    import skillmix.report.markdown as markdown

    def own_rounding(cell: CellView | None) -> str:
        return "—" if cell is None else cell.text.replace(cell.mean_text, f"{cell.mean:.3f}", 1)

    monkeypatch.setattr(markdown, "_cell_text", own_rounding)
    rendered = markdown.render_markdown(outputs.summary, view=outputs.view)
    problems = parity_problems(_tampered(outputs, markdown=rendered))
    assert problems and all(p.startswith("report.md leaderboard") for p in problems)
    monkeypatch.undo()
    ranks: dict[str, Any] = {}
    for board in outputs.view.boards:
        ranks[board.metric] = [r.rank_text for r in board.rows]
    swapped = outputs.markdown.replace(f"| {ranks['full_marks'][0]} |", "| 9 |", 1)
    assert parity_problems(_tampered(outputs, markdown=swapped))


def test_reports_show_letter_groups_and_holm_adjusted_p(outputs: Outputs) -> None:
    """Issue 23: every ranked row has its letters (summary.json, report.md, report.html), the
    'vs next' cells give the raw and the Holm-adjusted p, and the method text says that
    significance is decided on the adjusted p."""
    summary, tables = outputs.summary, markdown_tables(outputs.markdown)
    for board in summary.leaderboards:
        assert all(r.letters for r in board.rows if r.rank is not None)
        assert all(
            p.p_adjusted is not None and p.p_adjusted >= p.p_value
            for p in board.pairwise
            if p.p_value is not None
        )
        shown = {row["student"]: row["groups"] for row in tables[board.title]}
        assert shown == {r.student: r.letters for r in board.rows}
        for r in board.rows:
            assert f'data-letters="{r.letters}"' in outputs.html
    assert "Holm p = " in outputs.markdown and "Holm p = " in outputs.html
    assert "share a letter are not significantly different" in outputs.markdown
    assert "share a letter are not significantly different" in outputs.html
    assert "significant when the adjusted p < 0.05" in outputs.markdown


def test_every_report_has_a_reproduction_block(outputs: Outputs) -> None:
    """Issue 23: report.html and report.md give the commands, the skillmix version and git
    revision, the catalog and prompt hashes (those of run.json) and a citation line for
    SKILL-MIX and for the tool; summary.json stores the block."""
    summary = outputs.summary
    block = summary.reproduction
    assert block is not None
    assert block.commands[-1] == f"skillmix report {summary.run}"
    assert any(c.startswith("skillmix evaluate -f ") for c in block.commands)
    run_json = json.loads((Path(summary.run) / "run.json").read_text(encoding="utf-8"))
    hashes = [
        run_json["catalog"]["hash"],
        run_json["prompts"]["generation"]["hash"],
        run_json["prompts"]["grading"]["hash"],
    ]
    assert all(hashes)
    for text in (outputs.markdown, outputs.html):
        section = text[text.index("Reproduce and cite") :]
        for needle in (*hashes, f"skillmix {summary.skillmix_version}", "arXiv:2310.17567"):
            assert needle in section, needle
        assert "git revision" in section and f"skillmix report {summary.run}" in section
    assert 'href="#reproduce"' in outputs.html


def test_the_revision_is_the_images(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKILLMIX_REVISION", "0123abc")
    block = reproduction("/runs/r1", "1.2.3")
    assert block.revision == "0123abc" and "(git revision 0123abc)" in block.citation[1]
    monkeypatch.delenv("SKILLMIX_REVISION")
    assert reproduction("/runs/r1", "1.2.3").revision is None


def latex_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """(metric label, student) -> the cells of a LaTeX table row."""
    out: dict[tuple[str, str], list[str]] = {}
    label = ""
    for line in text.splitlines():
        if line.startswith(r"\label{"):
            label = line[len(r"\label{tab:skillmix-") : -1]
        elif line.endswith(r" \\") and not line.startswith("rank"):
            cells = [c.strip() for c in line[: -len(r" \\")].split(" & ")]
            out[(label, cells[2])] = cells
    return out


def test_latex_tables_show_the_numbers_of_the_view(outputs: Outputs, tmp_path: Path) -> None:
    """Issue 23: `skillmix report RUN --format latex` prints the leaderboards as LaTeX
    tables whose ranks, letters, cells and scores are the view's texts."""
    result = run_cli("report", outputs.summary.run, "--out", str(tmp_path), "--format", "latex")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert text.count(r"\begin{tabular}") == 3 and r"\toprule" in text
    rows = latex_rows(text)
    for board in outputs.view.boards:
        for row in board.rows:
            cells = rows[(board.metric.replace("_", "-"), row.student)]
            assert cells[0] == row.rank_text.replace("≈", r"$\approx$")
            assert cells[1] == row.letters
            shown = [c.interval_text for c in row.cells.values() if c]
            assert cells[4:-1] == shown
            assert cells[-1] == f"{row.score_text} {row.score_ci_text}"


def test_the_header_names_a_name_filter_other_than_the_references(outputs: Outputs) -> None:
    """Issue 23: the default explicit-name filter (word) is not the reference's (off); the
    header of both pages says so. No student here is graded by its own model: no such mark."""
    assert outputs.summary.metrics.settings.filter_explicit_name == "word"
    header = outputs.markdown[: outputs.markdown.index("## Leaderboards")]
    note = "explicit-name filter: word (the reference's default is off)"
    assert f"> **Note**: {note}" in header
    subtitle = outputs.html[outputs.html.index("<header") : outputs.html.index("</header>")]
    assert note in html.unescape(subtitle)
    assert "self-graded" not in outputs.markdown and "self-graded" not in outputs.html
    assert "R = 3 grading rounds" in subtitle and "in effect" not in subtitle


class _ItemCells(HTMLParser):
    """report.html's rubric-item table: (student, group) -> (cell text, data-value)."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], tuple[str, float | None]] = {}
        self._open: tuple[str, str, float | None] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and a.get("data-group") is not None:
            value = json.loads(a.get("data-value") or "null")
            self._open, self._text = (a["data-student"] or "", a["data-group"] or "", value), ""

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._open is not None:
            student, group, value = self._open
            self.cells[(student, group)] = (html.unescape(self._text).strip(), value)
            self._open = None


def test_rubric_item_failures_show_the_same_numbers_everywhere(outputs: Outputs) -> None:
    """Issue 23: the 'which rubric items fail' table shows the view's numbers in report.html
    and report.md, and the view's are summary.json's."""
    view, section = outputs.view.items, outputs.summary.item_failures
    assert view is not None and section is not None
    parser = _ItemCells()
    parser.feed(outputs.html)
    table = markdown_tables(outputs.markdown)["Which rubric items fail (pooled over k)"]
    by_model = {row["model"]: row for row in table}
    assert len(view.rows) == len(section.rows) == 4
    for row, stored in zip(view.rows, section.rows, strict=True):
        assert row.student == stored.student
        for title, cell in zip(view.titles, row.cells, strict=True):
            exact = stored.items[cell.group]
            assert cell.rate == exact.rate and cell.points == exact.points
            assert parser.cells[(row.student, cell.group)] == (cell.text, exact.rate)
            assert by_model[row.model][title] == cell.text
        assert by_model[row.model]["fails most"] == row.worst


def test_the_ranking_first_on_the_page_shows_the_leaderboards_scores(outputs: Outputs) -> None:
    """Issue 23: the compact ranking at the top of report.html (a phone's first screen) shows
    the first leaderboard's ranks, scores and intervals as the view has them."""
    start = outputs.html.index('<table class="ranking"')
    table = outputs.html[start : outputs.html.index("</table>", start)]
    shown = [
        (html.unescape(rank), html.unescape(student), json.loads(exact), score, ci)
        for rank, student, exact, score, ci in re.findall(
            r'<tr><td class="num">([^<]*)</td><td>([^<]*)</td><td class="num" '
            r'data-score="([^"]*)" data-student="[^"]*" data-grader="[^"]*">'
            r'(?:<a [^>]*>)?([^<]*)(?:</a>)?(?:<span class="ci">([^<]*)</span>)?</td></tr>',
            table,
        )
    ]
    board = outputs.view.boards[0]
    assert len(shown) == len(board.rows) == 4
    assert shown == [
        (r.rank_text, r.student, r.score, r.score_text, r.score_ci_text) for r in board.rows
    ]
