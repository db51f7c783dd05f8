"""`import-reference` and legacy.py on a synthetic reference-format tree (no external data)."""

from __future__ import annotations

import csv
import itertools
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skillmix.method.reference_numbers import reference_print, summary_dtype
from tests.helpers import run_cli
from tests.reference_tree import SKILLS, TOPICS, Tree, reference_prints, write_tree


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


# ---- reference mode prints what the reference prints ----------------------------------------

METRICS = ("full_marks", "all_skills", "skill_fraction")


def aggregate_rows(run: Path, *args: str) -> dict[tuple[str, int], dict[str, Any]]:
    result = run_cli("aggregate", str(run), "--format", "json", "--bootstrap", "0", *args)
    assert result.exit_code == 0, result.stderr
    return {(r["student"], r["k"]): r for r in json.loads(result.stdout)["rows"]}


def printed(row: dict[str, Any]) -> str:
    return " ".join(reference_print(row[m]["mean"], row[m]["stderr"]) for m in METRICS)


def quarter_skills(k: int, student: str, index: int, g: int, r: int) -> str:
    """One of four skills shown (Skill Fraction 0.25) in rows 0-8, none in row 9: the mean is
    0.225, which float32 holds as 0.22499999 (prints 0.22) and float64 as 0.2250000001 (0.23)."""
    skills = [1.0, 0.0, 0.0, 0.0] if index < 9 else [0.0] * 4
    return ",".join(f"{p:.1f}" for p in [*skills, 1.0, 1.0, 1.0])


def test_reference_mode_prints_the_float32_skill_fraction(tmp_path: Path) -> None:
    tree = write_tree(
        tmp_path / "tree", ks=(4,), students=("gpt-4",), rows=10, points_cell=quarter_skills
    )
    out = tmp_path / "imported"
    assert run_cli("import-reference", str(tree.root), "--out", str(out)).exit_code == 0
    expected = reference_prints(
        tree.root, "gpt-4", k=4, seed=10, generation_rounds=1, grading_rounds=2
    )
    assert expected.split(" ")[-3:] == ["0.22", "±", "0.025"]  # the reference's own arithmetic
    reference = aggregate_rows(out, "--mode", "reference")[("gpt-4", 4)]
    assert printed(reference) == expected
    assert reference["skill_fraction"]["mean"] == float(np.float32(0.225))
    strict = aggregate_rows(out, "--mode", "strict")[("gpt-4", 4)]
    assert strict["skill_fraction"]["mean"] == pytest.approx(0.225, abs=1e-15)
    assert f"{strict['skill_fraction']['mean']:.2f}" == "0.23"  # strict keeps float64
    table = run_cli("aggregate", str(out), "--mode", "reference", "--bootstrap", "0")
    assert table.exit_code == 0 and "0.22 ± 0.025" in table.stdout, table.stdout
    assert summary_dtype("reference", "skill_fraction") == "float32"
    assert {summary_dtype("reference", m) for m in METRICS[:2]} == {"float64"}
    assert {summary_dtype("strict", m) for m in METRICS} == {"float64"}


def malformed_points(seed: int):
    """Random points cells: well-formed 0/1 lists, halves, short, long and empty lists."""
    rng = random.Random(seed)

    def cell(k: int, student: str, index: int, g: int, r: int) -> str:
        size = k + 3
        kind = rng.random()
        if kind < 0.08:
            return ""
        values = [rng.choice(["1.0", "1.0", "0.0", "0.5", "1"]) for _ in range(size)]
        if kind < 0.16:
            values = values[: rng.randrange(1, size)]
        elif kind < 0.22:
            values += ["1.0"] * rng.randrange(1, 3)
        return ",".join(values)

    return cell


def test_malformed_trees_print_what_the_reference_prints(tmp_path: Path) -> None:
    compared = differs = 0
    for seed in (1, 5):  # 10 rows: means on half-cent ties, where float32 and float64 differ
        tree = write_tree(
            tmp_path / f"tree{seed}",
            ks=(2, 3, 4, 5),
            rows=10,
            grading_rounds=3,
            generation_rounds=2,
            points_cell=malformed_points(seed),
        )
        out = tmp_path / f"imported{seed}"
        assert run_cli("import-reference", str(tree.root), "--out", str(out)).exit_code == 0
        for vote, gen in itertools.product(("majority", "mean"), ("max", "mean")):
            rows = aggregate_rows(
                out, "--mode", "reference", "--vote", vote, "--generation-agg", gen
            )
            for (student, k), row in rows.items():
                settings: dict[str, Any] = {
                    "k": k, "seed": 10, "generation_rounds": 2, "grading_rounds": 3,
                    "vote": vote, "gen": gen,
                }  # fmt: skip
                expected = reference_prints(tree.root, student, **settings)
                assert printed(row) == expected, (seed, vote, gen, student, k)
                double = reference_prints(tree.root, student, **settings, dtype=np.float64)
                differs += sum(
                    a != b for a, b in zip(expected.split(), double.split(), strict=True)
                )
                compared += 3
    assert compared == 2 * 4 * 4 * 2 * 3
    assert differs > 0  # the trees reach the float32 cases, not only the easy ones


