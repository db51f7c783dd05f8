"""``skillmix task ...``: the commands Kubernetes containers run (and the local executor's units).

Each reads the run's ``run.json`` from the store, so a pod needs only the run URI, its unit
and its credentials (from the environment). Progress goes to stderr as periodic log lines.
"""

from __future__ import annotations

import asyncio
import atexit
import re
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import click

from skillmix import settings
from skillmix.backends.factory import make_client
from skillmix.errors import RunFailedError, SkillmixError, TimeLimitReached
from skillmix.k8s.coordinator import Coordinator, Timing
from skillmix.pipeline.context import open_run, parent_store
from skillmix.pipeline.plan import Unit, plan_tasks
from skillmix.pipeline.tasks import (
    pending_units,
    run_generate_units,
    run_grade,
    wait_for_model_server,
)
from skillmix.report.build import run_aggregate_task
from skillmix.store.layout import RunLayout
from skillmix.store.uri import open_store

if TYPE_CHECKING:
    from collections.abc import Sequence

    from skillmix.backends.client import ChatClient
    from skillmix.config import ModelSpec
    from skillmix.pipeline.context import RunContext
    from skillmix.store.runs import RunStore
    from skillmix.vocab import Phase


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


_pod_log: PodLog | None = None


def _remember_run(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Where this pod's log goes at exit: the run given to the task."""
    if _pod_log is not None and value:
        _pod_log.run_uri = value
    return value


run_option = click.option(
    "--run",
    "run_uri",
    envvar=settings.RUN.name,
    required=True,
    callback=_remember_run,
    help="Run folder URI (env SKILLMIX_RUN).",
)

model_load_option = click.option(
    "--model-load-timeout",
    type=click.FloatRange(0),
    default=0,
    show_default=True,
    help="Wait this long for the model server's /health before starting (the pod's model "
    "sidecar); never healthy: exit 3. 0 = do not wait.",
)


attempt_option = click.option(
    "--attempt",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Launch attempt (Kubernetes): manifests record it; waits require it of relaunched units.",
)


def unit_options(f: Any) -> Any:
    for option in reversed(
        [
            run_option,
            click.option("--student", required=True),
            click.option("--k", "k", type=int, required=True),
            click.option("--round", "g", type=int, required=True, help="Generation round."),
        ]
    ):
        f = option(f)
    return f


class LogProgress:
    """Progress for logs: one stderr line per phase at most every ``interval`` seconds."""

    def __init__(self, label: str, interval: float = 15.0) -> None:
        self.label = label
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
            click.echo(
                f"{self.label}: {phase} {self.done[phase]}/{self.totals.get(phase, 0)}", err=True
            )


@click.group()
def task() -> None:
    """Run one unit of a run (container entrypoints). Exit 2 = bad input, 1 = failed,
    3 = the model server never became healthy, 4 = the task's time limit was reached."""
    global _pod_log
    pod = settings.pod_name()
    if pod and _pod_log is None:
        _pod_log = PodLog(pod)
        _pod_log.install()


def _await_model(
    base_url: str | None,
    timeout: float,
    *,
    model_log: str | None = None,
    model: str = "",
    limit: float = 0,
) -> None:
    """The model sidecar's /health within the load budget (see ``--model-load-timeout``);
    with ``model_log`` a permanent failure to start ends the wait at once and a transient one
    gets one more budget (see ``--model-log``), the whole wait within ``limit`` (0 = none)."""
    if timeout <= 0 or not base_url:
        return

    wait_for_model_server(
        base_url,
        timeout,
        say=lambda line: click.echo(line, err=True),
        model_log=model_log,
        model=model,
        limit=limit,
    )


def _within(seconds: float, work: Any, limit: float) -> Any:
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


def _client(
    spec: ModelSpec, base_url: str | None, run_uri: str, seed: int, share: int
) -> ChatClient:
    """This pod's client: the spec's budgets divided by the ``share`` pods that use them."""

    return make_client(
        spec, parent_store(run_uri), base_url=base_url, seed=seed, budget_share=share
    )


def _shard(shard: int | None, shards: int) -> int:
    if shard is None:
        shard = settings.completion_index()
    if not 0 <= shard < shards:
        raise SkillmixError(f"shard {shard} is outside 0..{shards - 1}")
    return shard


@task.command("generate")
@run_option
@click.option("--student", required=True)
@click.option("--k", "k", type=int, default=None, help="The unit's k (or --units).")
@click.option("--round", "g", type=int, default=None, help="The unit's generation round.")
@click.option(
    "--units",
    default=None,
    help="Serving per-model: K:R,K:R... units of the student, run one after another.",
)
@click.option(
    "--shard", type=int, default=None, help="Shard index (default: $JOB_COMPLETION_INDEX or 0)."
)
@click.option("--shards", type=click.IntRange(1), default=1, show_default=True)
@click.option(
    "--base-url", default=None, help="Override the student's endpoint (in a pod: the vLLM sidecar)."
)
@click.option(
    "--budget-share",
    type=click.IntRange(1),
    default=None,
    help="Parallel workers sharing the student's concurrency/RPM/TPM budget [default: --shards].",
)
@model_load_option
@click.option(
    "--model-log",
    default=None,
    help="The model server's output of its current start (a vLLM sidecar's model log): while "
    "waiting for /health, a permanent failure it names (gated, not found, out of memory) "
    "exits 3 at once, a transient one (the Hub's 429 or 5xx) gets one more load budget.",
)
@click.option(
    "--time-limit",
    type=click.FloatRange(0),
    default=0,
    show_default=True,
    help="Stop after this many seconds of this process (exit 4; parts are kept). 0 = none.",
)
@attempt_option
def generate_task(
    run_uri: str,
    student: str,
    k: int | None,
    g: int | None,
    units: str | None,
    shard: int | None,
    shards: int,
    base_url: str | None,
    budget_share: int | None,
    model_load_timeout: float,
    model_log: str | None,
    time_limit: float,
    attempt: int,
) -> None:
    """Generate one (student, k, round) unit, or one shard of it; with --units, several units
    of the student in turn (serving per-model: the model server loads once).

    The shards of a unit run at once and share the student's budget: each takes 1/--shards of
    its concurrency, RPM and TPM, unless --budget-share says otherwise."""

    one = units is None and k is not None and g is not None
    if not one and not (units is not None and k is None and g is None):
        raise SkillmixError("give either --k and --round (one unit) or --units K:R,... (several)")
    run, ctx = open_run(run_uri)
    spec = ctx.experiment.student(student)
    todo = (
        [Unit(student, k, g)]
        if (one and k is not None and g is not None)
        else _parse_units(student, units or "")
    )
    for unit in todo:
        _check_unit(ctx, unit.k, unit.round)
    index = _shard(shard, shards)
    if shards != ctx.shards(student):
        raise SkillmixError(
            f"--shards {shards} does not match the run's plan ({ctx.shards(student)} for {student})"
        )

    async def main() -> Any:
        share = shards if budget_share is None else budget_share
        client = _client(spec, base_url, run_uri, ctx.experiment.seed, share)
        try:
            out = []
            for unit in todo:
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
                    progress=LogProgress(label),
                )
                _report(result, "generated")  # as each unit ends, not all at the end
                out.append(result)
            return out
        finally:
            await client.close()

    start = time.monotonic()
    _await_model(
        base_url,
        min(model_load_timeout, time_limit) if time_limit else model_load_timeout,
        model_log=model_log,
        model=spec.vllm.model or spec.model,
        limit=time_limit,
    )
    left = max(0.001, time_limit - (time.monotonic() - start)) if time_limit else 0
    _within(left, main(), time_limit)  # main reports each unit as it ends


