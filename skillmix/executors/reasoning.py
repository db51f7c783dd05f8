"""The local executor of a reasoning task (``skillmix evaluate --task math500 ...``): every
problem asked ``n`` times, each answer scored as it arrives (under a per-answer time limit),
the run written in SkyThought's layout as it goes, then the summary with accuracy, pass@k and
maj@k and their intervals. The built-in mock backend is handed the answer key, so it answers
right at the model's quality and the numbers can be checked."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from skillmix.backends.base import BackendError
from skillmix.backends.client import ChatClient
from skillmix.backends.factory import make_client
from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_reasoning import problem_key
from skillmix.backends.mock_server import MockServer
from skillmix.config import ModelSpec
from skillmix.errors import SkillmixError
from skillmix.method.reasoning_metrics import ReasoningMetrics
from skillmix.pipeline.scoring import Kind, Verdict, math_verify_available, score_responses
from skillmix.report.task_board import TaskRunData
from skillmix.store.local import LocalStore
from skillmix.tasks.config import TaskConfig
from skillmix.tasks.dataset import load_problems
from skillmix.tasks.handlers import (
    Problem,
    ScoreKind,
    conversation,
    prepare,
    reference_of,
    score_kind,
)
from skillmix.tasks.results import (
    results_entry,
    summarize,
    task_configuration,
    usage_summary,
)
from skillmix.tasks.rundir import (
    RESULTS_JOURNAL,
    RESULTS_JSON,
    SUMMARY_JSON,
    RunDir,
    read_results,
    run_dir_name,
    write_json,
)

Say = Callable[[str], None]
Scorer = Literal["skythought", "math_verify"]  # math_verify: offered by name, never the default


def scoring_kind(kind: ScoreKind, scorer: Scorer) -> Kind:
    """What scores a problem: SkyThought's rules, or math-verify for math when chosen."""
    if scorer == "skythought":
        return kind
    if kind != "math":
        raise SkillmixError(
            "--scorer math_verify scores math answers; this task is multiple choice"
        )
    if not math_verify_available():
        raise SkillmixError(
            "--scorer math_verify: math-verify is not installed",
            hint="pip install 'skillmix[math-verify]'",
        )
    return "math_verify"


AS_TEST_PROBLEMS = 5  # --as-test: SkyThought's quick check runs a handful of problems
FLUSH_SECONDS = 2.0


@dataclass(frozen=True)
class TaskRun:
    """What to run: one model on one task, ``n`` generations per problem."""

    task: TaskConfig
    model: ModelSpec
    n: int
    seed: int
    result_dir: Path
    system_prompt: str | None = None
    assistant_prefill: str | None = None
    user_template: str | None = None
    dataset_file: str | None = None
    revision: str | None = None
    as_test: bool = False
    resume: bool = False
    overwrite: bool = False
    score: bool = True  # False: `generate` (score later with `skillmix score --task`)
    scorer: Scorer = "skythought"
    use_cache: bool = True  # False: --no-cache
    resume_from: Path | None = None  # continue this run folder (its settings must match)
    answer_seconds: float = 5.0  # each answer's scoring time limit


@dataclass
class TaskOutcome:
    run_dir: Path
    metrics: ReasoningMetrics | None  # None until scored
    summary: dict[str, Any]
    failed: int  # problems whose request failed for good (not in the results)


def configuration(run: TaskRun, dataset: str, revision: str) -> dict[str, Any]:
    """What determines the results: hashed into the folder name, kept in summary.json."""
    return task_configuration(
        run.task.name,
        run.model,
        n=run.n,
        seed=run.seed,
        dataset=dataset,
        revision=revision,
        system_prompt=run.system_prompt,
        user_template=run.user_template,
        assistant_prefill=run.assistant_prefill,
        as_test=run.as_test,
        scorer=run.scorer,
    )


