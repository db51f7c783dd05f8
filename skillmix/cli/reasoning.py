"""``skillmix tasks`` and ``skillmix evaluate --task ...``: reasoning benchmarks (MATH500, AIME,
GPQA-Diamond, ...) with SkyThought's flag names."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from skillmix.cli._output import echo_json, format_option, info, stdout_console, warn, write_files
from skillmix.cli.flags import apply_backend_args, apply_sampling_params
from skillmix.cli.options import choice_option, out_option
from skillmix.config import ModelSpec
from skillmix.errors import SkillmixError
from skillmix.method.reasoning_metrics import ReasoningMetrics, effective_samples
from skillmix.report.html_tasks import tasks_html
from skillmix.report.task_board import boards_json, boards_markdown, boards_tables, task_boards
from skillmix.tasks.config import builtin_tasks, resolve_task
from skillmix.tasks.model_prompts import model_prompts
from skillmix.tasks.rundir import read_results

if TYPE_CHECKING:
    from skillmix.executors.reasoning import Scorer, TaskOutcome, TaskRun


scorer_option = choice_option(
    "--scorer",
    ["skythought", "math_verify"],
    "skythought",
    "How math answers are judged: SkyThought's rules, or Hugging Face's math-verify "
    "(pip install 'skillmix[math-verify]').",
)


def task_options(f: Any) -> Any:
    """The flags of a task run (beside evaluate's --model, --backend, --seed, ...)."""
    options = [
        click.option("--task", default=None, help="Reasoning task (see `skillmix tasks`)."),
        click.option(
            "--task-config",
            type=click.Path(dir_okay=False),
            default=None,
            help="A task defined in your own YAML file (dataset, keys, template, handler).",
        ),
        click.option(
            "--dataset-file",
            type=click.Path(dir_okay=False),
            default=None,
            help="The task's rows from a local JSONL or Parquet file (offline use, tests).",
        ),
        click.option("--dataset-revision", default=None, help="Hub revision of the dataset."),
        click.option(
            "--n",
            "samples",
            type=click.IntRange(1, 1024),
            default=1,
            show_default=True,
            help="Generations per problem (pass@k and maj@k for k up to N).",
        ),
        click.option(
            "--result-dir",
            type=click.Path(file_okay=False),
            default="results",
            show_default=True,
            help="Where the run folder (SkyThought's layout) goes.",
        ),
        click.option("--system-prompt", default=None, help="The system prompt (text)."),
        click.option(
            "--system-prompt-name",
            default=None,
            help="One of SkyThought's named system prompts (qwen_cot, prime_rl, skythought); "
            "without either flag, the model's default in SkyThought's table, if any.",
        ),
        click.option(
            "--assistant-prefill", default=None, help="The start of the assistant's reply."
        ),
        click.option("--as-test", is_flag=True, help="A quick check on the first 5 problems."),
        scorer_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def wants_task(kwargs: dict[str, Any]) -> bool:
    return bool(kwargs.get("task") or kwargs.get("task_config"))


def task_run_from(kwargs: dict[str, Any]) -> TaskRun:
    """The task run the flags describe; SKILL-MIX-only flags are refused by name."""
    # deferred: the task executor loads sympy and the mock server (~2 s); SKILL-MIX runs skip it
    from skillmix.executors.reasoning import TaskRun

    if kwargs.get("file"):
        raise SkillmixError("--task runs take their settings from flags, not -f")
    for key, flag in (("ks", "--k"), ("grader", "--grader"), ("grader_args", "--grader-args")):
        if kwargs.get(key):
            raise SkillmixError(f"{flag} is a SKILL-MIX flag; a --task run has no grader or k")
    models: tuple[str, ...] = tuple(kwargs.get("models") or ())
    if len(models) != 1:
        raise SkillmixError("--task runs one model: give --model once")
    task = resolve_task(kwargs.get("task"), kwargs.get("task_config"))
    model = models[0]
    spec: dict[str, Any] = {"name": "model", "backend": kwargs["backend"], "model": model}
    if kwargs.get("base_url"):
        spec["base_url"] = kwargs["base_url"]
    spec = apply_sampling_params(
        apply_backend_args(spec, kwargs["backend_args"]), kwargs["sampling_params"]
    )
    try:
        model_spec = ModelSpec.model_validate(spec, strict=False)
    except ValueError as exc:
        raise SkillmixError(f"--model {model}: {str(exc).splitlines()[-1].strip()}") from None
    temperature = model_spec.sampling.temperature
    count = effective_samples(temperature if temperature is not None else 1.0, kwargs["samples"])
    if count.warning:
        warn(count.warning)
    prompts = model_prompts(
        model, text=kwargs.get("system_prompt"), name=kwargs.get("system_prompt_name")
    )
    return TaskRun(
        task=task,
        model=model_spec,
        n=count.n,
        seed=kwargs["seed"],
        result_dir=Path(kwargs["result_dir"]),
        system_prompt=prompts.system_prompt,
        user_template=prompts.user_template,
        assistant_prefill=kwargs.get("assistant_prefill"),
        dataset_file=kwargs.get("dataset_file"),
        revision=kwargs.get("dataset_revision"),
        as_test=kwargs.get("as_test", False),
        scorer=kwargs.get("scorer") or "skythought",
        use_cache=not kwargs.get("no_cache"),
        resume=kwargs["resume"],
        overwrite=kwargs["overwrite"],
    )


def run_task(kwargs: dict[str, Any], fmt: str, *, score: bool = True) -> TaskOutcome:
    """``evaluate --task`` (or ``generate --task``, ``score=False``): run it, print the
    summary."""
    from skillmix.executors.reasoning import evaluate_task  # deferred: see task_run_from

    run = task_run_from(kwargs)
    resume_from = kwargs.get("resume_from")
    if resume_from or not score:
        run = replace(run, score=score, resume_from=Path(resume_from) if resume_from else None)
    outcome = evaluate_task(run, say=info)
    if fmt == "json":
        echo_json(outcome.summary)
    elif outcome.metrics is not None:
        stdout_console().print(summary_table(outcome.metrics))
    info(f"results: {outcome.run_dir}")
    if outcome.metrics is None:
        task = kwargs.get("task") or f"--task-config {kwargs.get('task_config')}"
        info(f"score it: skillmix score --task {task} --run-dir {outcome.run_dir}")
    if outcome.failed:
        raise SkillmixError(
            f"{outcome.failed} problems failed for good; their results are missing",
            hint="fix the cause, then run the same command with --resume",
        )
    return outcome


def rescore_task(
    task: str | None,
    task_config: str | None,
    run_dir: str,
    ids: list[str] | None,
    fmt: str,
    keep_correct: str | None = None,
    scorer: str = "skythought",
) -> None:
    """``score --task T --run-dir DIR``: score the folder again, print the new summary; with
    ``keep_correct``, also write the correct responses as training data (reject sampling)."""
    # deferred: see task_run_from
    from skillmix.executors.reasoning import export_correct, rescore

    config = resolve_task(task, task_config)
    folder = Path(run_dir)
    if not folder.is_dir():
        raise SkillmixError(f"--run-dir {run_dir}: no such folder")
    if keep_correct and Path(keep_correct).exists():
        raise SkillmixError(f"--keep-correct {keep_correct}: exists; nothing is overwritten")
    chosen: Scorer = "math_verify" if scorer == "math_verify" else "skythought"
    outcome = rescore(config, folder, ids=ids, scorer=chosen, say=info)
    if keep_correct:
        counts = export_correct(read_results(folder), Path(keep_correct))
        per_source = ", ".join(f"{source} {n}" for source, n in counts.items()) or "none"
        info(f"kept {sum(counts.values())} correct responses in {keep_correct} ({per_source})")
    if fmt == "json":
        echo_json(outcome.summary)
    else:
        stdout_console().print(summary_table(outcome.metrics))


def summary_table(m: ReasoningMetrics | None) -> Table:
    if m is None:
        return Table(title="not scored yet")
    table = Table(title=f"{m.task}: {m.model} ({m.problems} problems x {m.n})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% interval", justify="right")

    def add(name: str, value: float, ci: tuple[float, float] | None) -> None:
        interval = f"{ci[0] * 100:.1f} - {ci[1] * 100:.1f}" if ci else "-"
        table.add_row(name, f"{value * 100:.1f}", interval)

    add("accuracy", m.accuracy.value, m.accuracy.ci95)
    for k, e in m.pass_at_k.items():
        add(f"pass@{k}", e.value, e.ci95)
    for k, e in m.maj_at_k.items():
        add(f"maj@{k}", e.value, e.ci95)
    return table


@click.command("tasks")
@format_option(("table", "json"))
def tasks_cmd(fmt: str) -> None:
    """List the reasoning tasks: each dataset's id, subset, split and size."""
    tasks = builtin_tasks().values()
    if fmt == "json":
        echo_json(
            [
                {
                    "task": t.name,
                    "dataset": t.dataset_path,
                    "subset": t.dataset_subset,
                    "split": t.dataset_split,
                    "size": t.size,
                    "gated": t.gated,
                }
                for t in tasks
            ]
        )
        return
    table = Table()
    for column in ("task", "dataset", "subset", "split", "size"):
        table.add_column(column)
    for t in tasks:
        subsets = ", ".join(s for s in t.subsets if s) or "-"
        gated = " (gated)" if t.gated else ""
        size = str(t.size) if t.size else "?"
        table.add_row(t.name, f"{t.dataset_path}{gated}", subsets, t.dataset_split, size)
    stdout_console().print(table)


@click.command("leaderboard")
@click.argument("result_dir", type=click.Path(file_okay=False))
@out_option("Write report.md there.")
@format_option(("table", "json", "md"))
def leaderboard_cmd(result_dir: str, out: str | None, fmt: str) -> None:
    """Reasoning tasks side by side: every run folder under RESULT_DIR, per task and model."""
    from skillmix.executors.reasoning import load_task_runs  # deferred: see task_run_from

    runs = load_task_runs(Path(result_dir))
    boards = task_boards(runs)
    markdown = boards_markdown(boards)
    if out:
        files = {"report.md": markdown.encode(), "report.html": tasks_html(boards, runs).encode()}
        write_files(out, files)
        info(f"wrote {Path(out) / 'report.html'} and report.md")
    if fmt == "json":
        echo_json(boards_json(boards))
    elif fmt == "md":
        click.echo(markdown, nl=False)
    else:
        for table in boards_tables(boards):
            stdout_console().print(table)
