"""The wheel carries everything a pip-installed skillmix needs (prompts, catalog, chart)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src")  # build from a clean copy: no stale build/ in the repo
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("skillmix", "prompts", "helm"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (whl,) = out.glob("skillmix-*.whl")
    return whl


def test_wheel_contains_data_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "skillmix/builtin_prompts/generation/two-turn-v1.json",
        "skillmix/builtin_prompts/grading/table-v1.json",
        "skillmix/builtin_prompts/grading/points-v1.json",
        "skillmix/catalog/data/skills.csv",
        "skillmix/catalog/data/topics.txt",
        "skillmix/report/page_script.js",
        "skillmix/builtin_chart/Chart.yaml",
        "skillmix/builtin_chart/values.yaml",
        "skillmix/builtin_chart/values.schema.json",
        "skillmix/builtin_chart/templates/_helpers.tpl",
        "skillmix/builtin_chart/templates/generation-jobs.yaml",
        "skillmix/builtin_chart/templates/grading-jobs.yaml",
        "skillmix/builtin_chart/templates/aggregation-job.yaml",
    ):
        assert required in names, required
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_installed_layout_finds_prompts_and_chart(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import skillmix, skillmix.promptset as p, skillmix.k8s.helm as h\n"
        "from skillmix.catalog import builtin_catalog\n"
        "print(skillmix.__file__)\n"
        "print(p.builtin_prompts_dir())\n"
        "print(h.chart_dir())\n"
        "print(','.join(p.list_prompt_versions('grading')))\n"
        "print(len(builtin_catalog().skills))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    module, prompts, chart, versions, skills = proc.stdout.split()
    assert module.startswith(str(site))
    assert prompts == str(site / "skillmix" / "builtin_prompts")
    assert chart == str(site / "skillmix" / "builtin_chart")
    assert versions == "points-v1,table-v1"
    assert int(skills) >= 100