def evaluate_task(run: TaskRun, *, say: Say) -> TaskOutcome:
    """Run ``run`` to the end (finished problems of a resumed run are not asked again)."""
    scoring_kind(score_kind(run.task), run.scorer)  # a scorer that cannot score it: before any file
    problems = load_problems(run.task, dataset_file=run.dataset_file, revision=run.revision)
    rows = problems.rows[:AS_TEST_PROBLEMS] if run.as_test else problems.rows
    if run.task.size and not run.dataset_file and len(rows) != run.task.size and not run.as_test:
        say(f"warning: task {run.task.name} has {len(rows)} problems; published: {run.task.size}")
    prepared = [prepare(run.task, row, run.seed) for row in rows]
    config = configuration(run, problems.source, problems.revision)
    out = _open_folder(run, config)
    todo = [p for p in prepared if p.index not in out.results]
    say(f"{run.task.name}: {len(prepared)} problems x {run.n} ({len(todo)} to ask) -> {out.path}")
    with _mock_server(run, prepared) as mock_url:
        client = make_client(
            run.model,
            LocalStore(out.path),
            mock_url=mock_url,
            seed=run.seed,
            use_cache=run.use_cache,
        )
        failed = asyncio.run(_ask_all(run, client, todo, out, say))
    wanted = {p.index: p for p in prepared}
    if run.score:  # problems a `generate` left unscored
        _score_unscored(out, wanted, run.answer_seconds, run.scorer)
    out.flush()
    results = {i: e for i, e in out.results.items() if i in wanted}
    if not run.score:
        summary = _unscored_summary(results, config)
        write_json(out.path / SUMMARY_JSON, summary)
        return TaskOutcome(out.path, None, summary, failed)
    metrics, summary = summarize(
        results,
        config,
        model=run.model.model,
        task=run.task.name,
        seed=run.seed,
        planned=len(prepared),
    )
    write_json(out.path / SUMMARY_JSON, summary)
    return TaskOutcome(out.path, metrics, summary, failed)


def _open_folder(run: TaskRun, config: dict[str, Any]) -> RunDir:
    """The run's folder: named by its settings, or ``resume_from`` when they match its own."""
    if run.resume_from is None:
        name = run_dir_name(run.model.model, run.task.name, config)
        return RunDir.open(run.result_dir / name, resume=run.resume, overwrite=run.overwrite)
    folder = run.resume_from
    if not (folder / RESULTS_JSON).exists() and not (folder / RESULTS_JOURNAL).exists():
        raise SkillmixError(f"--resume-from {folder}: no results.json there to continue")
    stored = _read_summary(folder).get("configuration", {})
    differ = [k for k, v in config.items() if k in stored and stored[k] != v]
    if differ:
        raise SkillmixError(
            f"--resume-from {folder}: the run was made with another {differ[0]} "
            f"({stored[differ[0]]!r}, not {config[differ[0]]!r})",
            hint="give the same flags as the run had, or start a new one",
        )
    return RunDir.open(folder, resume=True, overwrite=False)


def _score_unscored(
    out: RunDir, problems: dict[str, Problem], seconds: float, scorer: Scorer
) -> None:
    for index, entry in out.results.items():
        problem = problems.get(index)
        if problem is None or all(r.get("correctness") is not None for r in entry["responses"]):
            continue
        _score_in_place(entry, scoring_kind(problem.kind, scorer), problem.reference, seconds)


def _score_in_place(entry: dict[str, Any], kind: Kind, reference: str, seconds: float) -> None:
    """Each response of a results.json entry judged again: correctness, reason, answer."""
    items = [(kind, r["content"], reference) for r in entry["responses"]]
    for r, v in zip(entry["responses"], score_responses(items, seconds), strict=True):
        r.update(correctness=v.correct, reason=v.reason, answer=v.extracted)


