"""The pod executor: what a Kubernetes container runs for one unit of a run (``skillmix task
...`` parses its flags and calls these). Each reads the run's ``run.json`` from the store, so a
pod needs only the run URI, its unit and its credentials (from the environment). Progress and
outcomes are lines handed to ``say`` (stderr in a pod)."""

from __future__ import annotations

import asyncio
import atexit
import re
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from skillmix import settings
from skillmix.artifacts import Summary
from skillmix.backends.client import ChatClient
from skillmix.backends.factory import make_client
from skillmix.config import ModelSpec
from skillmix.errors import RunFailedError, SkillmixError, TimeLimitReached
from skillmix.executors.experiment_tasks import aggregate_tasks, answer_mock
from skillmix.k8s.coordinator import Coordinator, Timing
from skillmix.k8s.mirror import ClusterApi
from skillmix.pipeline.context import RunContext, open_run, parent_store
from skillmix.pipeline.generate import run_generate_units
from skillmix.pipeline.grade import run_grade
from skillmix.pipeline.model_server import wait_for_model_server
from skillmix.pipeline.plan import plan_tasks
from skillmix.pipeline.task_units import (
    TaskUnit,
    frozen_problems,
    pending_task_units,
    run_task_unit,
)
from skillmix.pipeline.units import UnitResult, pending_units
from skillmix.report.build import run_aggregate_task
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore
from skillmix.store.uri import open_store
from skillmix.vocab import Phase, Unit

Say = Callable[[str], None]
T = TypeVar("T")


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")


class PodLog:
    """In a pod (``SKILLMIX_POD_NAME`` set): a copy of this process's stderr, uploaded to the
    run's ``logs/pods/<pod name>.log`` at exit (the final error line included), so that the
    log outlives the pod and the Job's ``ttlSecondsAfterFinished``. Bounded: the first and
    the last ``keep`` characters are kept."""

    def __init__(self, pod: str, keep: int = 2_000_000) -> None:
        self.pod = pod
        self.keep = keep
        self.head: list[str] = []
        self.head_size = 0
        self.tail: list[str] = []
        self.tail_size = 0
        self.dropped = 0
        self.run_uri: str | None = None
        self.stream: Any = None

    def write(self, text: str | bytes) -> None:
        if isinstance(text, bytes):  # some writers hand the text stream bytes
            text = text.decode("utf-8", "replace")
        if self.head_size < self.keep:
            self.head.append(text)
            self.head_size += len(text)
            return
        self.tail.append(text)
        self.tail_size += len(text)
        while self.tail_size > self.keep and len(self.tail) > 1:
            gone = self.tail.pop(0)
            self.tail_size -= len(gone)
            self.dropped += len(gone)

    def text(self) -> str:
        cut = f"[... {self.dropped} characters left out ...]\n" if self.dropped else ""
        return "".join(self.head) + cut + "".join(self.tail)

    def install(self) -> None:
        """Tee ``sys.stderr`` (what click.echo(err=True), logging and tracebacks write)."""

        original = sys.stderr
        log = self

        class Tee:
            def write(self, text: str) -> int:
                log.write(text)
                return original.write(text)

            def writelines(self, lines: Any) -> None:
                for line in lines:
                    self.write(line)

            def flush(self) -> None:
                original.flush()

            def __getattr__(self, name: str) -> Any:
                return getattr(original, name)

        self.stream = original
        sys.stderr = Tee()
        atexit.register(self.upload)

    def upload(self) -> None:
        """Write the log to the store; a failure is one line, never a changed exit code."""
        if self.run_uri is None:
            return

        try:
            open_store(self.run_uri).write_bytes(
                RunLayout.pod_log(self.pod), self.text().encode("utf-8", "replace")
            )
        except Exception as exc:  # the store may be what failed the task
            stream = self.stream or sys.__stderr__
            if stream is not None:
                stream.write(f"warning: could not upload this pod's log: {exc}\n")


class LogProgress:
    """Progress for logs: one stderr line per phase at most every ``interval`` seconds."""

    def __init__(self, label: str, interval: float = 15.0, say: Say = _stderr) -> None:
        self.label = label
        self.say = say
        self.interval = interval
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.last = 0.0

    def add_total(self, phase: str, n: int) -> None:
        self.totals[phase] = self.totals.get(phase, 0) + n

    def advance(self, phase: str, n: int = 1) -> None:
        self.done[phase] = self.done.get(phase, 0) + n
        now = time.monotonic()
        if now - self.last >= self.interval or self.done[phase] >= self.totals.get(phase, 0):
            self.last = now
            self.say(f"{self.label}: {phase} {self.done[phase]}/{self.totals.get(phase, 0)}")