def _parse_units(student: str, text: str) -> list[Unit]:
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


@task.command("grade")
@unit_options
@click.option("--base-url", default=None, help="Override the grader's endpoint.")
@click.option(
    "--budget-share",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Parallel grading workers sharing the grader's concurrency/RPM/TPM budget.",
)
@click.option(
    "--wait-timeout",
    type=float,
    default=0,
    show_default=True,
    help="Seconds to wait for the generations first (0 = do not wait).",
)
@model_load_option
@attempt_option
def grade_task(
    run_uri: str,
    student: str,
    k: int,
    g: int,
    base_url: str | None,
    budget_share: int,
    wait_timeout: float,
    model_load_timeout: float,
    attempt: int,
) -> None:
    """Grade one (student, k, round) unit (all grading rounds)."""

    run, ctx = open_run(run_uri)
    _check_unit(ctx, k, g)
    ctx.experiment.student(student)
    if wait_timeout > 0:
        _wait(run, ctx, "generate", [Unit(student, k, g)], wait_timeout, 5.0, attempt)

    _await_model(base_url, model_load_timeout)

    async def main() -> Any:
        client = _client(
            ctx.experiment.grader, base_url, run_uri, ctx.experiment.seed, budget_share
        )
        try:
            return await run_grade(
                ctx,
                run,
                client,
                student,
                k,
                g,
                attempt=attempt,
                progress=LogProgress(f"grade {student} k={k} r{g}"),
            )
        finally:
            await client.close()

    _report(asyncio.run(main()), "graded")


@task.command("aggregate")
@run_option
@click.option(
    "--wait-timeout",
    type=float,
    default=0,
    show_default=True,
    help="Seconds to wait for every grading unit first.",
)
@attempt_option
def aggregate_task(run_uri: str, wait_timeout: float, attempt: int) -> None:
    """Compute the metrics and write the run's report/ folder."""

    run, ctx = open_run(run_uri)
    if wait_timeout > 0:
        _wait(run, ctx, "grade", plan_tasks(ctx.experiment).units, wait_timeout, 10.0, attempt)
    summary, _metrics = run_aggregate_task(run, ctx)
    for line in summary.warnings:
        click.echo(f"warning: {line}", err=True)
    rows = summary.metrics.rows
    click.echo(f"aggregated {len(rows)} rows into {run.uri.rstrip('/')}/report/", err=True)


