"""Printing helpers: data to stdout, messages to stderr, colour only on a terminal."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from skillmix.errors import SkillmixError

FORMATS = ("table", "json")


def format_option(choices: tuple[str, ...] = FORMATS, default: str = "table") -> Any:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(choices),
        default=default,
        show_default=True,
        help="Output format (json prints exactly one JSON document to stdout).",
    )


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def stdout_console() -> Console:

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich exits 1 here; a closed pipe (`skillmix ... | head`) is not a failure:
            # the CLI boundary ends quietly with 0
            raise BrokenPipeError

    return _Console(soft_wrap=False, width=200 if not sys.stdout.isatty() else None)


def stderr_console() -> Console:

    return Console(stderr=True)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def info(message: str) -> None:
    click.echo(message, err=True)


def write_files(folder: str | Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (relative names) under a folder the user named (``--out``); a place
    that cannot be written is bad input: one line, exit 2."""

    target = Path(folder)
    for name, data in files.items():
        path = target / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            where = exc.filename or path
            raise SkillmixError(f"{where}: cannot write: {exc.strerror or exc}") from None
