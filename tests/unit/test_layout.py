"""The run-folder layout has one owner (store/layout.py); these are its promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from skillmix.store import runs
from skillmix.store.layout import RunLayout


def test_keys_of_a_run_folder() -> None:
    assert RunLayout.generation_prefix("s", 3, 2) == "generations/s/k3/r2"
    assert RunLayout.grade_prefix("g", "s", 3, 2, 1) == "grades/g/s/k3/r2/g1"
    assert RunLayout.launch_record(7) == "launches/attempt-007.json"
    assert RunLayout.summary_key() == "report/summary.json"
    assert RunLayout.report_file(RunLayout.plot("full_marks")) == "report/plots/full_marks.png"


def test_the_store_module_uses_the_layout() -> None:
    assert runs.generation_prefix("s", 2, 1) == RunLayout.generation_prefix("s", 2, 1)
    assert RunLayout.summary_key() == runs.SUMMARY_JSON
    assert runs.MANIFEST == RunLayout.MANIFEST


@pytest.mark.parametrize(
    ("run_uri", "root"),
    [
        ("s3://bucket/runs/exp-1234", "s3://bucket/runs"),
        ("s3://bucket/exp-1234/", "s3://bucket"),
        ("s3://bucket", "s3://bucket"),
    ],
)
def test_the_cache_lives_beside_the_run_folder_in_s3(run_uri: str, root: str) -> None:
    assert RunLayout.cache_root(run_uri) == root


def test_a_bare_local_name_resolves_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert RunLayout.cache_root("exp-1234") == str(tmp_path)
    assert RunLayout.cache_root(f"file://{tmp_path}/store/exp-1234/") == str(tmp_path / "store")