def await_model(
    base_url: str | None,
    timeout: float,
    *,
    model_log: str | None = None,
    model: str = "",
    limit: float = 0,
    say: Say = _stderr,
) -> None:
    """The model sidecar's /health within the load budget (see ``--model-load-timeout``);
    with ``model_log`` a permanent failure to start ends the wait at once and a transient one
    gets one more budget (see ``--model-log``), the whole wait within ``limit`` (0 = none)."""
    if timeout <= 0 or not base_url:
        return

    wait_for_model_server(
        base_url,
        timeout,
        say=say,
        model_log=model_log,
        model=model,
        limit=limit,
    )


def within(seconds: float, work: Any, limit: float) -> Any:
    """``asyncio.run(work)`` bounded by the ``seconds`` left of the task's time ``limit``
    (0 = no bound): TimeLimitReached (exit 4)."""

    if seconds <= 0:
        return asyncio.run(work)

    async def bounded() -> Any:
        try:
            return await asyncio.wait_for(work, seconds)
        except TimeoutError:
            raise TimeLimitReached(
                f"time limit of {limit:g}s reached; the parts written so far are kept",
                hint="relaunch the run to resume, or raise deadlines.generation_seconds",
            ) from None

    return asyncio.run(bounded())


def serve_then_run(
    options: GenerateOptions, model: str, main: Callable[[], Coroutine[Any, Any, T]], say: Say
) -> T:
    """A generation client's life: the model server's /health within the load budget (and
    the time limit), then ``main()`` within what is left of the time limit (exit 4 past it)."""
    time_limit, start = options.time_limit, time.monotonic()
    load = options.model_load_timeout
    await_model(
        options.base_url,
        min(load, time_limit) if time_limit else load,
        model_log=options.model_log,
        model=model,
        limit=time_limit,
        say=say,
    )
    left = max(0.001, time_limit - (time.monotonic() - start)) if time_limit else 0
    result: T = within(left, main(), time_limit)
    return result


def pod_client(
    spec: ModelSpec, base_url: str | None, run_uri: str, seed: int, share: int
) -> ChatClient:
    """This pod's client: the spec's budgets divided by the ``share`` pods that use them."""

    return make_client(
        spec, parent_store(run_uri), base_url=base_url, seed=seed, budget_share=share
    )


def pod_shard(shard: int | None, shards: int) -> int:
    if shard is None:
        try:
            shard = settings.completion_index()
        except ValueError as exc:
            raise SkillmixError(
                str(exc), hint="give --shard, or run it in an Indexed Job"
            ) from None
    if not 0 <= shard < shards:
        raise SkillmixError(f"shard {shard} is outside 0..{shards - 1}")
    return shard


def parse_units(student: str, text: str) -> list[Unit]:
    """``2:1,3:1`` into units of ``student``; malformed or repeated pairs are errors."""

    out: list[Unit] = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*([0-9]+):([0-9]+)\s*", item)
        if not m:
            raise SkillmixError(f"--units: expected K:R pairs separated by commas, got {item!r}")
        unit = Unit(student, int(m[1]), int(m[2]))
        if unit in out:
            raise SkillmixError(f"--units: {m[1]}:{m[2]} is given twice")
        out.append(unit)
    return out


def relaunched_units(run: RunStore, phase: Phase, attempt: int) -> list[Unit]:
    """The units launch ``attempt`` (re)does in ``phase``, from its record in the store."""

    if attempt <= 0:
        return []
    record = run.read_launch_record(attempt)
    if record is None:
        raise SkillmixError(f"{run.uri}: no record of launch attempt {attempt}")
    return record.units(phase)


def wait_for_phase(
    run: RunStore,
    ctx: RunContext,
    phase: Phase,
    units: Sequence[Unit],
    timeout: float,
    interval: float,
    attempt: int = 0,
    say: Say = _stderr,
) -> None:
    """Block until ``units`` have their ``phase`` manifests (those launch ``attempt`` redoes:
    from that attempt), saying what is pending; RunFailedError after ``timeout`` seconds."""

    again = relaunched_units(run, phase, attempt)
    still = partial(pending_units, run, ctx, phase, relaunched=again, attempt=attempt)
    deadline = time.monotonic() + timeout
    pending = still(units)
    while pending:
        if time.monotonic() >= deadline:
            raise RunFailedError(
                f"timed out after {timeout:g}s waiting for {phase} of {len(pending)} units (e.g. {pending[0]})"
            )
        say(f"waiting for {phase}: {len(pending)} of {len(units)} units pending")
        time.sleep(min(interval, max(0.05, deadline - time.monotonic())))
        pending = still(pending)
    say(f"{phase} finished for {len(units)} units")


