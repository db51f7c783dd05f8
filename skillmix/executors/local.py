"""The local executor: runs a plan's tasks in this process, concurrently, with progress bars.

The tasks are the same functions ``skillmix task ...`` runs inside Kubernetes pods; this
executor only schedules them (each grading unit starts as soon as its generations are done)
and, for the mock backend, starts the built-in mock server on a loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillmix.artifacts import EvaluationRun, Summary
from skillmix.backends.client import (
    ClientStats,
    preflight_endpoint,
    resolve_api_key,
    resolve_endpoint,
)
from skillmix.backends.factory import make_clients
from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_server import MockServer
from skillmix.backends.vllm_server import (
    DEFAULT_HEALTH_TIMEOUT,
    check_local_args,
    find_vllm,
    serving,
)
from skillmix.config import Experiment, ModelSpec, StudentSpec
from skillmix.errors import RunFailedError, SkillmixError
from skillmix.executors.base import options_of
from skillmix.executors.experiment_tasks import TaskReport, aggregate_tasks, run_tasks
from skillmix.executors.progress import RichProgress
from skillmix.pipeline.aggregate import RunMetrics
from skillmix.pipeline.context import RunContext, open_run, parent_store, resolve_context
from skillmix.pipeline.generate import run_generate
from skillmix.pipeline.grade import run_grade
from skillmix.pipeline.plan import plan_tasks
from skillmix.pipeline.task_units import task_unit_complete, task_units
from skillmix.pipeline.units import (
    UnitResult,
    gather_or_cancel,
    shard_prefix,
    unit_complete,
    unit_finished,
)
from skillmix.records import GenerationRecord
from skillmix.report.build import NoFinishedGrades, run_aggregate_task
from skillmix.store.base import ArtifactStore
from skillmix.store.layout import RunLayout
from skillmix.store.local import LocalStore
from skillmix.store.lock import hold_run
from skillmix.store.runs import RunStore
from skillmix.store.uri import open_store
from skillmix.vocab import PHASES, Unit


@dataclass
class RunOutcome:
    run_id: str
    run_uri: str
    metrics: RunMetrics | None = None
    summary: Summary | None = None
    units: list[UnitResult] = field(default_factory=list)
    stats: dict[str, ClientStats] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0
    tasks: TaskReport | None = None  # the experiment's reasoning tasks, once aggregated

    @property
    def failed_records(self) -> int:
        return sum(u.failed for u in self.units)

    @property
    def report_uri(self) -> str:
        return f"{self.run_uri.rstrip('/')}/report"

    @property
    def total_records(self) -> int:
        return sum(u.records for u in self.units)

    def failures_by_model(self) -> dict[tuple[str, str], int]:
        """Records that failed for good, per (phase, model): generation per student,
        grading per grader and student."""
        counts: Counter[tuple[str, str]] = Counter()
        for unit in self.units:
            if not unit.failed:
                continue
            parts = unit.prefix.split("/")
            if parts[0] == RunLayout.GRADES and len(parts) > 2:
                counts[("grading", f"{parts[1]} on {parts[2]}")] += unit.failed
            else:
                counts[("generation", parts[1] if len(parts) > 1 else unit.prefix)] += unit.failed
        return dict(counts)

    def common_error(self) -> tuple[str, int] | None:
        """The most frequent reason of the failed records, and how often it occurred."""
        reasons = Counter(
            _RECORD_LABEL.sub("", error, count=1) for u in self.units for error in u.errors
        )
        return reasons.most_common(1)[0] if reasons else None

    def failure_line(self) -> str:
        """One line: how many records failed, where, and the most common reason."""
        where = "; ".join(
            f"{phase} {model}: {n}"
            for (phase, model), n in sorted(self.failures_by_model().items())
        )
        line = f"{self.failed_records} of {self.total_records} records failed for good ({where})"
        common = self.common_error()
        if common is not None:
            line += f"; most common error ({common[1]}x): {common[0]}"
        return line


# "k=2 r1 g1 #3: " before a record's error in UnitResult.errors
_RECORD_LABEL = re.compile(r"^k=\d+ r\d+(?: g\d+)? #\d+: ")


@contextlib.contextmanager
def mock_backend(experiment: Experiment) -> Iterator[str | None]:
    """Start the built-in mock server when some model uses it without a base_url."""
    specs = [
        s
        for s in [*experiment.students, experiment.grader]
        if s.backend == "mock" and not s.base_url
    ]
    if not specs:
        yield None
        return

    models = {s.model: float(s.quality or 0.0) for s in specs}  # resolved on the spec
    if len({(s.model, s.quality) for s in specs}) != len(models):
        raise SkillmixError("mock models with the same model id must have the same quality")
    server = MockServer(MockServerConfig(models=models, seed=experiment.seed))
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()


async def check_endpoints(specs: list[ModelSpec], mock_url: str | None) -> None:
    """One ``GET /models`` per endpoint and key (not per model: an experiment may have
    thousands of students on one server), a few endpoints at a time."""
    groups: dict[tuple[str, str], list[ModelSpec]] = {}
    for spec in specs:
        groups.setdefault((resolve_endpoint(spec, mock_url), resolve_api_key(spec)), []).append(
            spec
        )
    limit = asyncio.Semaphore(8)

    async def check(url: str, key: str, group: list[ModelSpec]) -> None:
        async with limit:
            await preflight_endpoint(group, url, key)

    await gather_or_cancel([check(url, key, group) for (url, key), group in groups.items()])


def models_with_work(ctx: RunContext, run: RunStore, phases: tuple[str, ...]) -> set[str]:
    """The models a resumed run still asks: students with a generation unit not complete,
    the grader when a grading unit is not (a damaged unit counts as not complete: a resume
    redoes it)."""
    units = plan_tasks(ctx.experiment).units

    def complete(phase: str, unit: Unit) -> bool:
        try:
            return unit_complete(run, ctx, phase, *unit)
        except RunFailedError:
            return False

    needed = set()
    if "generate" in phases:
        needed |= {u.student for u in units if not complete("generate", u)}
        tasks = task_units(ctx.experiment)
        needed |= {t.student for t in tasks if not task_unit_complete(run, t)}
    if "grade" in phases and any(not complete("grade", u) for u in units):
        needed.add(ctx.experiment.grader.name)
    return needed


def prepare_run(
    experiment: Experiment, store_uri: str | None, *, resume: bool, overwrite: bool
) -> tuple[RunContext, ArtifactStore, RunStore, bool]:
    """Resolve inputs and find the run folder; raise before writing on any input problem.
    Returns (context, store root, run store, whether the run folder already exists)."""
    if resume and overwrite:
        raise SkillmixError("--resume and --overwrite exclude each other")
    ctx = resolve_context(experiment)
    root = open_store(store_uri or experiment.store)
    root.check()
    run = RunStore(root.child(ctx.run_id))
    exists = not run.is_empty()
    if exists and not (resume or overwrite):
        raise SkillmixError(
            f"run {ctx.run_id} already exists in {root.uri}",
            hint="pass --resume to continue it or --overwrite to start over",
        )
    try:
        existing = run.read_run() if resume else None
    except SkillmixError as exc:  # a damaged run.json: only starting over gets past it
        raise SkillmixError(
            exc.message, hint=exc.hint or "start over with --overwrite (cached answers are reused)"
        ) from None
    if existing is not None and not isinstance(existing, EvaluationRun):
        raise SkillmixError(f"{run.uri}/run.json: not an evaluation run (kind={existing.kind!r})")
    if existing is not None and existing.run_id != ctx.run_id:
        raise SkillmixError(
            f"{run.uri}/run.json belongs to run {existing.run_id!r}, not {ctx.run_id!r}"
        )
    if existing is not None and existing.sharded:
        raise SkillmixError(
            f"run {ctx.run_id} was launched on Kubernetes (its units are sharded Jobs)",
            hint="resume it with `skillmix launch` on its cluster, or start over with --overwrite",
        )
    if existing is not None and existing.created_at:
        ctx.created_at = existing.created_at  # a resumed run keeps its creation time
    return ctx, root, run, exists


async def execute(
    ctx: RunContext,
    root: ArtifactStore,
    run: RunStore,
    *,
    phases: tuple[str, ...] = PHASES,
    progress_enabled: bool | None = None,
    mock_url: str | None = None,
    students: set[str] | None = None,
    endpoints: dict[str, str] | None = None,
    use_cache: bool = True,
) -> RunOutcome:
    """Run the plan's tasks; the caller has already written run.json and checked endpoints.
    ``students`` limits the units to those students (default: all); ``endpoints`` gives
    models an endpoint by name (a local vLLM server), in place of their spec's."""
    started = time.monotonic()
    plan = plan_tasks(ctx.experiment)
    tasks = [t for t in plan.generate if students is None or t.student in students]
    chosen = [s for s in ctx.experiment.students if students is None or s.name in students]
    specs = _phase_specs(ctx, chosen, phases, endpoints or {})
    # one client per model: locally each model's whole budget (concurrency, rpm, tpm) is its own
    clients = make_clients(specs, root, mock_url, seed=ctx.experiment.seed, use_cache=use_cache)
    outcome = RunOutcome(ctx.run_id, run.uri)
    enabled = sys.stderr.isatty() if progress_enabled is None else progress_enabled
    progress = RichProgress(clients, enabled=enabled)
    progress.roles = {
        "generate": [s.name for s in chosen],
        "grade": [ctx.experiment.grader.name],
    }

    async def unit(task: Any) -> None:
        if "generate" in phases:
            gen = await run_generate(ctx, run, clients[task.student], task.unit, progress=progress)
            outcome.units.append(gen)
        elif not await asyncio.to_thread(
            unit_finished, run, ctx, "generate", task.student, task.k, task.round
        ):
            outcome.missing.append(f"{task.student} k={task.k} r{task.round}")
            return
        if "grade" in phases:
            grader = clients[ctx.experiment.grader.name]
            graded = await run_grade(ctx, run, grader, task.unit, progress=progress)
            outcome.units.append(graded)

    async def ticker() -> None:
        while True:
            progress.refresh_stats()
            await asyncio.sleep(0.5)

    try:
        with progress.running():
            tick = asyncio.create_task(ticker())
            try:
                await gather_or_cancel([unit(t) for t in tasks])
                if "generate" in phases and ctx.experiment.tasks:
                    outcome.units += await run_tasks(
                        ctx, root, run, chosen, clients, use_cache=use_cache, progress=progress
                    )
            finally:
                tick.cancel()
    finally:
        for client in clients.values():
            await client.close()
    outcome.stats = {name: c.stats for name, c in clients.items()}
    if "aggregate" in phases:
        await _aggregate(ctx, run, outcome)
        if ctx.experiment.tasks:
            outcome.tasks = await asyncio.to_thread(aggregate_tasks, ctx, run)
    outcome.seconds = time.monotonic() - started
    return outcome


