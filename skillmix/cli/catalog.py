"""``skillmix catalog list|validate`` and ``skillmix sample``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from skillmix.catalog import load_catalog, load_skills_csv, load_topics
from skillmix.cli._output import echo_json, format_option, stdout_console
from skillmix.cli.options import choice_option, seed_option
from skillmix.config import MAX_COMBINATIONS
from skillmix.errors import SkillmixError
from skillmix.method.sampling import sample_combinations

catalog_files = [
    click.option(
        "--skills",
        "skills_path",
        type=click.Path(dir_okay=False),
        help="Skills CSV (reference format); default: built-in.",
    ),
    click.option(
        "--topics",
        "topics_path",
        type=click.Path(dir_okay=False),
        help="Topics file, one per line; default: built-in.",
    ),
]


def with_catalog_files(f):
    for option in reversed(catalog_files):
        f = option(f)
    return f


@click.group()
def catalog() -> None:
    """Inspect and check skill/topic catalogs."""


@catalog.command("list")
@with_catalog_files
@format_option()
def list_cmd(skills_path: str | None, topics_path: str | None, fmt: str) -> None:
    """List the skills and topics of a catalog (the built-in one by default)."""

    cat = load_catalog(skills_path, topics_path)
    if fmt == "json":
        echo_json(
            {
                "skills": [
                    {
                        "name": s.name,
                        "category": s.category,
                        "definition": s.definition,
                        "example": s.example,
                    }
                    for s in cat.skills
                ],
                "topics": list(cat.topics),
            }
        )
        return

    table = Table(title=f"{len(cat.skills)} skills ({cat.source})")
    table.add_column("skill")
    table.add_column("category")
    table.add_column("definition", overflow="fold")
    for s in cat.skills:
        table.add_row(s.name, s.category, s.definition)
    console = stdout_console()
    console.print(table)
    console.print(f"{len(cat.topics)} topics: " + ", ".join(cat.topics))


@catalog.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def validate_cmd(paths: tuple[str, ...]) -> None:
    """Check skills CSVs, topics files, or folders holding skills.csv and topics.txt."""

    failures = []
    for raw in paths:
        path = Path(raw)
        targets: list[tuple[str, Path]] = []
        if path.is_dir():
            for name, kind in (("skills.csv", "skills"), ("topics.txt", "topics")):
                if (path / name).is_file():
                    targets.append((kind, path / name))
            if not targets:
                failures.append(f"{path}: no skills.csv or topics.txt in this folder")
        elif path.suffix.lower() == ".csv":
            targets.append(("skills", path))
        else:
            targets.append(("topics", path))
        for kind, target in targets:
            try:
                if kind == "skills":
                    skills = load_skills_csv(target)
                    with_commas = [s.name for s in skills if "," in s.name]
                    note = (
                        f" (warning: names with commas break reference graders: {with_commas})"
                        if with_commas
                        else ""
                    )
                    cats = sorted({s.category for s in skills if s.category})
                    click.echo(
                        f"ok: {target}: {len(skills)} active skills in {len(cats)} categories{note}"
                    )
                else:
                    topics = load_topics(target)
                    click.echo(f"ok: {target}: {len(topics)} topics")
            except SkillmixError as exc:
                failures.append(exc.one_line())
    if failures:
        for line in failures[:-1]:
            click.echo(f"error: {line}", err=True)
        raise SkillmixError(failures[-1])


@click.command()
@with_catalog_files
@click.option("--k", "k", type=int, required=True, help="Skills per combination.")
@click.option(
    "--n",
    "n",
    type=int,
    required=True,
    help="Number of combinations (M), 1 to 100000 (a run's limit).",
)
@seed_option
@click.option(
    "--order-seed",
    default="test",
    show_default=True,
    help="Seed for the presentation order (the reference used its experiment root path).",
)
@choice_option(
    "--mode",
    ["reference", "distinct"],
    "reference",
    "reference: bit-for-bit the reference sampler; distinct: no skill set twice.",
)
@format_option(("json", "table"), default="json")
def sample(
    skills_path: str | None,
    topics_path: str | None,
    k: int,
    n: int,
    seed: int,
    order_seed: str,
    mode: str,
    fmt: str,
) -> None:
    """Draw (topic, skills) combinations exactly as a run would."""

    if not 1 <= n <= MAX_COMBINATIONS:
        raise SkillmixError(
            f"--n: {n} is out of range",
            hint=f"give 1 to {MAX_COMBINATIONS} combinations (a run's limit); "
            "draw larger sets with several --seed values",
        )
    cat = load_catalog(skills_path, topics_path)
    combos = sample_combinations(
        cat.skill_names,
        cat.topics,
        k,
        n,
        seed=seed,
        order_seed=order_seed,
        mode=mode,  # type: ignore[arg-type]
    )
    if fmt == "json":
        echo_json([{"topic": c.topic, "skills": list(c.skills)} for c in combos])
        return

    table = Table(title=f"k={k}, seed={seed}, order seed={order_seed!r}, mode={mode}")
    table.add_column("#", justify="right")
    table.add_column("topic")
    table.add_column("skills")
    for c in combos:
        table.add_row(str(c.index), c.topic, "; ".join(c.skills))
    stdout_console().print(table)
