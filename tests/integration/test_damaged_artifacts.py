"""Damaged or partial run artifacts through the CLI: `report`, `aggregate` and
`evaluate --resume` exit 2 with one ``error:`` line naming run.json and what is wrong, never a
traceback; the damaged file is left as it was. Old run.json files without ``kind`` still work.

Defect fixed: a partial run.json (``{"run_id": "x"}``) made `skillmix report RUN` print a
KeyError traceback, and invalid UTF-8 bytes a UnicodeDecodeError one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import CliResult, run_cli
from tests.integration.test_bad_input import tiny

pytestmark = pytest.mark.timeout(120)

DAMAGE = {
    "partial": (b'{"run_id": "x"}', "missing field"),
    "invalid-utf8": (b'{"run_id": "\xff\xfe"}', "not UTF-8"),
    "nul-byte": (b'{"run_id": "x"}\x00', "NUL byte"),
    "invalid-json": (b'{"run_id": ', "invalid JSON"),
    "wrong-type": (b'{"run_id": "x", "sharded": "maybe", "experiment": 1}', "damaged or partial"),
    "unknown-version": (b'{"schema_version": 99, "run_id": "x"}', "schema_version 99"),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished local run (built once; each test works on a copy)."""
    root = tmp_path_factory.mktemp("finished")
    (root / "exp.yaml").write_text(yaml.safe_dump(tiny(), sort_keys=False))
    result = run_cli(
        "evaluate", "-f", str(root / "exp.yaml"), "--store", str(root / "store"), "--no-progress"
    )
    assert result.exit_code == 0, result.stderr
    return root


@pytest.fixture
def work(finished: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(experiment file, run folder) of a fresh copy of the finished run."""
    shutil.copytree(finished, tmp_path / "w")
    (run_dir,) = [p for p in (tmp_path / "w" / "store").iterdir() if p.name != "_cache"]
    return tmp_path / "w" / "exp.yaml", run_dir


def command(name: str, exp: Path, run_dir: Path) -> list[str]:
    if name == "evaluate --resume":
        store = str(run_dir.parent)
        return ["evaluate", "-f", str(exp), "--store", store, "--no-progress", "--resume"]
    return [name, str(run_dir)]


def assert_one_error_line(result: CliResult, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.rstrip("\n").splitlines()
    assert len(lines) == 1, f"not one line: {result.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


@pytest.mark.parametrize("cmd", ["report", "aggregate", "evaluate --resume"])
@pytest.mark.parametrize("damage", ["partial", "invalid-utf8"])
def test_damaged_run_json_is_one_error_line(work: tuple[Path, Path], cmd: str, damage: str) -> None:
    exp, run_dir = work
    blob, problem = DAMAGE[damage]
    (run_dir / "run.json").write_bytes(blob)
    result = run_cli(*command(cmd, exp, run_dir))
    assert_one_error_line(result, "run.json", problem)
    assert (run_dir / "run.json").read_bytes() == blob  # nothing rewritten


@pytest.mark.parametrize("damage", ["nul-byte", "invalid-json", "wrong-type", "unknown-version"])
def test_other_damage_on_report(work: tuple[Path, Path], damage: str) -> None:
    _exp, run_dir = work
    blob, problem = DAMAGE[damage]
    (run_dir / "run.json").write_bytes(blob)
    assert_one_error_line(run_cli("report", str(run_dir)), "run.json", problem)


def test_damaged_summary_json_in_compare(work: tuple[Path, Path]) -> None:
    _exp, run_dir = work
    summary = run_dir / "report" / "summary.json"
    data = json.loads(summary.read_text())
    del data["metrics"]
    summary.write_text(json.dumps(data))
    result = run_cli("compare", str(run_dir), str(run_dir))
    assert_one_error_line(result, "summary.json", "missing field 'metrics'")


def test_old_run_json_without_kind_still_reports(work: tuple[Path, Path]) -> None:
    exp, run_dir = work
    data = json.loads((run_dir / "run.json").read_text())
    del data["kind"]
    (run_dir / "run.json").write_text(json.dumps(data))
    before = (run_dir / "report" / "metrics.csv").read_bytes()
    result = run_cli("report", str(run_dir), "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["run_id"] == data["run_id"]
    assert (run_dir / "report" / "metrics.csv").read_bytes() == before
    resumed = run_cli(*command("evaluate --resume", exp, run_dir))
    assert resumed.exit_code == 0, resumed.stderr


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_overwrite_starts_over_from_a_damaged_run_json(
    work: tuple[Path, Path], damage: str
) -> None:
    exp, run_dir = work
    (run_dir / "run.json").write_bytes(DAMAGE[damage][0])
    (run_dir / "stray.txt").write_text("left from the damaged run")
    store = str(run_dir.parent)
    result = run_cli("evaluate", "-f", str(exp), "--store", store, "--no-progress", "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert json.loads((run_dir / "run.json").read_text())["run_id"] == run_dir.name
    assert not (run_dir / "stray.txt").exists()
    assert (run_dir / "report" / "summary.json").exists()


@pytest.mark.parametrize("damage", ["partial", "invalid-json"])
def test_resume_of_a_damaged_run_json_names_overwrite(work: tuple[Path, Path], damage: str) -> None:
    exp, run_dir = work
    blob, problem = DAMAGE[damage]
    (run_dir / "run.json").write_bytes(blob)
    result = run_cli(*command("evaluate --resume", exp, run_dir))
    assert_one_error_line(result, "run.json", problem, "--overwrite")
    assert (run_dir / "run.json").read_bytes() == blob