def _phase_specs(
    ctx: RunContext, chosen: list[StudentSpec], phases: tuple[str, ...], endpoints: dict[str, str]
) -> list[ModelSpec]:
    """The models the phases ask (the chosen students to generate, the grader to grade), each
    given its endpoint from ``endpoints`` where named (a local vLLM server)."""
    specs: list[ModelSpec] = [
        *(chosen if "generate" in phases else []),
        *([ctx.experiment.grader] if "grade" in phases else []),
    ]
    return [
        s.model_copy(update={"base_url": endpoints[s.name]}) if s.name in endpoints else s
        for s in specs
    ]


async def _aggregate(ctx: RunContext, run: RunStore, outcome: RunOutcome) -> None:
    """Aggregate into ``outcome``; when nothing was graded because requests failed, say so
    (the failures and their most common cause), not merely that there are no grades yet."""
    try:
        outcome.summary, outcome.metrics = await asyncio.to_thread(run_aggregate_task, run, ctx)
    except NoFinishedGrades:
        if not outcome.failed_records:
            raise
        raise RunFailedError(
            f"run {ctx.run_id}: nothing was graded: {outcome.failure_line()}",
            hint="fix the cause, then retry the failed records with --resume",
        ) from None


@dataclass(frozen=True)
class LocalExecutor:
    """An :class:`~skillmix.executors.base.Executor` that runs the plan in this process
    (``skillmix evaluate`` / ``generate``): see :func:`evaluate` for the options."""

    store_uri: str | None = None
    resume: bool = False
    overwrite: bool = False
    phases: tuple[str, ...] = PHASES
    progress: bool | None = None
    wait_for_lock: float | None = None
    vllm_health_timeout: float = DEFAULT_HEALTH_TIMEOUT
    use_cache: bool = True
    name: str = "local"

    def run(self, experiment: Experiment) -> RunOutcome:
        return evaluate(experiment, **options_of(self))


