"""Helpers of the Helm chart tests: where the chart is, finding helm, cached renders."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "skillmix"
VALUES_DIR = Path(__file__).resolve().parent / "values"
TOOLS_BIN = REPO / ".tools" / "bin"
RELEASE = "skillmix-run"
NAMESPACE = "skillmix-test"
VALUES_FILES = sorted(p.name for p in VALUES_DIR.glob("*.yaml"))


def find_helm() -> str | None:
    """helm from the repository's .tools/bin, else from PATH."""
    search = os.pathsep.join([str(TOOLS_BIN), os.environ.get("PATH", "")])
    return shutil.which("helm", path=search)


@dataclass(frozen=True)
class Render:
    """One `helm template` (or `helm lint`) result."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def docs(self) -> list[dict[str, Any]]:
        if self.returncode != 0:
            raise AssertionError(f"helm failed ({self.returncode}):\n{self.stderr}")
        return [d for d in yaml.safe_load_all(self.stdout) if d]

    def jobs(self, component: str | None = None) -> list[dict[str, Any]]:
        return [
            d
            for d in self.docs
            if d["kind"] == "Job"
            and (
                component is None
                or d["metadata"]["labels"]["app.kubernetes.io/component"] == component
            )
        ]


class Helm:
    """Runs helm against the chart; renders are cached per (values files, extra values)."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self._cache: dict[tuple[tuple[str, ...], str, tuple[str, ...]], Render] = {}
        self._counter = 0

    def run(self, *args: str, env: dict[str, str] | None = None) -> Render:
        proc = subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **(env or {})},
        )
        return Render(proc.returncode, proc.stdout, proc.stderr)

    def _value_args(self, files: tuple[str, ...], extra: dict[str, Any] | None) -> list[str]:
        args: list[str] = []
        for name in files:
            args += ["-f", str(VALUES_DIR / name)]
        if extra:
            self._counter += 1
            path = self.workdir / f"extra-{self._counter}.yaml"
            path.write_text(yaml.safe_dump(extra, sort_keys=False))
            args += ["-f", str(path)]
        return args

    def template(
        self,
        *files: str,
        extra: dict[str, Any] | None = None,
        flags: tuple[str, ...] = (),
        cached: bool = True,
    ) -> Render:
        """`helm template` with values files (names in tests/chart/values) and extra values."""
        key = (files, yaml.safe_dump(extra or {}, sort_keys=True), flags)
        if cached and key in self._cache:
            return self._cache[key]
        result = self.run(
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            *self._value_args(files, extra),
            *flags,
        )
        if cached:
            self._cache[key] = result
        return result

    def lint(self, *files: str) -> Render:
        return self.run("lint", "--strict", str(CHART), *self._value_args(files, None))

    def notes(self, *files: str) -> Render:
        """The rendered NOTES.txt, from a client-side dry-run install (no cluster needed)."""
        return self.run(
            "install",
            RELEASE,
            str(CHART),
            "--dry-run=client",
            "--namespace",
            NAMESPACE,
            *self._value_args(files, None),
            env={"KUBECONFIG": os.devnull},
        )
