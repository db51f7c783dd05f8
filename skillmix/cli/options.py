"""Click options that several commands declare alike: each flag defined once, the differences
(its help text, its default) given where it is used."""

from __future__ import annotations

from typing import Any

import click


def choice_option(name: str, choices: list[str], default: str, help: str) -> Any:
    """A flag taking one of ``choices``, its default shown in the help."""
    return click.option(
        name, type=click.Choice(choices), default=default, show_default=True, help=help
    )


def out_option(help: str) -> Any:
    """``--out DIR``: the folder a command writes its files into (see :func:`~skillmix.cli._output.write_files`)."""
    return click.option("--out", type=click.Path(file_okay=False), default=None, help=help)


def dpi_option(help: str | None = None) -> Any:
    """``--dpi``: the resolution of the plots a command writes."""
    return click.option(
        "--dpi", type=click.IntRange(50, 400), default=100, show_default=True, help=help
    )


# the seed that draws the skills and topics (an experiment's `seed`, the reference's 10)
seed_option = click.option("--seed", type=int, default=10, show_default=True)