def evaluate(
    experiment: Experiment,
    *,
    store_uri: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    phases: tuple[str, ...] = PHASES,
    progress: bool | None = None,
    wait_for_lock: float | None = None,
    vllm_health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
    use_cache: bool = True,
) -> RunOutcome:
    """``skillmix evaluate``: check everything, then run the whole plan locally, holding the
    run's lock (another process holding it: one line naming it, or wait ``wait_for_lock`` s).
    ``vllm`` students without a base_url are served by a ``vllm serve`` this process starts
    (see :func:`run_with_local_vllm`), each waited for up to ``vllm_health_timeout`` s."""
    ctx, root, run, exists = prepare_run(experiment, store_uri, resume=resume, overwrite=overwrite)
    local = local_vllm_students(experiment, phases)
    executable = find_vllm() if local else ""
    with mock_backend(experiment) as mock_url:
        served_here = {s.name for s in local}
        specs = [s for s in ctx.model_specs() if s.name not in served_here]
        if exists and resume:  # a model whose units are all done is not asked: need not be up
            needed = models_with_work(ctx, run, phases)
            specs = [s for s in specs if s.name in needed]
        asyncio.run(check_endpoints(specs, mock_url))
        with hold_run(run.store, run_name=ctx.run_id, wait=wait_for_lock) as lock:
            # The run may have changed before we held it (another writer finished it): look again.
            ctx, root, run, exists = prepare_run(
                experiment, store_uri, resume=resume, overwrite=overwrite
            )
            if exists and overwrite:
                delete_run_content(run)
            elif exists:
                run.check_layout()
            run.write_run(ctx.to_run(), overwrite=exists and resume)
            held = HeldRun(ctx, root, run, progress, mock_url, use_cache)
            if local:
                outcome = run_with_local_vllm(
                    held, local, phases, executable=executable, health_timeout=vllm_health_timeout
                )
            else:
                outcome = held.run_phases(phases)
            lock.check()
            return outcome


