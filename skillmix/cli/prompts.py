"""``skillmix prompts list|render``."""

from __future__ import annotations

import click

from skillmix.catalog import load_catalog
from skillmix.cli._output import echo_json, format_option
from skillmix.cli.catalog import with_catalog_files
from skillmix.errors import SkillmixError
from skillmix.method.prompts import render_generation_prompts, render_grading_prompt
from skillmix.promptset import list_prompt_versions, load_prompt_version


@click.group()
def prompts() -> None:
    """List and render prompt versions."""


@prompts.command("list")
@click.option(
    "--prompts-dir",
    type=click.Path(file_okay=False),
    help="A folder with generation/ and grading/ (or grade/).",
)
@format_option()
def list_cmd(prompts_dir: str | None, fmt: str) -> None:
    """Prompt versions available in the built-in set or a folder."""

    data = {kind: list_prompt_versions(kind, prompts_dir) for kind in ("generation", "grading")}
    if fmt == "json":
        echo_json(data)
    else:
        for kind, versions in data.items():
            click.echo(f"{kind}: {', '.join(versions) or '(none)'}")


@prompts.command("render")
@click.option("--kind", type=click.Choice(["generation", "grading"]), required=True)
@click.option(
    "--prompts-dir",
    type=click.Path(file_okay=False),
    help="A folder with generation/ and grading/ (or grade/); default: built-in.",
)
@click.option(
    "--version",
    "version",
    required=True,
    help="Prompt version name (file stem) or a path to a .json file.",
)
@with_catalog_files
@click.option("--topic", required=True)
@click.option(
    "--skill",
    "skill_names",
    multiple=True,
    required=True,
    help="A skill name (repeat, in presentation order).",
)
@click.option("--answer", default=None, help="Student answer (grading prompts).")
@click.option(
    "--style",
    type=click.Choice(["table", "points"]),
    default=None,
    help="Rubric style (default: inferred from the prompt).",
)
@click.option(
    "--template-encoding",
    default="utf-8",
    show_default=True,
    help="Codec used to read the template file.",
)
@format_option(("json", "text"), default="text")
def render_cmd(
    kind: str,
    prompts_dir: str | None,
    version: str,
    skills_path: str | None,
    topics_path: str | None,
    topic: str,
    skill_names: tuple[str, ...],
    answer: str | None,
    style: str | None,
    template_encoding: str,
    fmt: str,
) -> None:
    """Render a prompt version for a topic and skills (JSON: the list of turns)."""

    template = load_prompt_version(kind, version, prompts_dir, encoding=template_encoding)  # type: ignore[arg-type]
    cat = load_catalog(skills_path, topics_path)
    skills = [cat.skill(name) for name in skill_names]
    if kind == "grading":
        if answer is None:
            raise SkillmixError("--answer is required for grading prompts")
        turns = [render_grading_prompt(template, skills, topic, answer, style)]  # type: ignore[arg-type]
    else:
        if answer is not None:
            raise SkillmixError("--answer only applies to grading prompts")
        turns = render_generation_prompts(template, skills, topic)
    if fmt == "json":
        echo_json(turns)
    else:
        for number, turn in enumerate(turns, start=1):
            if len(turns) > 1:
                click.echo(f"--- turn {number} ---")
            click.echo(turn)