def check_unit(ctx: RunContext, k: int, g: int) -> None:
    """The unit is in the run's plan (k in ks, round in 1..generation_rounds)."""
    e = ctx.experiment
    if k not in e.ks:
        raise SkillmixError(f"k={k} is not in this run (ks: {e.ks})")
    if not 1 <= g <= e.generation_rounds:
        raise SkillmixError(f"round {g} is not in this run (1..{e.generation_rounds})")


def report_unit(result: UnitResult, verb: str, say: Say = _stderr) -> None:
    """One line per unit as it ends (and each repair, and the first failures)."""
    for note in result.repaired:
        say(f"repaired: {note}")
    if result.skipped:
        say(f"{result.prefix}: already finished, nothing to do")
        return
    say(f"{result.prefix}: {verb} {result.records} records, {result.failed} failed")
    for line in result.errors[:20]:
        say(f"  failed: {line}")
    sys.stderr.flush()


@dataclass(frozen=True)
class GenerateOptions:
    """The flags of ``skillmix task generate`` beyond the run, the student and its units."""

    shard: int | None
    shards: int
    base_url: str | None
    budget_share: int | None
    model_load_timeout: float
    model_log: str | None
    time_limit: float
    attempt: int


@dataclass(frozen=True)
class GradeOptions:
    """The flags of ``skillmix task grade`` beyond the run and the unit."""

    base_url: str | None
    budget_share: int
    wait_timeout: float
    model_load_timeout: float
    attempt: int


def generate(
    run_uri: str,
    student: str,
    units: list[Unit],
    options: GenerateOptions,
    say: Say = _stderr,
) -> list[UnitResult]:
    """Generate ``units`` of ``student`` in turn (one shard of each), reporting each as it
    ends. The shards of a unit run at once and share the student's budget: each takes
    1/``shards`` of it unless ``budget_share`` says otherwise."""
    shard, shards, base_url = options.shard, options.shards, options.base_url
    attempt = options.attempt
    run, ctx = open_run(run_uri)
    spec = ctx.experiment.student(student)
    for unit in units:
        check_unit(ctx, unit.k, unit.round)
    index = pod_shard(shard, shards)
    if shards != ctx.shards(student):
        raise SkillmixError(
            f"--shards {shards} does not match the run's plan ({ctx.shards(student)} for {student})"
        )

    async def main() -> list[UnitResult]:
        share = shards if options.budget_share is None else options.budget_share
        client = pod_client(spec, base_url, run_uri, ctx.experiment.seed, share)
        try:
            out = []
            for unit in units:
                label = f"{student} k={unit.k} r{unit.round} shard {index}"
                [result] = await run_generate_units(
                    ctx,
                    run,
                    client,
                    student,
                    [unit],
                    shard=index,
                    shards=shards,
                    attempt=attempt,
                    progress=LogProgress(label, say=say),
                )
                report_unit(result, "generated", say)  # as each unit ends, not all at the end
                out.append(result)
            return out
        finally:
            await client.close()

    results: list[UnitResult] = serve_then_run(options, spec.vllm.model or spec.model, main, say)
    return results


def grade(run_uri: str, unit: Unit, options: GradeOptions, say: Say = _stderr) -> UnitResult:
    """Grade one unit (all grading rounds), first waiting up to ``wait_timeout`` seconds for
    its generations (0 = do not wait)."""
    base_url, wait_timeout, attempt = options.base_url, options.wait_timeout, options.attempt
    run, ctx = open_run(run_uri)
    check_unit(ctx, unit.k, unit.round)
    ctx.experiment.student(unit.student)
    if wait_timeout > 0:
        wait_for_phase(run, ctx, "generate", [unit], wait_timeout, 5.0, attempt, say)
    await_model(base_url, options.model_load_timeout, say=say)

    async def main() -> UnitResult:
        client = pod_client(
            ctx.experiment.grader, base_url, run_uri, ctx.experiment.seed, options.budget_share
        )
        try:
            return await run_grade(
                ctx,
                run,
                client,
                unit,
                attempt=attempt,
                progress=LogProgress(f"grade {unit.student} k={unit.k} r{unit.round}", say=say),
            )
        finally:
            await client.close()

    result = asyncio.run(main())
    report_unit(result, "graded", say)
    return result


