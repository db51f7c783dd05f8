"""``skillmix aggregate`` and ``skillmix import-reference``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from skillmix.artifacts import ReferenceImportRun
from skillmix.cli._output import echo_json, format_option, info, stdout_console, warn
from skillmix.cli.options import choice_option
from skillmix.errors import SkillmixError
from skillmix.legacy import read_reference, write_reference
from skillmix.method.points import MetricOptions, default_name_filter
from skillmix.pipeline.aggregate import aggregate_run, aggregate_warnings
from skillmix.pipeline.context import open_run
from skillmix.reference_run import reference_context
from skillmix.report.csv_report import render_metrics_csv
from skillmix.report.terminal import metrics_terminal_table
from skillmix.report.view import metrics_view
from skillmix.store.runs import RunStore
from skillmix.store.uri import open_store

if TYPE_CHECKING:
    from rich.table import Table

    from skillmix.artifacts import MetricsSection
    from skillmix.pipeline.context import RunContext


def metric_options(f):
    """The metric flags shared by aggregate, score and report."""
    options = [
        choice_option(
            "--mode",
            ["reference", "strict"],
            "strict",
            "reference: unreadable point lists count as zeros/padded as the reference does; strict: they are left out and counted.",
        ),
        choice_option(
            "--generation-agg",
            ["max", "mean"],
            "max",
            "Combine generation rounds per combination (max = best of G).",
        ),
        choice_option(
            "--vote", ["majority", "mean"], "majority", "Combine grading rounds per rubric item."
        ),
        click.option(
            "--filter-explicit-name",
            type=click.Choice(["off", "substring", "word"]),
            default=None,
            help="Zero a skill's point when the answer names it. Default: word (strict mode), off (reference mode, as the reference).",
        ),
        click.option(
            "--filter-skills",
            default="",
            help="Comma-separated skill names; combinations containing any are dropped.",
        ),
        click.option(
            "--bootstrap",
            "bootstrap_samples",
            type=click.IntRange(0, 100000),
            default=2000,
            show_default=True,
            help="Bootstrap resamples for the paired-difference intervals of the report (0 disables; "
            "metric intervals are Wilson score intervals).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def build_metric_options(
    mode: str,
    generation_agg: str,
    vote: str,
    filter_explicit_name: str | None,
    filter_skills: str,
    bootstrap_samples: int,
):

    if filter_explicit_name is None:
        filter_explicit_name = default_name_filter(mode)  # type: ignore[arg-type]
    skills = tuple(s.strip() for s in filter_skills.split(",") if s.strip())
    return MetricOptions(
        mode=mode,  # type: ignore[arg-type]
        generation_agg=generation_agg,  # type: ignore[arg-type]
        vote=vote,  # type: ignore[arg-type]
        filter_explicit_name=filter_explicit_name,  # type: ignore[arg-type]
        filter_skills=skills,
        bootstrap_samples=bootstrap_samples,
    )


def metrics_table(metrics: MetricsSection, title: str = "SKILL-MIX metrics") -> Table:
    """``mean [95% interval]`` per metric (the reference's ``mean ± stderr`` in reference
    mode), from the JSON form of the metrics
    (``RunMetrics.section()`` or the ``metrics`` of a summary.json), laid out from the
    report's view model (so it shows the numbers report.md shows)."""
    # deferred: rich and the report's modules load only when a table is printed

    return metrics_terminal_table(metrics_view(metrics), title)


def round_options(f):
    """Use only the first N rounds (the reference's --num_generation_rounds/--num_grading_rounds)."""
    for kind in ("grading", "generation"):
        f = click.option(
            f"--{kind}-rounds",
            f"{kind}_rounds",
            type=click.IntRange(min=1),
            default=None,
            help=f"Use only {kind} rounds 1..N (as the reference's --num_{kind}_rounds). "
            "Default: every round.",
        )(f)
    return f


