"""``skillmix report`` and ``skillmix compare`` on small real runs (built-in mock backend)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.report.plots import heatmap_size, metric_plot_size
from tests.helpers import reference_dir, run_cli
from tests.report_checks import (
    aggregate_numbers,
    check_images,
    leaderboard_numbers,
    markdown_table_rows_ok,
    parse_page,
)


def experiment(name: str, store: Path, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "seed": 10,
        "ks": [2, 3],
        "combinations": 5,
        "generation_rounds": 2,
        "students": [
            {"name": "strong", "backend": "mock", "model": "mock-strong", "quality": 0.9},
            {"name": "weak", "backend": "mock", "model": "mock-weak", "quality": 0.4},
        ],
        "grader": {"name": "mock-grader", "backend": "mock", "model": "mock-grader", "rounds": 3},
        "metrics": {"bootstrap_samples": 300},
        "store": str(store),
    }
    data.update(overrides)
    return data


def evaluate(tmp: Path, exp: dict[str, Any], *extra: str) -> tuple[Path, Any]:
    path = tmp / f"{exp['name']}.yaml"
    path.write_text(yaml.safe_dump(exp))
    command = extra[0] if extra else "evaluate"
    result = run_cli(command, "-f", str(path), "--no-progress")
    assert result.exit_code == 0, result.stderr
    (run_dir,) = [p for p in Path(exp["store"]).iterdir() if p.name.startswith(exp["name"] + "-")]
    return run_dir, result


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("report-runs")
    store = tmp / "store"
    main, main_result = evaluate(tmp, experiment("main", store))
    single, _ = evaluate(
        tmp,
        experiment(
            "single",
            store,
            ks=[2],
            combinations=4,
            generation_rounds=1,
            students=[{"name": "solo", "backend": "mock", "model": "mock-solo"}],
        ),
    )
    fewer_rounds, _ = evaluate(
        tmp,
        experiment(
            "rounds",
            store,
            grader={"name": "mock-grader", "backend": "mock", "model": "mock-grader", "rounds": 2},
        ),
    )
    return {
        "tmp": tmp,
        "store": store,
        "main": main,
        "main_result": main_result,
        "single": single,
        "rounds": fewer_rounds,
    }


def test_evaluate_ends_by_naming_the_html_report(runs: dict[str, Any]) -> None:
    last = runs["main_result"].stderr.strip().splitlines()[-1]
    assert last.startswith("report: ") and "/report/report.html" in last and "report.md" in last
    for name in ("report.html", "report.md", "summary.json", "metrics.csv"):
        assert (runs["main"] / "report" / name).is_file()


def test_report_html_matches_aggregate(runs: dict[str, Any]) -> None:
    out = runs["tmp"] / "main-report"
    result = run_cli("report", str(runs["main"]), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"report: {out}/report.html (also report.md, summary.json, metrics.csv)"
    )
    page = parse_page((out / "report.html").read_text(encoding="utf-8"))
    sizes = check_images(page)
    assert sizes["metric-full_marks"] == metric_plot_size(2)
    summary = json.loads((out / "summary.json").read_text())
    assert sizes["skills-heatmap"] == heatmap_size(len(summary["skill_rates"]["rows"]), 2)
    # the run's metric options (its bootstrap size is not aggregate's default)
    agg = run_cli("aggregate", str(runs["main"]), "--format", "json", "--bootstrap", "300")
    assert agg.exit_code == 0
    numbers = leaderboard_numbers(page)
    assert numbers == aggregate_numbers(json.loads(agg.stdout))
    assert len(numbers) == 2 * 2 * 3
    markdown_table_rows_ok((out / "report.md").read_text(encoding="utf-8"))
    agreement = summary["agreement"]
    assert agreement["grading_rounds"] == 3
    assert {r["k"] for r in agreement["rows"]} == {2, 3, "all"}
    assert summary["gallery"] and summary["status"] == "complete"


def test_one_model_one_k_still_renders(runs: dict[str, Any]) -> None:
    html = (runs["single"] / "report" / "report.html").read_text(encoding="utf-8")
    page = parse_page(html)
    sizes = check_images(page)
    assert sizes["metric-full_marks"] == metric_plot_size(1)
    assert len(page.metric_cells()) == 3  # one cell per metric
    assert {c["data-student"] for c in page.metric_cells()} == {"solo"}


def test_empty_and_partial_runs_give_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("report", str(empty))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no run.json here" in result.stderr
    store = tmp_path / "store"
    exp = experiment("partial", store, ks=[2], combinations=3, generation_rounds=1)
    exp["students"] = exp["students"][:1]
    run_dir, _ = evaluate(tmp_path, exp, "generate")
    result = run_cli("report", str(run_dir))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no finished grades yet" in result.stderr
    assert not (run_dir / "report" / "report.html").exists()
    compared = run_cli("compare", str(run_dir))
    assert compared.exit_code == 2 and "no finished grades yet" in compared.stderr


def _ranks(doc: dict[str, Any]) -> dict[tuple[int, str], int]:
    board = doc["leaderboards"][0]
    return {(r["run"], r["student"]): r["rank"] for r in board["rows"]}


def test_compare_a_run_with_itself_ranks_it_equally(runs: dict[str, Any]) -> None:
    main = str(runs["main"])
    result = run_cli("compare", main, main, "--format", "json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert not doc["mixed"] and doc["rank_by"] == "full_marks"
    ranks = _ranks(doc)
    for student in ("strong", "weak"):
        assert ranks[(1, student)] == ranks[(2, student)]
    assert sorted(ranks.values()) == [1, 1, 3, 3]
    assert {r["source"] for r in doc["runs"]} == {"report/summary.json"}
    # every row names the student's model id, backend and sampling, and the grader's model
    for board in doc["leaderboards"]:
        for row in board["rows"]:
            assert row["model_id"] == f"mock-{row['student']}" and row["backend"] == "mock"
            assert row["sampling"]["max_tokens"] == 512
            assert row["grader_model_id"] == "mock-grader"


def test_report_pages_name_the_ks_of_every_mean(runs: dict[str, Any]) -> None:
    report = runs["main"] / "report"
    page = (report / "report.html").read_text(encoding="utf-8")
    md = (report / "report.md").read_text(encoding="utf-8")
    for text in (page, md):
        assert "(mean over k)" not in text and "mean over k = 2, 3" in text
    assert "Ratio of Full Marks (mean over k = 2, 3)" in page  # the score-against-cost table


def test_compare_pages_show_models_and_name_their_ks(runs: dict[str, Any]) -> None:
    main = str(runs["main"])
    out = runs["tmp"] / "self-compare"
    result = run_cli("compare", main, main, "--out", str(out))
    assert result.exit_code == 0, result.stderr
    # the terminal table's other metrics name the ks they average
    assert "(mean)" not in result.stdout and result.stdout.count("k = 2, 3") >= 3
    md = (out / "compare.md").read_text(encoding="utf-8")
    assert "| mock: mock-strong (max_tokens 512) |" in md
    assert "| mean over k |" not in md and "| mean over k = 2, 3 |" in md
    # the plots of compare.html are in compare.md too, as files next to it
    for metric in ("full_marks", "all_skills", "skill_fraction"):
        png = out / "plots" / f"compare-{metric}.png"
        assert png.read_bytes().startswith(b"\x89PNG") and f"](plots/{png.name})" in md
        assert stat.S_IMODE(png.stat().st_mode) == 0o644
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert '<td class="model">—</td>' not in page and "mock: mock-weak" in page
    for table in page.split("<table")[1:]:
        assert table.count("<caption") <= 1
    assert ">mean over k<" not in page
    # the tie mark and 'vs next' are explained on both pages
    for text in (md, html.unescape(page)):
        assert "statistically tied with a neighbour" in text and "'vs next'" in text


def test_compare_run_without_report_computes_the_same(runs: dict[str, Any]) -> None:
    bare = runs["tmp"] / "bare-copy"
    if not bare.exists():
        shutil.copytree(runs["main"], bare, ignore=shutil.ignore_patterns("report"))
    result = run_cli("compare", str(runs["main"]), str(bare), "--format", "json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["runs"][1]["source"].startswith("computed")
    for board in doc["leaderboards"]:
        by_run: dict[int, dict[str, Any]] = {}
        for row in board["rows"]:
            by_run.setdefault(row["run"], {})[row["student"]] = (row["rank"], row["cells"])
        assert by_run[1] == by_run[2]


def test_compare_refuses_mixed_settings_and_names_them(runs: dict[str, Any]) -> None:
    out = runs["tmp"] / "refused"
    result = run_cli("compare", str(runs["main"]), str(runs["rounds"]), "--out", str(out))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "grading rounds (R): 3 (run 1), 2 (run 2)" in result.stderr
    assert "--allow-mixed" in result.stderr
    assert "catalog" not in result.stderr  # only what differs
    assert not out.exists()
    other = run_cli("compare", str(runs["main"]), str(runs["single"]))
    assert other.exit_code == 2
    for label in ("k values", "M (combinations per k)", "generation rounds (G)"):
        assert label in other.stderr


def test_compare_allow_mixed_writes_reports(runs: dict[str, Any]) -> None:
    out = runs["tmp"] / "mixed"
    result = run_cli(
        "compare", str(runs["main"]), str(runs["rounds"]), "--allow-mixed", "--out", str(out)
    )
    assert result.exit_code == 0, result.stderr
    assert "mixed settings ranked anyway: grading rounds (R)" in result.stderr
    doc = json.loads((out / "compare.json").read_text())
    assert doc["mixed"] and list(doc["settings_differ"]) == ["grading_rounds"]
    page = parse_page((out / "compare.html").read_text(encoding="utf-8"), links=True)
    sizes = check_images(page, decode=False)
    assert sizes["compare-full_marks"] == metric_plot_size(4)
    main = json.loads(
        run_cli("aggregate", str(runs["main"]), "--format", "json", "--bootstrap", "300").stdout
    )
    assert leaderboard_numbers(page, run=1) == aggregate_numbers(main)
    md = (out / "compare.md").read_text(encoding="utf-8")
    markdown_table_rows_ok(md)
    assert "Mixed settings" in md and "| grading rounds (R) | 3 | 2 | no |" in md
    printed = run_cli(
        "compare", str(runs["main"]), str(runs["rounds"]), "--allow-mixed", "--format", "md"
    )
    assert printed.exit_code == 0 and printed.stdout.startswith("# SKILL-MIX comparison")


def test_compare_reference_imports(runs: dict[str, Any], tmp_path: Path) -> None:
    ref = reference_dir()
    imported = tmp_path / "ref-s10"
    result = run_cli("import-reference", str(ref / "runs"), "--seed", "10", "--out", str(imported))
    assert result.exit_code == 0, result.stderr
    result = run_cli("compare", str(imported), str(imported), "--format", "json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    ranks = _ranks(doc)
    assert ranks[(1, "gpt-4")] == ranks[(2, "gpt-4")] == 1
    assert ranks[(1, "gpt-3.5-turbo")] == ranks[(2, "gpt-3.5-turbo")] == 3
    gpt4 = next(r for r in doc["leaderboards"][0]["rows"] if r["student"] == "gpt-4")
    means = [round(gpt4["cells"][str(k)]["mean"], 2) for k in (2, 3, 4, 5, 6)]
    assert means == [0.8, 1.0, 0.6, 0.4, 0.0]  # the reference aggregator's numbers (SPEC 7)
    assert doc["runs"][0]["kind"] == "reference-import"
    mixed = run_cli("compare", str(imported), str(runs["main"]))
    assert mixed.exit_code == 2
    for label in ("catalog hash", "grader model", "metric options", "grading prompt"):
        assert label in mixed.stderr


def test_report_out_reads_the_run_only(runs: dict[str, Any], tmp_path: Path) -> None:
    """Defect fixed: `report RUN --out DIR` also rewrote RUN/report/, so it failed on a
    read-only run folder (an archive, someone else's run)."""
    run_dir = tmp_path / runs["single"].name
    shutil.copytree(runs["single"], run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    folders = [run_dir, *(p for p in run_dir.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)
    try:
        out = tmp_path / "out"
        result = run_cli("report", str(run_dir), "--out", str(out))
        assert result.exit_code == 0, result.stderr
        assert (out / "report.html").is_file() and (out / "summary.json").is_file()
        # where chmod binds (not root) a write would have failed the command; where it does not,
        # the unchanged folder shows that nothing was written
        assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
        assert os.access(out / "report.html", os.R_OK)
    finally:
        for folder in folders:
            folder.chmod(0o755)


def test_compare_marks_the_same_model_by_its_id(runs: dict[str, Any]) -> None:
    """Rows are "the same model" when backend and model id match, whatever the students are
    called: a renamed student is marked, a name reused for another model is not."""
    tmp = runs["tmp"]
    students = [
        {"name": "strong", "backend": "mock", "model": "mock-other", "quality": 0.9},
        {"name": "renamed", "backend": "mock", "model": "mock-weak", "quality": 0.4},
    ]
    other, _ = evaluate(tmp, experiment("twins", tmp / "twins-store", students=students))
    out = tmp / "twins-compare"
    result = run_cli("compare", str(runs["main"]), str(other), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    page = (out / "compare.html").read_text(encoding="utf-8")
    board = page[page.index('<table class="leaderboard"') :]
    board = board[: board.index("</table>")]
    rows = {  # the first label cell, after rank and groups
        re.sub(r"<[^>]+>", "", re.findall(r"<td[^>]*>(.*?)</td>", r)[2]): r
        for r in re.findall(r"<tr[^>]*>(.*?)</tr>", board)[1:]
    }
    marked = {name.split(" (")[0] for name, r in rows.items() if "same model in run" in r}
    assert marked == {"weak", "renamed"}, sorted(rows)
    md = (out / "compare.md").read_text(encoding="utf-8")
    assert "| renamed | #2 twins-" in md and md.count("(same model in run #1) |") == 3