def aggregate(run_uri: str, *, wait_timeout: float, attempt: int, say: Say = _stderr) -> Summary:
    """Metrics and the run's report/ folder, first waiting up to ``wait_timeout`` seconds for
    every grading unit (and every reasoning-task unit); the tasks scored into report/tasks/."""
    run, ctx = open_run(run_uri)
    if wait_timeout > 0:
        started = time.monotonic()
        units = plan_tasks(ctx.experiment).units
        wait_for_phase(run, ctx, "grade", units, wait_timeout, 10.0, attempt, say)
        left = max(1.0, wait_timeout - (time.monotonic() - started))
        wait_for_tasks(run, ctx, left, 10.0, attempt, say)
    summary, _metrics = run_aggregate_task(run, ctx)
    for line in summary.warnings:
        say(f"warning: {line}")
    say(f"aggregated {len(summary.metrics.rows)} rows into {run.uri.rstrip('/')}/report/")
    if ctx.experiment.tasks:
        tasks = aggregate_tasks(ctx, run, sharded=ctx.sharded)
        for name in tasks.unfinished:
            say(f"warning: task {name}: a shard has no manifest; left out of report/tasks/")
        say(f"scored {len(tasks.runs)} task runs into {run.uri.rstrip('/')}/report/tasks/")
    return summary


def wait_for_tasks(
    run: RunStore,
    ctx: RunContext,
    timeout: float,
    interval: float,
    attempt: int = 0,
    say: Say = _stderr,
) -> None:
    """Block until every reasoning-task unit has its manifest (see ``wait_for_phase``)."""
    if not ctx.experiment.tasks:
        return
    deadline = time.monotonic() + timeout
    while pending := pending_task_units(run, ctx.experiment, sharded=ctx.sharded, attempt=attempt):
        if time.monotonic() >= deadline:
            raise RunFailedError(
                f"timed out after {timeout:g}s waiting for {len(pending)} task units "
                f"(e.g. {pending[0].prefix})"
            )
        say(f"waiting for tasks: {len(pending)} units pending")
        time.sleep(min(interval, max(0.05, deadline - time.monotonic())))
    say("tasks finished")


def reason(
    run_uri: str, task: str, student: str, options: GenerateOptions, say: Say = _stderr
) -> UnitResult:
    """Ask one shard of a reasoning task's problems (``skillmix task reason``): a mock student
    is answered by a mock given the task's answer key, started here; the shards share the
    student's budget as generation shards do."""
    run, ctx = open_run(run_uri)
    spec_task = next((t for t in ctx.experiment.tasks if t.name == task), None)
    if spec_task is None:
        known = ", ".join(t.name for t in ctx.experiment.tasks) or "none"
        raise SkillmixError(f"--task {task}: not a task of this run (tasks: {known})")
    spec = ctx.experiment.student(student)
    shards = options.shards
    if shards != spec_task.shards:
        raise SkillmixError(f"--shards {shards} does not match the run's plan ({spec_task.shards})")
    unit = TaskUnit(task, student, shard=pod_shard(options.shard, shards), shards=shards)
    seed = ctx.experiment.seed
    problems = frozen_problems(run, spec_task, seed)

    async def main() -> UnitResult:
        with answer_mock(problems, [spec], seed) as mock_url:
            share = shards if options.budget_share is None else options.budget_share
            client = pod_client(spec, options.base_url or mock_url or None, run_uri, seed, share)
            progress = LogProgress(f"{task} {student} shard {unit.shard}", say=say)
            try:
                return await run_task_unit(
                    run, client, unit, problems, spec, attempt=options.attempt, progress=progress
                )
            finally:
                await client.close()

    result: UnitResult = serve_then_run(options, spec.vllm.model or spec.model, main, say)
    report_unit(result, "asked", say)
    return result


def wait(
    run_uri: str,
    phase: Phase,
    *,
    student: str | None,
    k: int | None,
    g: int | None,
    timeout: float,
    interval: float,
    attempt: int,
    say: Say = _stderr,
) -> None:
    """Block until the matching units of the plan have their ``phase`` manifests."""
    run, ctx = open_run(run_uri)
    units = [
        u
        for u in plan_tasks(ctx.experiment).units
        if (student is None or u[0] == student)
        and (k is None or u[1] == k)
        and (g is None or u[2] == g)
    ]
    if not units:
        raise SkillmixError("no units match --student/--k/--round in this run")
    started = time.monotonic()
    wait_for_phase(run, ctx, phase, units, timeout, interval, attempt, say)
    if phase == "grade" and student is None and k is None and g is None:  # the aggregation's
        left = max(1.0, timeout - (time.monotonic() - started))
        wait_for_tasks(run, ctx, left, interval, attempt, say)


def coordinate(
    run_uri: str,
    attempt: int,
    *,
    api: ClusterApi,
    namespace: str,
    interval: float,
    timeout: float,
    timing: Timing,
    say: Say = _stderr,
) -> None:
    """Coordinate one launch attempt from inside the cluster until every Job has finished
    (see :class:`skillmix.k8s.coordinator.Coordinator`)."""
    run, ctx = open_run(run_uri)
    say(f"coordinating run {ctx.run_id} attempt {attempt} in namespace {namespace}")
    Coordinator(run, ctx, attempt, api=api, timing=timing, say=say).run_until_done(
        interval=interval, timeout=timeout
    )
