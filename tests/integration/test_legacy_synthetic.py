"""`import-reference` and legacy.py on a synthetic reference-format tree (no external data)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.reference_tree import Tree, write_tree


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return write_tree(tmp_path / "reference-runs")


def test_import_reads_every_row_and_aggregates(tree: Tree, tmp_path: Path) -> None:
    out = tmp_path / "imported"
    result = run_cli("import-reference", str(tree.root), "--out", str(out), "--format", "json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    n = len(tree.ks) * len(tree.students) * tree.rows
    assert summary["generations"] == n
    assert summary["grades"] == n * tree.grading_rounds
    assert summary["issues"] == []
    assert sorted(summary["students"]) == sorted(tree.students)
    assert summary["ks"] == list(tree.ks)

    metrics = run_cli("aggregate", str(out), "--mode", "reference", "--format", "json")
    assert metrics.exit_code == 0, metrics.stderr
    rows = {(r["student"], r["k"]): r for r in json.loads(metrics.stdout)["rows"]}
    assert set(rows) == {(s, k) for s in tree.students for k in tree.ks}
    for k in tree.ks:
        # every criterion met by the first student; half the second's answers miss a skill
        assert rows[(tree.students[0], k)]["full_marks"]["mean"] == pytest.approx(1.0)
        assert rows[(tree.students[1], k)]["full_marks"]["mean"] == pytest.approx(0.5)
        assert rows[(tree.students[1], k)]["n"] == tree.rows


def test_a_short_graded_file_is_an_issue_not_an_abort(tree: Tree, tmp_path: Path) -> None:
    graded = next(tree.root.glob(f"k2_*/{tree.students[0]}/graded/*_1_gpt/records.csv"))
    with graded.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = list(reader.fieldnames or []), list(reader)
    assert len(rows) == tree.rows
    with graded.open("w", encoding="utf-8", newline="") as f:  # the last row is missing
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows[:-1])
    out = tmp_path / "imported"
    result = run_cli("import-reference", str(tree.root), "--out", str(out), "--format", "json")
    assert result.exit_code == 0, result.stderr
    issues = json.loads(result.stdout)["issues"]
    assert any(f"short file: {tree.rows - 1} graded rows for {tree.rows}" in str(i) for i in issues)


def test_an_empty_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_cli("import-reference", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def _no_generation_records(tree: Tree) -> None:
    for records in tree.root.glob("k*/*/records.csv"):
        records.unlink()


def _empty_generation_records(tree: Tree) -> None:
    for records in tree.root.glob("k*/*/records.csv"):
        records.write_text(records.read_text(encoding="utf-8").splitlines()[0] + "\n")


@pytest.mark.parametrize(
    "damage, extra",
    [
        ("no records.csv", ()),
        ("header only", ()),
        ("students filtered out", ("--student", "nobody")),
    ],
)
def test_nothing_importable_is_an_error_and_writes_nothing(
    tree: Tree, tmp_path: Path, damage: str, extra: tuple[str, ...]
) -> None:
    if damage == "no records.csv":
        _no_generation_records(tree)
    elif damage == "header only":
        _empty_generation_records(tree)
    out = tmp_path / "imported"
    result = run_cli("import-reference", str(tree.root), "--out", str(out), *extra)
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "nothing to import" in lines[0]
    assert not out.exists()
    # an existing --out is left as it was, even with --overwrite
    out.mkdir()
    (out / "keep.txt").write_text("an earlier import")
    again = run_cli("import-reference", str(tree.root), "--out", str(out), "--overwrite", *extra)
    assert again.exit_code == 2, again.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