@dataclass(frozen=True)
class HeldRun:
    """A run this process holds (its lock taken, run.json written), and how its phases run
    here: with or without progress bars, the built-in mock's address, the response cache."""

    ctx: RunContext
    root: ArtifactStore
    run: RunStore
    progress: bool | None
    mock_url: str | None
    use_cache: bool

    def run_phases(
        self,
        phases: tuple[str, ...],
        *,
        students: set[str] | None = None,
        endpoints: dict[str, str] | None = None,
    ) -> RunOutcome:
        """``phases`` on this process's event loop, of ``students`` only when given (see
        :func:`execute`)."""
        return asyncio.run(
            execute(
                self.ctx,
                self.root,
                self.run,
                phases=phases,
                progress_enabled=self.progress,
                mock_url=self.mock_url,
                students=students,
                endpoints=endpoints,
                use_cache=self.use_cache,
            )
        )


def local_vllm_students(experiment: Experiment, phases: tuple[str, ...]) -> list[StudentSpec]:
    """The students this process serves with ``vllm serve``: backend vllm, no base_url
    (checked: their ``vllm.args`` must not set the address or names skillmix sets)."""
    if "generate" not in phases:
        return []
    local = [s for s in experiment.students if s.backend == "vllm" and not s.base_url]
    for spec in local:
        check_local_args(spec, f"students.{spec.name}")
    return local


def vllm_log_path(run: RunStore, student: str) -> tuple[Path, bool]:
    """Where a local vLLM server logs: ``logs/vllm-{student}.log`` in a local run folder; for
    another store a local file that is copied there when the server stops (True)."""
    name = f"{RunLayout.LOGS}/vllm-{student}.log"
    if isinstance(run.store, LocalStore):
        return run.store.root / name, False
    return Path(tempfile.mkdtemp(prefix="skillmix-vllm-")) / f"vllm-{student}.log", True


