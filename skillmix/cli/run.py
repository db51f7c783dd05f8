"""``skillmix evaluate|generate|score|report|schema``: running evaluations locally."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import click

from skillmix import settings
from skillmix.backends.vllm_server import VllmServerFailed
from skillmix.cli._output import echo_json, format_option, info, stdout_console, warn, write_files
from skillmix.cli.flags import apply_backend_args, apply_sampling_params, parse_int_list
from skillmix.cli.options import choice_option, dpi_option, out_option, seed_option
from skillmix.cli.reasoning import (
    rescore_task,
    run_task,
    scorer_option,
    task_options,
    wants_task,
)
from skillmix.cli.results import metrics_table, open_report_run
from skillmix.config import Experiment
from skillmix.errors import RunFailedError, SkillmixError
from skillmix.executors.local import LocalExecutor, RunOutcome, continue_run
from skillmix.loading import experiment_schema, load_experiment, parse_experiment
from skillmix.report.build import build_report
from skillmix.report.latex import render_latex
from skillmix.report.view import report_view
from skillmix.vocab import PHASES


def _experiment_from_flags(
    name: str | None,
    models: tuple[str, ...],
    backend: str,
    base_url: str | None,
    ks: str | None,
    grader: str | None,
    grader_backend: str | None,
    grader_base_url: str | None,
    backend_args: str,
    sampling_params: str,
    grader_args: str,
    combinations: int,
    generation_rounds: int,
    grading_rounds: int,
    seed: int,
) -> Experiment:

    if not models:
        raise SkillmixError("give an experiment file with -f, or at least one --model")
    if not ks:
        raise SkillmixError("--k is required without -f (e.g. --k 2,3)")
    k_values = parse_int_list(ks, "--k", example="2,3")
    students = []
    for model in models:
        spec: dict[str, Any] = {"name": _safe_name(model), "backend": backend, "model": model}
        if base_url:
            spec["base_url"] = base_url
        spec = apply_sampling_params(apply_backend_args(spec, backend_args), sampling_params)
        students.append(spec)
    grader_spec: dict[str, Any] = {
        "name": _safe_name(grader or "mock-grader"),
        "backend": grader_backend or ("mock" if grader is None else backend),
        "model": grader or "mock-grader",
        "rounds": grading_rounds,
    }
    if grader_base_url:
        grader_spec["base_url"] = grader_base_url
    grader_spec = apply_backend_args(grader_spec, grader_args, "--grader-args")
    data = {
        "name": name
        or _safe_name("-".join(s["name"] for s in students))[:40].rstrip("-.")
        or "run",
        "seed": seed,
        "ks": k_values,
        "combinations": combinations,
        "generation_rounds": generation_rounds,
        "students": students,
        "grader": grader_spec,
    }
    # the flags' values are text: "0.7" is read as a number here, unlike in a file
    return parse_experiment(data, "command line", strict=False)


def _safe_name(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return cleaned[:63] or "model"


wait_for_lock_option = click.option(
    "--wait-for-lock",
    "wait_for_lock",
    type=click.FloatRange(0, 7 * 24 * 3600),
    default=None,
    metavar="SECONDS",
    help="If another process is writing the run, wait up to SECONDS for it to finish "
    "(default: stop at once with exit 2, naming it).",
)


def vllm_health_timeout_option(f: Any) -> Any:

    return click.option(
        "--vllm-health-timeout",
        "vllm_health_timeout",
        type=click.FloatRange(1, 7 * 24 * 3600),
        default=1200.0,
        envvar=settings.VLLM_HEALTH_TIMEOUT.name,
        show_default=True,
        metavar="SECONDS",
        help="Backend vllm without a base_url: skillmix runs `vllm serve` itself and waits up "
        "to SECONDS for /health (download and load) before the run fails "
        f"(env {settings.VLLM_HEALTH_TIMEOUT.name}).",
    )(f)


@contextlib.contextmanager
def showing_server_logs() -> Iterator[None]:
    """A local vLLM server that failed: its log's last lines on stderr, before the error."""

    try:
        yield
    except VllmServerFailed as exc:
        if exc.log_tail:
            info("last lines of the vLLM log:")
            for line in exc.log_tail:
                info(f"  | {line}")
        raise


no_cache_option = click.option(
    "--no-cache",
    is_flag=True,
    help="Ask the models again: neither read nor write the response cache.",
)


