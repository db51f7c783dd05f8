"""Damaged units of a run folder: readers check every part against its manifest, and
`evaluate --resume` repairs what it finds from the response cache (no model request).

Defects fixed: a byte changed inside a part left its manifest's sha256 stale and `aggregate`,
`report` and `--resume` used the altered data and exited 0; an empty or garbage ``_SUCCESS``, a
part its manifest lists gone missing, a truncated part or a part of another record schema made
`--resume` fail for good (or read the damage)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from skillmix.backends.mock_server import MockServer
from tests.helpers import CliResult, run_cli
from tests.integration.test_pipeline_local import (
    completions,
    experiment_data,
    mock_server,
    write_experiment,
)

pytestmark = pytest.mark.timeout(180)


@dataclass
class Work:
    srv: MockServer
    exp: Path
    run_dir: Path

    def resume(self) -> CliResult:
        return run_cli("evaluate", "-f", str(self.exp), "--no-progress", "--resume")

    def metrics(self) -> Any:
        result = run_cli("aggregate", str(self.run_dir), "--format", "json", "--bootstrap", "0")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)["rows"]


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with mock_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, server: MockServer) -> Path:
    """A small finished run against the external mock server (each test works on a copy)."""
    root = tmp_path_factory.mktemp("finished")
    data = experiment_data("STORE", base_url=server.base_url)
    student = {k: v for k, v in data["students"][0].items() if k != "api_key_env"}
    data.update(ks=[2], combinations=4, generation_rounds=1, students=[student])
    data["grader"]["rounds"] = 2
    data["metrics"] = {"bootstrap_samples": 0}
    (root / "exp.json").write_text(json.dumps(data))
    write_experiment(root / "exp.yaml", {**data, "store": str(root / "store")})
    result = run_cli("evaluate", "-f", str(root / "exp.yaml"), "--no-progress")
    assert result.exit_code == 0, result.stderr
    return root


@pytest.fixture
def work(finished: Path, server: MockServer, tmp_path: Path) -> Work:
    shutil.copytree(finished / "store", tmp_path / "store")
    data = json.loads((finished / "exp.json").read_text())
    exp = write_experiment(tmp_path / "exp.yaml", {**data, "store": str(tmp_path / "store")})
    (run_dir,) = [p for p in (tmp_path / "store").iterdir() if p.name != "_cache"]
    return Work(server, exp, run_dir)


def unit(run_dir: Path, phase: str) -> Path:
    """The first finished unit of a phase (generations, grades)."""
    return sorted((run_dir / phase).rglob("_SUCCESS"))[0].parent


def parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.jsonl"))


def flip_a_letter(part: Path) -> None:
    """Change one byte of the first answer, keeping the JSON valid (case of a letter)."""
    data = bytearray(part.read_bytes())
    start = data.index(b'"answer":"') + len(b'"answer":"')
    at = next(i for i in range(start, len(data)) if chr(data[i]).isalpha())
    data[at] = ord(chr(data[at]).swapcase())
    part.write_bytes(bytes(data))


@pytest.mark.parametrize("phase", ["generations", "grades"])
def test_changed_byte_is_named_by_report_and_aggregate(work: Work, phase: str) -> None:
    folder = unit(work.run_dir, phase)
    part = parts(folder)[0]
    flip_a_letter(part)
    commands = [["report", str(work.run_dir)]]
    if phase == "grades":
        commands.append(["aggregate", str(work.run_dir)])
    for args in commands:
        result = run_cli(*args)
        assert result.exit_code == 1, (args, result.stderr)
        line = result.stderr.strip()
        assert "\n" not in line and "Traceback" not in line, line
        unit_key = str(folder.relative_to(work.run_dir))
        assert unit_key in line and part.name in line and "sha256" in line, line
        assert "evaluate --resume" in line, line


@pytest.mark.parametrize("phase", ["generations", "grades"])
def test_resume_redoes_a_changed_unit_from_the_cache(work: Work, phase: str) -> None:
    before = work.metrics()
    folder = unit(work.run_dir, phase)
    part = parts(folder)[0]
    original = part.read_bytes()
    flip_a_letter(part)
    asked = completions(work.srv)
    result = work.resume()
    assert result.exit_code == 0, result.stderr
    assert completions(work.srv) == asked  # redone from the response cache
    assert "repaired" in result.stderr and part.name in result.stderr
    assert not part.exists()  # set aside, not read
    aside = list((folder / "_damaged").iterdir())
    assert {p.name.split(".jsonl")[0] for p in aside} >= {part.name.split(".jsonl")[0]}
    assert work.metrics() == before
    restored = [json.loads(r) for p in parts(folder) for r in p.read_bytes().splitlines()]
    for record in restored:
        assert record["usage"].pop("cached") is True  # answered by the cache
    for line in original.splitlines():  # the same records again
        record = json.loads(line)
        record["usage"].pop("cached")
        assert record in restored


def _missing_part(folder: Path) -> None:
    parts(folder)[0].unlink()


def _truncated_finished_part(folder: Path) -> None:
    part = parts(folder)[0]
    part.write_bytes(part.read_bytes()[:-40])


def _empty_manifest(folder: Path) -> None:
    (folder / "_SUCCESS").write_bytes(b"")


def _garbage_manifest(folder: Path) -> None:
    (folder / "_SUCCESS").write_bytes(b"\x00\xffnot a manifest")


def _truncated_unfinished_part(folder: Path) -> None:
    (folder / "_SUCCESS").unlink()
    part = parts(folder)[0]
    part.write_bytes(part.read_bytes()[:-40])


def _wrong_schema_unfinished_part(folder: Path) -> None:
    (folder / "_SUCCESS").unlink()
    other = "grades" if "generations" in folder.parts else "generations"
    run_dir = next(p for p in folder.parents if (p / "run.json").exists())
    stranger = parts(unit(run_dir, other))[0]
    shutil.copy(stranger, folder / "part-99990101T000000000000-deadbeef.jsonl")


DAMAGES: dict[str, Callable[[Path], None]] = {
    "listed part missing": _missing_part,
    "truncated finished part": _truncated_finished_part,
    "empty _SUCCESS": _empty_manifest,
    "garbage _SUCCESS": _garbage_manifest,
    "truncated unfinished part": _truncated_unfinished_part,
    "wrong schema in unfinished unit": _wrong_schema_unfinished_part,
}


@pytest.mark.parametrize("phase", ["generations", "grades"])
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_resume_repairs_damaged_units(work: Work, phase: str, damage: str) -> None:
    before = work.metrics()
    folder = unit(work.run_dir, phase)
    DAMAGES[damage](folder)
    asked = completions(work.srv)
    result = work.resume()
    assert result.exit_code == 0, result.stderr
    assert completions(work.srv) == asked  # everything redone from the response cache
    assert "repaired" in result.stderr, result.stderr
    assert str(folder.relative_to(work.run_dir)) in result.stderr
    assert (folder / "_SUCCESS").exists() and (folder / "_damaged").is_dir()
    assert work.metrics() == before
    again = work.resume()  # nothing left to repair
    assert again.exit_code == 0 and "repaired" not in again.stderr, again.stderr


def test_a_task_pod_repairs_its_unit_and_says_so(work: Work) -> None:
    """The same repair in `skillmix task generate` (a Kubernetes pod): its log names it."""
    folder = unit(work.run_dir, "generations")
    part = parts(folder)[0]
    flip_a_letter(part)
    student, k, g = folder.relative_to(work.run_dir / "generations").parts
    asked = completions(work.srv)
    result = run_cli(
        "task", "generate", "--run", str(work.run_dir), "--student", student,
        "--k", k.removeprefix("k"), "--round", g.removeprefix("r"), "--base-url", work.srv.base_url,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert completions(work.srv) == asked
    assert f"repaired: {work.run_dir}/{folder.relative_to(work.run_dir)}: damaged unit" in (
        result.stderr
    )
    assert part.name in result.stderr and "generated 4 records, 0 failed" in result.stderr