def run_with_local_vllm(
    held: HeldRun,
    local: list[StudentSpec],
    phases: tuple[str, ...],
    *,
    executable: str,
    health_timeout: float,
) -> RunOutcome:
    """The run with local vLLM students served one at a time (one server at a time fits one
    GPU): first the other students, then per local student: start ``vllm serve``, wait for
    /health, generate and grade its units, stop it. A student whose generations are all
    finished (a resume) needs no server. Aggregation comes last."""
    started = time.monotonic()
    ctx, run = held.ctx, held.run
    served = {s.name for s in local}
    others = {s.name for s in ctx.experiment.students} - served
    groups: list[tuple[set[str], StudentSpec | None]] = [(others, None)] if others else []
    groups += [({s.name}, s) for s in local]
    total = RunOutcome(ctx.run_id, run.uri)
    for i, (names, spec) in enumerate(groups):
        last = i == len(groups) - 1
        group_phases = phases if last else tuple(p for p in phases if p != "aggregate")

        def run_group(
            endpoints: dict[str, str],
            names: set[str] = names,
            phases: tuple[str, ...] = group_phases,
        ) -> RunOutcome:
            return held.run_phases(phases, students=names, endpoints=endpoints)

        if spec is None or _generations_complete(run, ctx, spec.name):
            # finished generations are read from the store: the endpoint is never asked
            part = run_group({spec.name: UNUSED_ENDPOINT} if spec else {})
        else:
            log_path, upload = vllm_log_path(run, spec.name)
            try:
                with serving(
                    spec, log_path=log_path, health_timeout=health_timeout, executable=executable
                ) as server:
                    endpoint = {spec.name: server.base_url}
                    asyncio.run(
                        check_endpoints(
                            [spec.model_copy(update={"base_url": server.base_url})], None
                        )
                    )
                    part = run_group(endpoint)
            finally:
                if upload:
                    _upload_log(run, log_path, spec.name)
        total.units += part.units
        total.stats.update(part.stats)
        total.missing += part.missing
        total.summary, total.metrics = part.summary, part.metrics
    total.seconds = time.monotonic() - started
    return total


# the endpoint of a local vLLM student whose generations are all stored: a client is built,
# never asked (port 9 is discard; nothing listens there)
UNUSED_ENDPOINT = "http://127.0.0.1:9/v1"


def _generations_complete(run: RunStore, ctx: RunContext, student: str) -> bool:
    """All of the student's generation units finished with nothing to redo. Damaged units are
    repaired first (as run_generate would), so that one needing a redo is not counted."""
    for t in plan_tasks(ctx.experiment).generate:
        if t.student != student:
            continue
        run.repair_unit(shard_prefix(student, t.k, t.round, t.shard, t.shards), GenerationRecord)
        if not unit_complete(run, ctx, "generate", student, t.k, t.round):
            return False
    return True


def _upload_log(run: RunStore, log_path: Path, student: str) -> None:
    """Copy a server log into a remote run folder (best effort: the run's outcome matters
    more than its server log)."""
    with contextlib.suppress(OSError, SkillmixError):
        run.store.write_bytes(f"{RunLayout.LOGS}/vllm-{student}.log", log_path.read_bytes())


def delete_run_content(run: RunStore) -> None:
    """``--overwrite``: delete everything in the run folder but the lock this process holds."""
    tops = {key.split("/", 1)[0] for key in run.store.list_keys()} - {RunLayout.LOCK}
    for top in sorted(tops):
        run.store.delete_prefix(top)


def continue_run(
    run_uri: str,
    *,
    phases: tuple[str, ...] = ("grade", "aggregate"),
    progress: bool | None = None,
    wait_for_lock: float | None = None,
    use_cache: bool = True,
) -> RunOutcome:
    """``skillmix score RUN``: grade (and aggregate) the saved generations of a run, holding
    the run's lock."""

    run, ctx = open_run(run_uri)
    root = parent_store(run_uri)
    with mock_backend(ctx.experiment) as mock_url:
        asyncio.run(check_endpoints([ctx.experiment.grader], mock_url))
        with hold_run(run.store, run_name=ctx.run_id, wait=wait_for_lock) as lock:
            outcome = HeldRun(ctx, root, run, progress, mock_url, use_cache).run_phases(phases)
            lock.check()
            return outcome