# ---- a subset of rounds ------------------------------------------------------------------------


@pytest.fixture
def three_by_three(tmp_path: Path) -> Tree:
    """Three generation and three grading rounds with malformed points."""
    return write_tree(
        tmp_path / "tree",
        ks=(3, 4),
        rows=10,
        grading_rounds=3,
        generation_rounds=3,
        points_cell=malformed_points(7),
    )


@pytest.mark.parametrize(("g", "r"), [(1, 1), (2, 3), (3, 2)])
def test_aggregate_uses_the_first_rounds_as_the_reference(
    three_by_three: Tree, tmp_path: Path, g: int, r: int
) -> None:
    out = tmp_path / "imported"
    assert run_cli("import-reference", str(three_by_three.root), "--out", str(out)).exit_code == 0
    rounds = ("--generation-rounds", str(g), "--grading-rounds", str(r))
    result = run_cli("aggregate", str(out), "--format", "json", "--mode", "reference", *rounds)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["settings"]["generation_rounds"] == g and data["settings"]["grading_rounds"] == r
    rows = {(row["student"], row["k"]): row for row in data["rows"]}
    full = aggregate_rows(out, "--mode", "reference")
    for (student, k), row in rows.items():
        expected = reference_prints(
            three_by_three.root, student, k=k, seed=10, generation_rounds=g, grading_rounds=r
        )
        assert printed(row) == expected, (student, k)
    # the full grid differs from at least one subset: the flags are not ignored
    assert any(printed(rows[key]) != printed(full[key]) for key in rows) or (g, r) == (3, 3)
    # importing only those rounds gives the same numbers
    sub = tmp_path / "subset"
    imported = run_cli(
        "import-reference", str(three_by_three.root), "--out", str(sub), "--format", "json", *rounds
    )
    assert imported.exit_code == 0, imported.stderr
    summary = json.loads(imported.stdout)
    assert summary["generation_rounds"] == list(range(1, g + 1))
    assert summary["grading_rounds"] == list(range(1, r + 1))
    assert summary["grades"] == g * r * len(three_by_three.ks) * 2 * three_by_three.rows
    assert {key: printed(v) for key, v in aggregate_rows(sub, "--mode", "reference").items()} == {
        key: printed(v) for key, v in rows.items()
    }


@pytest.mark.parametrize("command", ["aggregate", "import-reference"])
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--generation-rounds", "4", "--generation-rounds: 4 generation rounds asked"),
        ("--grading-rounds", "5", "--grading-rounds: 5 grading rounds asked"),
        ("--generation-rounds", "0", "Invalid value for '--generation-rounds'"),
        ("--grading-rounds", "-1", "Invalid value for '--grading-rounds'"),
        ("--grading-rounds", "two", "Invalid value for '--grading-rounds'"),
    ],
)
def test_a_bad_round_count_is_one_line_and_writes_nothing(
    three_by_three: Tree, tmp_path: Path, command: str, flag: str, value: str, message: str
) -> None:
    run = tmp_path / "imported"
    assert run_cli("import-reference", str(three_by_three.root), "--out", str(run)).exit_code == 0
    out = tmp_path / "new"
    args = (
        ["aggregate", str(run)]
        if command == "aggregate"
        else ["import-reference", str(three_by_three.root), "--out", str(out)]
    )
    result = run_cli(*args, flag, value)
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not out.exists()


# ---- byte-identical grading rounds -------------------------------------------------------------


