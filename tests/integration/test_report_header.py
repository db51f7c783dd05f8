"""Issue 23: the report header marks what a reader must know before the numbers: a row whose
student is graded by its own model, an imported run whose grading rounds are copies of one
grading (instead of "R = 2"), and an explicit-name filter other than the reference's."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.helpers import run_cli
from tests.reference_tree import write_tree


def test_an_import_with_copied_rounds_and_a_self_graded_row_says_so(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", grading_rounds=2, identical_rounds=True)
    run = tmp_path / "imported"
    assert run_cli("import-reference", str(tree.root), "--out", str(run)).exit_code == 0
    out = tmp_path / "report"
    result = run_cli("report", str(run), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    md = (out / "report.md").read_text(encoding="utf-8")
    page = (out / "report.html").read_text(encoding="utf-8")
    header = md[: md.index("## Leaderboards")]
    assert "R = 2 grading rounds, identical copies of one grading (in effect R = 1)" in header
    assert "R = 2 grading rounds, prompt" not in header  # no plain "R = 2"
    assert "> **Note**: the 2 grading rounds are byte-identical copies" in header
    subtitle = page[page.index("<header") : page.index("</header>")]
    assert "in effect R = 1" in subtitle and "· R = 2 ·" not in subtitle
    # gpt-4 grades gpt-4 in the synthetic tree: the note names it and its rows are marked
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    grader = summary["experiment"]["grader"]["model"]
    selfish = [s["name"] for s in summary["experiment"]["students"] if s["model"] == grader]
    assert selfish
    for name in selfish:
        assert f"self-graded: {name} is graded by its own model" in header
        assert f"self-graded: {name} is graded by its own model" in subtitle
    board = md[md.index("### ") :]
    marked = [line for line in board.splitlines() if "· self-graded" in line]
    assert marked and all(re.search(rf"\| {re.escape(selfish[0])} \|", line) for line in marked)