@task.command("wait")
@run_option
@click.option(
    "--phase",
    type=click.Choice(["generate", "grade"]),
    required=True,
    help="Wait for this phase's manifests.",
)
@click.option("--student", default=None, help="Only this student's units.")
@click.option("--k", "k", type=int, default=None)
@click.option("--round", "g", type=int, default=None)
@click.option(
    "--timeout",
    type=float,
    default=6 * 3600.0,
    show_default=True,
    help="Give up after this many seconds (exit 1).",
)
@click.option("--interval", type=float, default=10.0, show_default=True)
@attempt_option
def wait_task(
    run_uri: str,
    phase: Phase,
    student: str | None,
    k: int | None,
    g: int | None,
    timeout: float,
    interval: float,
    attempt: int,
) -> None:
    """Block until the named units have their _SUCCESS manifests (bounded by --timeout).

    With --attempt N, units that launch attempt N redoes must have a manifest from attempt N
    (an older one, written before the relaunch, would be stale)."""

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
    _wait(run, ctx, phase, units, timeout, interval, attempt)


def relaunched_units(run: RunStore, phase: Phase, attempt: int) -> list[Unit]:
    """The units launch ``attempt`` (re)does in ``phase``, from its record in the store."""

    if attempt <= 0:
        return []
    record = run.read_launch_record(attempt)
    if record is None:
        raise SkillmixError(f"{run.uri}: no record of launch attempt {attempt}")
    return [Unit(*u) for u in record.units(phase)]


def _wait(
    run: RunStore,
    ctx: RunContext,
    phase: Phase,
    units: Sequence[Unit],
    timeout: float,
    interval: float,
    attempt: int = 0,
) -> None:

    again = relaunched_units(run, phase, attempt)
    still = partial(pending_units, run, ctx, phase, relaunched=again, attempt=attempt)
    deadline = time.monotonic() + timeout
    pending = still(units)
    while pending:
        if time.monotonic() >= deadline:
            raise RunFailedError(
                f"timed out after {timeout:g}s waiting for {phase} of {len(pending)} units (e.g. {pending[0]})"
            )
        click.echo(f"waiting for {phase}: {len(pending)} of {len(units)} units pending", err=True)
        time.sleep(min(interval, max(0.05, deadline - time.monotonic())))
        pending = still(pending)
    click.echo(f"{phase} finished for {len(units)} units", err=True)


def _check_unit(ctx: RunContext, k: int, g: int) -> None:
    e = ctx.experiment
    if k not in e.ks:
        raise SkillmixError(f"k={k} is not in this run (ks: {e.ks})")
    if not 1 <= g <= e.generation_rounds:
        raise SkillmixError(f"round {g} is not in this run (1..{e.generation_rounds})")


def _report(result: Any, verb: str) -> None:
    for note in result.repaired:
        click.echo(f"repaired: {note}", err=True)
    if result.skipped:
        click.echo(f"{result.prefix}: already finished, nothing to do", err=True)
        return
    click.echo(
        f"{result.prefix}: {verb} {result.records} records, {result.failed} failed", err=True
    )
    for line in result.errors[:20]:
        click.echo(f"  failed: {line}", err=True)
    sys.stderr.flush()


@task.command("coordinate")
@run_option
@attempt_option
@click.option(
    "--interval",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="Seconds a pass lasts at most (it watches the Jobs and pods for changes meanwhile).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(1),
    default=7 * 86400.0,
    show_default=True,
    help="Give up after this many seconds (exit 1).",
)
@click.option(
    "--stuck-seconds",
    type=click.FloatRange(1),
    default=600.0,
    show_default=True,
    help="Fail a Job whose pod waits this long where no retry helps (image pull, missing "
    "Secret key, Multi-Attach volume).",
)
@click.option(
    "--unschedulable-seconds",
    type=click.FloatRange(1),
    default=1800.0,
    show_default=True,
    help="Fail a Job whose pod the scheduler could not place for this long.",
)
def coordinate_task(
    run_uri: str,
    attempt: int,
    interval: float,
    timeout: float,
    stuck_seconds: float,
    unschedulable_seconds: float,
) -> None:
    """Coordinate one launch attempt from inside the cluster: release its gated Jobs when
    their inputs exist in the store (at most pool-size at once), fail Jobs whose pods are
    stuck, record generation pods' GPU time; ends when every Job of the attempt has finished
    (runs in a pod with the skillmix-coordinator Role of k8s/rbac-coordinator.yaml)."""
    from skillmix.k8s.cluster import KubeClient  # deferred: kubernetes takes ~0.5 s to import

    run, ctx = open_run(run_uri)
    api = KubeClient.in_cluster()
    click.echo(
        f"coordinating run {ctx.run_id} attempt {attempt} in namespace {api.namespace}", err=True
    )
    Coordinator(
        run,
        ctx,
        attempt,
        api=api,
        timing=Timing(stuck_seconds=stuck_seconds, unschedulable_seconds=unschedulable_seconds),
        say=lambda line: click.echo(line, err=True),
    ).run_until_done(interval=interval, timeout=timeout)