def test_identical_grading_rounds_are_named_once(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", grading_rounds=3, identical_rounds=True)
    out = tmp_path / "imported"
    result = run_cli("import-reference", str(tree.root), "--out", str(out), "--format", "json")
    assert result.exit_code == 0, result.stderr
    issues = json.loads(result.stdout)["issues"]
    units = len(tree.ks) * len(tree.students)
    assert len(issues) == 1 and f"{units} of {units} grading units" in issues[0]
    assert "byte-identical" in issues[0] and "rounds 1, 2, 3 are the same file" in issues[0]
    assert "grade.py --nruns" in issues[0]
    assert result.stderr.count("warning:") == 1
    # the numbers are the reference's all the same
    rows = aggregate_rows(out, "--mode", "reference")
    for (student, k), row in rows.items():
        expected = reference_prints(
            tree.root, student, k=k, seed=10, generation_rounds=1, grading_rounds=3
        )
        assert printed(row) == expected
    # one unit whose rounds differ is not named
    graded = next(tree.root.glob(f"k2_*/{tree.students[0]}/graded/*_2_gpt/records.csv"))
    graded.write_text(
        graded.read_text(encoding="utf-8").replace("grading table", "table"), encoding="utf-8"
    )
    again = run_cli(
        "import-reference", str(tree.root), "--out", str(out), "--overwrite", "--format", "json"
    )
    assert f"{units - 1} of {units} grading units" in json.loads(again.stdout)["issues"][0]


def test_distinct_grading_rounds_raise_no_warning(tree: Tree, tmp_path: Path) -> None:
    result = run_cli("import-reference", str(tree.root), "--out", str(tmp_path / "imported"))
    assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr


# ---- reports of an imported tree -------------------------------------------------------------


def test_report_of_an_import_has_every_view(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", grading_rounds=3, generation_rounds=2, rows=6)
    run = tmp_path / "imported"
    assert run_cli("import-reference", str(tree.root), "--out", str(run)).exit_code == 0
    result = run_cli("report", str(run), "--format", "json")
    assert result.exit_code == 0, result.stderr
    # rounds differ: nothing to say about them; gpt-4 graded by gpt-4 is self-grading
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "self-grading: student 'gpt-4'" in warnings[0], warnings
    summary = json.loads((run / "report" / "summary.json").read_text(encoding="utf-8"))
    assert json.loads(result.stdout)["run_id"] == summary["run_id"] == "imported"
    assert summary["status"] == "complete"
    counts = summary["counts"]
    planned = len(tree.ks) * len(tree.students) * 2 * tree.rows
    assert counts["generations"] == counts["planned_generations"] == planned
    assert counts["grades"] == counts["planned_grades"] == planned * 3
    assert summary["metrics"]["settings"]["mode"] == "reference"
    # the headline numbers are aggregate --mode reference's
    rows = aggregate_rows(run, "--mode", "reference")
    for row in summary["metrics"]["rows"]:
        assert printed(row) == printed(rows[(row["student"], row["k"])])
    # per-skill, per-topic, examples and agreement views, from the imported data
    assert {r["skill"] for r in summary["skill_rates"]["rows"]} == set(SKILLS)
    assert {r["topic"] for r in summary["topic_rates"]["rows"]} == set(TOPICS)
    assert summary["gallery"] and all(
        "answer" in e and e["student"] in tree.students for e in summary["gallery"]
    )
    assert summary["agreement"]["grading_rounds"] == 3 and summary["agreement"]["rows"]
    # the tree names its models, not how they were served or sampled: the rows say so
    for board in summary["leaderboards"]:
        for row in board["rows"]:
            assert (row["model_id"], row["backend"], row["sampling"]) == (
                row["student"],
                "unknown (reference import)",
                None,
            )
    page = (run / "report" / "report.html").read_text(encoding="utf-8")
    assert "unknown (reference import): gpt-4 (sampling unknown)" in page
    assert "Sewing answer 0 of gpt-4." in page and "red herring" in page
    assert (run / "report" / "report.md").is_file() and (run / "report" / "metrics.csv").is_file()


def test_report_of_an_import_names_identical_rounds(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", grading_rounds=2, identical_rounds=True)
    run = tmp_path / "imported"
    assert run_cli("import-reference", str(tree.root), "--out", str(run)).exit_code == 0
    out = tmp_path / "report-elsewhere"
    result = run_cli("report", str(run), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    warnings = [line for line in warnings if "self-grading" not in line]  # gpt-4 grades gpt-4
    assert len(warnings) == 1 and "byte-identical grading rounds" in warnings[0]
    assert (out / "report.html").is_file() and not (run / "report").exists()
    # the table prints the reference's cells
    assert "1.00 ± 0.000" in result.stdout
    # the pages say it too, next to the agreement view (whose kappa compares copies)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert any("byte-identical grading rounds" in w for w in summary["warnings"])
    assert "byte-identical grading rounds" in " ".join(summary["agreement"]["warnings"])
    page = (out / "report.html").read_text(encoding="utf-8")
    agreement = page[page.index('id="agreement"') :]
    assert "byte-identical grading rounds" in agreement[: agreement.index("</section>")]
    md = (out / "report.md").read_text(encoding="utf-8")
    section = md[md.index("## Grader agreement") :]
    assert "byte-identical grading rounds" in section[: section.index("\n## ", 3)]


def test_report_of_an_import_with_two_graders_is_one_line(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", grader="gpt-4")
    tree = write_tree(tmp_path / "tree", grader="claude")
    run = tmp_path / "imported"
    assert run_cli("import-reference", str(tree.root), "--out", str(run)).exit_code == 0
    result = run_cli("report", str(run))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "a report needs one grader" in lines[0] and "--grader" in lines[0]
    assert not (run / "report").exists()
    one = tmp_path / "one"
    assert (
        run_cli("import-reference", str(tree.root), "--out", str(one), "--grader", "claude")
    ).exit_code == 0
    assert run_cli("report", str(one)).exit_code == 0


def test_compare_rows_of_an_import_name_the_model(tmp_path: Path) -> None:
    """A reference tree names its models but not how they were served: the compare rows say
    so instead of a blank model column."""
    tree = write_tree(tmp_path / "tree")
    run = tmp_path / "imported"
    assert run_cli("import-reference", str(tree.root), "--out", str(run)).exit_code == 0
    result = run_cli("compare", str(run), "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["leaderboards"][0]["rows"]
    assert {r["model_id"] for r in rows} == set(tree.students)
    assert {r["grader_model_id"] for r in rows} == {tree.grader}
    md = run_cli("compare", str(run), "--format", "md").stdout
    # gpt-4 grades gpt-4 here: the row is marked self-graded
    assert "| unknown (reference import): gpt-4 (sampling unknown) · self-graded |" in md
