"""Printing helpers: data to stdout, messages to stderr, colour only on a terminal."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

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
    from rich.console import Console

    return Console(soft_wrap=False, width=200 if not sys.stdout.isatty() else None)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def info(message: str) -> None:
    click.echo(message, err=True)