def _unscored_summary(results: dict[str, dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """summary.json of a `generate`: its settings and token use; accuracy once scored."""
    return {
        **usage_summary(results, config),
        "accuracy": None,
        "pass_at_k": None,
    }


@contextmanager
def _mock_server(run: TaskRun, problems: list[Problem]) -> Iterator[str | None]:
    """The built-in mock server for a mock model without a base URL, with the answer key."""
    spec = run.model
    if spec.backend != "mock" or spec.base_url:
        yield None
        return
    template = run.user_template or "{}"
    answers = {problem_key(template.format(p.user)): p.reference for p in problems}
    quality = float(spec.quality if spec.quality is not None else 0.7)
    server = MockServer(
        MockServerConfig(models={spec.model: quality}, seed=run.seed, answers=answers)
    )
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()


async def _ask_all(
    run: TaskRun, client: ChatClient, todo: list[Problem], out: RunDir, say: Say
) -> int:
    """Ask every problem (as many at once as the client's concurrency allows), scoring and
    recording each as it ends; returns how many failed for good."""
    failed = 0
    last_flush = time.monotonic()
    done = 0
    scoring = asyncio.Semaphore(max(1, len(os.sched_getaffinity(0))))

    async def one(problem: Problem) -> None:
        nonlocal failed, last_flush, done
        messages = conversation(
            problem,
            system_prompt=run.system_prompt,
            assistant_prefill=run.assistant_prefill,
            user_template=run.user_template,
        )
        try:
            result = await client.chat(messages, n=run.n, sample=f"{run.task.name}/{problem.index}")
        except BackendError as exc:
            if exc.fatal:
                raise
            failed += 1
            say(f"problem {problem.index}: failed: {exc}")
            return
        verdicts: list[Verdict | None] = [None] * len(result.texts)
        if run.score:
            kind = scoring_kind(problem.kind, run.scorer)
            items = [(kind, text, problem.reference) for text in result.texts]
            async with scoring:  # at most a core's worth of scorers at once
                scored = await asyncio.to_thread(score_responses, items, run.answer_seconds)
            verdicts = list(scored)
        out.add(problem.index, results_entry(problem, messages, result.texts, verdicts, result))
        done += 1
        if time.monotonic() - last_flush >= FLUSH_SECONDS:
            last_flush = time.monotonic()
            out.flush()
            say(f"{run.task.name}: {done}/{len(todo)} problems")

    try:
        await asyncio.gather(*(one(p) for p in todo))
    finally:
        await client.close()
    return failed


def rescore(
    task: TaskConfig,
    folder: Path,
    *,
    ids: list[str] | None = None,
    answer_seconds: float = 5.0,
    scorer: Scorer = "skythought",
    say: Say,
) -> TaskOutcome:
    """``skillmix score --task T --run-dir DIR``: score a run folder's responses again (written
    by skillmix or by SkyThought), all of them or the problems ``ids``, against the task's
    answer key, and rewrite results.json and summary.json."""
    results = read_results(folder)
    if not results:
        raise SkillmixError(f"{folder}: no results.json with problems to score")
    unknown = sorted(set(ids or []) - set(results))
    if unknown:
        raise SkillmixError(f"--ids: no problem {unknown[0]!r} in {folder}")
    kind = scoring_kind(score_kind(task), scorer)
    for index in ids or list(results):
        entry = results[index]
        _score_in_place(entry, kind, reference_of(task, entry), answer_seconds)
    out = RunDir(folder)
    out.results = results
    out.flush()
    (folder / RESULTS_JOURNAL).unlink(missing_ok=True)  # all of it is in results.json now
    old = _read_summary(folder)
    config = {
        k: v
        for k, v in old.get("configuration", {}).items()
        if k not in ("skillmix_version", "scorer")
    }
    if scorer != "skythought":
        config["scorer"] = scorer
    model = str(config.get("model") or config.get("model_id") or folder.name)
    seed = int(config.get("seed") or 0)
    metrics, summary = summarize(
        results, config, model=model, task=task.name, seed=seed, planned=len(results)
    )
    write_json(folder / SUMMARY_JSON, summary)
    say(f"scored {len(ids or results)} problems of {folder}")
    return TaskOutcome(folder, metrics, summary, 0)


def _read_summary(folder: Path) -> dict[str, Any]:
    path = folder / SUMMARY_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError) as exc:
        raise SkillmixError(f"{path}: cannot read: {exc}") from None
    return data if isinstance(data, dict) else {}


def load_task_runs(result_dir: Path) -> list[TaskRunData]:
    """Every run folder under ``result_dir`` (skillmix's or SkyThought's), its metrics computed
    from its responses (so that models can be paired problem by problem)."""
    if not result_dir.is_dir():
        raise SkillmixError(f"{result_dir}: no such folder")
    runs = []
    for folder in sorted(p for p in result_dir.iterdir() if (p / SUMMARY_JSON).is_file()):
        config = _read_summary(folder).get("configuration", {})
        results = read_results(folder)
        if not results:
            continue
        model = str(config.get("model") or config.get("model_id") or folder.name)
        task = str(config.get("task") or folder.name.rsplit("_", 1)[0])
        metrics, summary = summarize(
            results, config, model=model, task=task, seed=int(config.get("seed") or 0),
            planned=len(results),
        )  # fmt: skip
        tokens = float(summary["avg_completion_tokens"])
        runs.append(TaskRunData(str(folder), metrics, tokens, results))
    if not runs:
        raise SkillmixError(
            f"{result_dir}: no run folder with results (summary.json + results.json)"
        )
    return runs


def export_correct(results: dict[str, dict[str, Any]], path: Path) -> dict[str, int]:
    """Reject sampling (NUMINA): every correct response as a chat-format training example
    (the conversation it answered, then the response), one JSON object per line; returns the
    count per dataset ``source`` ("-" when the rows have none)."""
    counts: dict[str, int] = {}
    lines = []
    for index, entry in results.items():
        asked = entry.get("input_conversation") or [{"role": "user", "content": entry["prompt"]}]
        source = str(entry.get("source") or "-")
        for response in entry["responses"]:
            if response.get("correctness"):
                messages = [*asked, {"role": "assistant", "content": response["content"]}]
                lines.append(json.dumps({"messages": messages, "source": source, "_index": index}))
                counts[source] = counts.get(source, 0) + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return dict(sorted(counts.items()))