@click.command("aggregate")
@click.argument("run_dir")
@metric_options
@round_options
@click.option("--reparse", is_flag=True, help="Re-read points from the stored raw grader replies.")
@click.option("--details", is_flag=True, help="JSON: include per-skill and per-topic rates.")
@format_option(("table", "json", "csv"))
def aggregate_cmd(
    run_dir: str,
    generation_rounds: int | None,
    grading_rounds: int | None,
    reparse: bool,
    details: bool,
    fmt: str,
    **metric_flags: Any,
) -> None:
    """Compute Full Marks / All Skills / Skill Fraction for a run folder (local or s3://)."""

    options = build_metric_options(**metric_flags)
    store = open_store(run_dir)
    store.check()  # an unusable store is reported as by `evaluate` (same line, same code)
    run = RunStore(store)
    result = aggregate_run(
        run,
        options,
        reparse=reparse,
        check_filter=True,
        generation_rounds=generation_rounds,
        grading_rounds=grading_rounds,
    )
    rounds = {
        f"{kind}_rounds": limit
        for kind, limit in (("generation", generation_rounds), ("grading", grading_rounds))
        if limit is not None
    }
    if fmt == "json":
        data = result.as_dict(details=details)
        data["settings"].update(rounds)  # which rounds were used, when not all
        echo_json(data)
    elif fmt == "csv":
        click.echo(render_metrics_csv(metrics_view(result.section())), nl=False)
    else:
        stdout_console().print(metrics_table(result.section()))
        if rounds:
            info(
                "rounds used: " + ", ".join(f"{k.split('_')[0]} 1..{n}" for k, n in rounds.items())
            )
        unparsed = sum(r.unparsed for r in result.rows)
        if unparsed:
            warn(
                f"{unparsed} grading verdicts had no usable points ({'left out' if options.mode == 'strict' else 'counted as the reference does'})"
            )
    # on stderr whatever the format, as `report` warns
    warnings = aggregate_warnings(
        run, result, generation_rounds=generation_rounds, grading_rounds=grading_rounds
    )
    for line in warnings:
        warn(line)


@click.command("import-reference")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", required=True, help="Run folder to create (local path or s3://).")
@click.option(
    "--student", "students", multiple=True, help="Import only these students (repeatable)."
)
@click.option("--grader", default=None, help="Import only grades by this grader.")
@click.option("--seed", type=int, default=None, help="Seed to import when the tree holds several.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@round_options
@format_option(("table", "json"))
def import_reference_cmd(
    root: str,
    out: str,
    students: tuple[str, ...],
    grader: str | None,
    seed: int | None,
    overwrite: bool,
    generation_rounds: int | None,
    grading_rounds: int | None,
    fmt: str,
) -> None:
    """Import a reference-format result tree (k{k}_s{seed}_v{version}_r{g}/...) into a run folder."""

    # read and check the whole tree before touching --out (nothing importable: an error)
    imported = read_reference(
        root,
        students=students,
        grader=grader,
        seed=seed,
        generation_rounds=generation_rounds,
        grading_rounds=grading_rounds,
    )
    store = open_store(out)
    store.check()
    run = RunStore(store)
    if not run.is_empty():
        if not overwrite:
            raise SkillmixError(
                f"{out}: already holds files", hint="choose a new --out or pass --overwrite"
            )
        store.delete_prefix("")
    summary = write_reference(run, imported)
    if fmt == "json":
        # the run.json of the import, less what only the file needs
        skip = {"schema_version", "kind", "created_at", "skillmix_version"}
        echo_json(summary.to_run().model_dump(mode="json", exclude=skip))
    else:
        info(
            f"imported {summary.generations} generations and {summary.grades} grades "
            f"(seed {summary.seed}, k={','.join(map(str, summary.ks))}, students {', '.join(summary.students)}, "
            f"graders {', '.join(summary.graders)}) into {out}"
        )
    for issue in summary.issues:
        warn(str(issue))


def open_report_run(run_uri: str) -> tuple[RunStore, RunContext]:
    """The run folder and context ``skillmix report`` reads: an evaluation run's own, or for a
    reference import one made from the import (reference_run.reference_context); its byte-identical
    grading rounds are named again by the report's warnings (report.build)."""

    run = RunStore(open_store(run_uri))
    info = run.read_run()
    if not isinstance(info, ReferenceImportRun):
        return open_run(run_uri)
    return run, reference_context(info, run, run_uri)
