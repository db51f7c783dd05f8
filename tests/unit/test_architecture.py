"""Structural rules: the method is pure, the CLI starts light, packaging lists every package."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PURE = sorted((ROOT / "skillmix" / "method").glob("*.py"))
FORBIDDEN_MODULES = {
    "os",
    "pathlib",
    "socket",
    "subprocess",
    "shutil",
    "tempfile",
    "io",
    "urllib",
    "http",
    "requests",
    "httpx",
    "openai",
    "boto3",
    "botocore",
    "aiohttp",
    "kubernetes",
    "time",
    "datetime",
    "asyncio",
    "threading",
    "importlib.resources",
}
FORBIDDEN_CALLS = {"open", "print", "input"}


def test_method_modules_do_no_io() -> None:
    assert PURE, "no method modules found"
    for path in PURE:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                names = []
            for name in names:
                assert (
                    name.split(".")[0] not in FORBIDDEN_MODULES and name not in FORBIDDEN_MODULES
                ), f"{path.name} imports {name}"
                assert not name.startswith(
                    (
                        "skillmix.store",
                        "skillmix.backends",
                        "skillmix.k8s",
                        "skillmix.pipeline",
                        "skillmix.cli",
                    )
                ), f"{path.name} imports {name}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in FORBIDDEN_CALLS, f"{path.name} calls {node.func.id}()"


def test_pyproject_lists_every_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "skillmix").rglob("__init__.py")
    }
    assert found | {"skillmix.builtin_prompts", "skillmix.builtin_chart"} == listed


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "from skillmix.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('openai', 'boto3', 'kubernetes', 'matplotlib', 'numpy', 'aiohttp', 'pydantic', 'inflect') if m in sys.modules)\n"
        "sys.stderr.write(','.join(heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stderr == ""
    assert "Commands:" in proc.stdout