def experiment_options(f: Any) -> Any:
    options = [
        click.option(
            "-f", "--file", "file", type=click.Path(dir_okay=False), help="Experiment YAML file."
        ),
        click.option(
            "--store",
            default=None,
            help="Where runs live: a folder or s3://bucket/prefix (default: the file's `store`, else runs/).",
        ),
        click.option(
            "--resume", is_flag=True, help="Continue an existing run; finished work is not redone."
        ),
        click.option(
            "--overwrite",
            is_flag=True,
            help="Delete an existing run with the same id and start over.",
        ),
        no_cache_option,
        wait_for_lock_option,
        click.option("--name", default=None, help="Quick form: run name."),
        click.option(
            "--model", "models", multiple=True, help="Quick form: student model id (repeatable)."
        ),
        choice_option(
            "--backend", ["mock", "openai", "vllm"], "mock", "Quick form: student backend."
        ),
        click.option(
            "--base-url",
            default=None,
            help="Quick form: student endpoint (vLLM: http://host:8000/v1; without it, "
            "--backend vllm starts `vllm serve MODEL` itself).",
        ),
        click.option(
            "--k", "ks", default=None, help="Quick form: comma-separated k values, e.g. 2,3."
        ),
        click.option(
            "--grader", default=None, help="Quick form: grader model id (default: the mock grader)."
        ),
        click.option(
            "--grader-backend",
            type=click.Choice(["mock", "openai", "vllm"]),
            default=None,
            help="Quick form: grader backend.",
        ),
        click.option("--grader-base-url", default=None),
        click.option(
            "--backend-args",
            default="",
            help="Student backend args, k=v,... (base_url, api_key_env, concurrency, rpm, tpm, timeout, max_retries, quality, system_prompt).",
        ),
        click.option(
            "--grader-args", default="", help="Grader backend args, same keys as --backend-args."
        ),
        click.option(
            "--sampling-params",
            default="",
            help="Student sampling, k=v,... (temperature, top_p, max_tokens, seed, presence_penalty, frequency_penalty, stop).",
        ),
        click.option(
            "--combinations",
            "-n",
            type=click.IntRange(1),
            default=20,
            show_default=True,
            help="Quick form: M combinations per k.",
        ),
        click.option("--generation-rounds", type=click.IntRange(1), default=1, show_default=True),
        click.option("--grading-rounds", type=click.IntRange(1), default=3, show_default=True),
        seed_option,
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Progress bars (default: when stderr is a terminal).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def load_experiment_for(kwargs: dict[str, Any]) -> Experiment:

    if kwargs.get("store") is not None and not kwargs["store"].strip():
        raise SkillmixError(
            "--store: must not be empty", hint="leave it out for the default, or name a folder"
        )
    if kwargs["file"]:
        flag_names = {
            "models": "--model",
            "ks": "--k",
            "grader": "--grader",
            "base_url": "--base-url",
            "grader_base_url": "--grader-base-url",
            "grader_backend": "--grader-backend",
            "backend_args": "--backend-args",
            "sampling_params": "--sampling-params",
            "grader_args": "--grader-args",
        }
        flags = [flag for key, flag in flag_names.items() if kwargs.get(key)]
        if flags:
            raise SkillmixError(
                f"-f excludes the quick-form flags ({', '.join(flags)})",
                hint="put those settings in the experiment file",
            )
        return load_experiment(kwargs["file"])
    return _experiment_from_flags(
        kwargs["name"],
        kwargs["models"],
        kwargs["backend"],
        kwargs["base_url"],
        kwargs["ks"],
        kwargs["grader"],
        kwargs["grader_backend"],
        kwargs["grader_base_url"],
        kwargs["backend_args"],
        kwargs["sampling_params"],
        kwargs["grader_args"],
        kwargs["combinations"],
        kwargs["generation_rounds"],
        kwargs["grading_rounds"],
        kwargs["seed"],
    )


def print_outcome(outcome: Any, fmt: str) -> None:

    if outcome.metrics is not None:
        if fmt == "json":
            click.echo(outcome.metrics.to_json())
        else:
            stdout_console().print(
                metrics_table(
                    outcome.metrics.section(),
                    title=f"{outcome.run_id}: SKILL-MIX metrics",
                )
            )
    for note in (n for u in outcome.units for n in u.repaired):
        warn(f"repaired: {note}")
    for line in outcome.summary.warnings if outcome.summary is not None else ():
        warn(line)
    failures = sum(u.failed for u in outcome.units)
    if failures:
        where = (
            f"they are listed in {outcome.report_uri}/summary.json"
            if outcome.summary is not None
            else f"their reasons are in the records under {outcome.run_uri}"
        )
        warn(f"{failures} records failed after retries; {where}")
        for (phase, model), n in sorted(outcome.failures_by_model().items()):
            warn(f"  {phase} {model}: {n} failed")
        common = outcome.common_error()
        if common is not None:
            warn(f"  most common error ({common[1]}x): {common[0]}")
    if outcome.missing:
        warn(f"not graded (generations unfinished): {', '.join(outcome.missing)}")
    info(f"run {outcome.run_id} finished in {outcome.seconds:.1f}s")
    if outcome.metrics is not None:
        info(
            f"report: {outcome.report_uri}/report.html (also report.md, summary.json, metrics.csv)"
        )
    else:
        info(f"run folder: {outcome.run_uri}")
    if outcome.tasks is not None and outcome.tasks.runs:
        info(
            f"tasks: {outcome.report_uri}/tasks.html ({len(outcome.tasks.runs)} task runs in "
            "report/tasks/, SkyThought's layout)"
        )
    for name in outcome.tasks.unfinished if outcome.tasks is not None else []:
        warn(f"task {name}: not every problem was asked; resume the run")


def allow_failures_option(f: Any) -> Any:
    return click.option(
        "--allow-failures",
        is_flag=True,
        help="Exit 0 even when some records failed for good (default: exit 1, listing them).",
    )(f)


def check_failures(outcome: Any, allow_failures: bool, retry: str) -> None:
    """A run with records that failed for good is a failed run (exit 1), unless allowed."""
    if outcome.failed_records and not allow_failures:
        raise RunFailedError(
            f"run {outcome.run_id}: {outcome.failure_line()}",
            hint=f"retry them with {retry}, or pass --allow-failures to accept a partial run",
        )


def _evaluate_from(kwargs: dict[str, Any], phases: tuple[str, ...]) -> RunOutcome:
    """Run ``phases`` of the experiment the ``experiment_options`` flags name, locally."""
    experiment = load_experiment_for(kwargs)
    executor = LocalExecutor(
        store_uri=kwargs["store"],
        resume=kwargs["resume"],
        overwrite=kwargs["overwrite"],
        phases=phases,
        progress=kwargs["progress"],
        wait_for_lock=kwargs["wait_for_lock"],
        vllm_health_timeout=kwargs["vllm_health_timeout"],
        use_cache=not kwargs["no_cache"],
    )
    with showing_server_logs():
        return executor.run(experiment)


@click.command("evaluate")
@experiment_options
@task_options
@vllm_health_timeout_option
@allow_failures_option
@format_option(("table", "json"))
def evaluate_cmd(fmt: str, allow_failures: bool, **kwargs: Any) -> None:
    """Run an evaluation locally: generate, grade, aggregate, report.

    Either -f EXPERIMENT.yaml, or the quick form: --model NAME --backend openai|vllm|mock
    [--base-url URL] --k 2,3 [--grader NAME]. Re-running a finished request never calls the
    model again (responses are cached in the store). A vllm student without a base URL is
    served by `vllm serve`, which skillmix starts and stops (pip install 'skillmix[vllm]').

    A reasoning benchmark instead: --task math500 --model NAME [--n 8] (see `skillmix tasks`).
    """
    if wants_task(kwargs):
        run_task(kwargs, fmt)
        return
    outcome = _evaluate_from(kwargs, PHASES)
    print_outcome(outcome, fmt)
    check_failures(outcome, allow_failures, "`skillmix evaluate ... --resume`")


@click.command("generate")
@experiment_options
@task_options
@click.option(
    "--resume-from",
    type=click.Path(file_okay=False),
    default=None,
    help="--task: continue this run folder (the flags must match its settings).",
)
@vllm_health_timeout_option
@allow_failures_option
def generate_cmd(allow_failures: bool, **kwargs: Any) -> None:
    """Only the generation phase (grade later with `skillmix score RUN`).

    With --task: ask the problems without scoring (score later with
    `skillmix score --task T --run-dir DIR`), as SkyThought's `generate`."""
    if wants_task(kwargs):
        run_task(kwargs, "table", score=False)
        return
    if kwargs.get("resume_from"):
        raise SkillmixError("--resume-from continues a --task run; a SKILL-MIX run takes --resume")
    outcome = _evaluate_from(kwargs, ("generate",))
    print_outcome(outcome, "table")
    click.echo(outcome.run_uri)
    check_failures(outcome, allow_failures, "`skillmix generate ... --resume`")


@click.command("score")
@click.argument("run_uri", required=False)
@click.option("--progress/--no-progress", default=None)
@no_cache_option
@click.option("--task", default=None, help="Re-score a reasoning run folder with this task.")
@click.option(
    "--task-config", type=click.Path(dir_okay=False), default=None, help="A task from your file."
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="A reasoning run folder (skillmix's or SkyThought's layout) to score again.",
)
@click.option("--ids", default=None, help="Only these problems (_index values, comma-separated).")
@scorer_option
@click.option(
    "--keep-correct",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the correct responses as chat-format JSONL (reject sampling, e.g. NUMINA).",
)
@wait_for_lock_option
@allow_failures_option
@format_option(("table", "json"))
def score_cmd(
    run_uri: str | None,
    progress: bool | None,
    no_cache: bool,
    task: str | None,
    task_config: str | None,
    run_dir: str | None,
    ids: str | None,
    keep_correct: str | None,
    scorer: str,
    wait_for_lock: float | None,
    allow_failures: bool,
    fmt: str,
) -> None:
    """Grade and aggregate the saved generations of a run (resumes finished grading).

    With --task T --run-dir DIR: score a reasoning run folder again (skillmix's or
    SkyThought's), rewriting each response's correctness and summary.json."""
    if run_dir or task or task_config:
        if run_uri or not run_dir:
            raise SkillmixError("re-scoring takes --task T --run-dir DIR (and no RUN)")
        chosen = [i.strip() for i in ids.split(",") if i.strip()] if ids else None
        rescore_task(task, task_config, run_dir, chosen, fmt, keep_correct, scorer)
        return
    if ids or keep_correct:
        raise SkillmixError("--ids and --keep-correct need --task and --run-dir")
    if not run_uri:
        raise SkillmixError("give the RUN to score (or --task T --run-dir DIR)")
    outcome = continue_run(
        run_uri, progress=progress, wait_for_lock=wait_for_lock, use_cache=not no_cache
    )
    print_outcome(outcome, fmt)
    check_failures(outcome, allow_failures, f"`skillmix score {run_uri}` again")


@click.command("report")
@click.argument("run_uri")
@out_option("Write the report files into this folder instead of RUN/report/ (RUN is only read).")
@dpi_option("Resolution of the plots (pixels per inch).")
@format_option(("table", "json", "latex"))
def report_cmd(run_uri: str, out: str | None, dpi: int, fmt: str) -> None:
    """(Re)build a run's report in RUN/report/ (or --out DIR): report.html (self-contained: plots embedded,
    no network needed to view it), report.md, summary.json, metrics.csv and plots/*.png.
    --format latex prints the leaderboards as LaTeX tables."""

    run, ctx = open_report_run(run_uri)  # a reference import too
    summary, files, metrics = build_report(run, ctx, dpi=dpi)
    if out:  # only into --out: the run folder may be read-only (someone else's, an archive)
        write_files(out, files)
    else:
        for name, data in files.items():
            run.write_report_file(name, data)
    if fmt == "json":
        echo_json(summary.model_dump(mode="json"))
    elif fmt == "latex":
        click.echo(render_latex(report_view(summary)), nl=False)
    else:
        stdout_console().print(
            metrics_table(metrics.section(), title=f"{ctx.run_id}: SKILL-MIX metrics")
        )
    for line in summary.warnings:
        warn(line)
    if summary.status == "partial":
        counts = summary.counts
        warn(
            f"partial run: {counts.grades} of {counts.planned_grades} grading verdicts and "
            f"{counts.generations} of {counts.planned_generations} generations finished"
        )
    folder = (out or run.uri.rstrip("/") + "/report").rstrip("/")
    info(f"report: {folder}/report.html (also report.md, summary.json, metrics.csv)")


@click.command("schema")
def schema_cmd() -> None:
    """Print the JSON schema of experiment files."""

    echo_json(experiment_schema())
