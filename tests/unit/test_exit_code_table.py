"""The README's exit-code table says what the code does."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from skillmix.errors import ModelServerUnhealthy, RunFailedError, SkillmixError, TimeLimitReached

README = Path(__file__).resolve().parents[2] / "README.md"


def table() -> dict[int, str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("| exit code | meaning | examples |")
    rows: dict[int, str] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        codes, meaning = line.split("|")[1:3]
        for code in re.findall(r"`(\d+)`", codes):
            rows[int(code)] = meaning.strip()
    return rows


def test_the_readme_lists_every_exit_code_the_cli_gives() -> None:
    rows = table()
    assert set(rows) == {
        0,
        RunFailedError.exit_code,
        SkillmixError.exit_code,
        ModelServerUnhealthy.exit_code,
        TimeLimitReached.exit_code,
        128 + signal.SIGINT,
        128 + signal.SIGTERM,
        128 + signal.SIGHUP,
    }
    assert "run failed" in rows[RunFailedError.exit_code]
    assert "bad input" in rows[SkillmixError.exit_code]
    assert "never became healthy" in rows[ModelServerUnhealthy.exit_code]
    assert "time limit" in rows[TimeLimitReached.exit_code]
    assert "SIGINT" in rows[130] and "SIGTERM" in rows[143] and "SIGHUP" in rows[129]
