"""Shared test builders: small catalogs, CLI invocation, reference-folder access."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from skillmix.catalog import Skill

HEADER = ["category", "skill", "definition", "example", "comments", "status", "added by"]


def skills_csv(rows: list[dict[str, str]], header: list[str] = HEADER) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({h: row.get(h, "") for h in header})
    return buf.getvalue()


def skill_row(name: str, **extra: str) -> dict[str, str]:
    return {
        "category": extra.get("category", "literary"),
        "skill": name,
        "definition": extra.get("definition", f"Definition of {name}."),
        "example": extra.get("example", f"Example of {name}."),
        "status": extra.get("status", ""),
    }


def make_skills(*names: str) -> list[Skill]:
    return [
        Skill(name=n, definition=f"def {n}.", example=f"ex {n}.", category="logical") for n in names
    ]


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> CliResult:
    """Invoke the real entry point (error handling and exit codes included)."""
    from skillmix.cli import main

    runner = CliRunner()
    with runner.isolation() as streams:
        out, err = streams[0], streams[1]
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return CliResult(code, out.getvalue().decode(), err.getvalue().decode())


def reference_dir() -> Path:
    """The reference release folder from SKILLMIX_REFERENCE_DIR, or skip the test."""
    value = os.environ.get("SKILLMIX_REFERENCE_DIR", "")
    if not value or not Path(value, "runs").is_dir():
        pytest.skip("SKILLMIX_REFERENCE_DIR is not set to the reference release folder")
    return Path(value)
