"""What every task does with its unit of the artifact store, whatever the phase.

A unit is a folder of parts and a ``_SUCCESS`` manifest. A task is idempotent: a finished unit
is skipped, an unfinished one is resumed from the parts it finds, and failed records are
retried on the next attempt. This module holds that shared machinery (progress, results,
writing the manifest, gathering work) and the questions a scheduler asks of a unit (finished?
complete? still pending?), so the generation and grading tasks stay about their own phase.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from skillmix.pipeline.context import RunContext
from skillmix.records import GenerationRecord
from skillmix.store.runs import (
    Manifest,
    PartInfo,
    PartWriter,
    RunStore,
    generation_prefix,
    grade_prefix,
)
from skillmix.vocab import Phase, Unit

R = TypeVar("R", bound=BaseModel)

#: Records per part, and the seconds after which a part is written however few it holds: the
#: most a crash can lose (the response cache answers that again).
PART_SIZE = 10
FLUSH_SECONDS = 5.0


class ProgressSink(Protocol):
    """Where a task reports progress: the local executor's bars, or nothing in a pod."""

    def add_total(self, phase: str, n: int) -> None: ...

    def advance(self, phase: str, n: int = 1) -> None: ...


class NullProgress:
    """A sink that ignores progress (tasks in pods, tests)."""

    def add_total(self, phase: str, n: int) -> None:
        pass

    def advance(self, phase: str, n: int = 1) -> None:
        pass


@dataclass
class UnitResult:
    """What a task did to its unit, for the executor's summary line and failure report."""

    prefix: str
    skipped: bool = False
    records: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # damaged files set aside, then redone


def shard_prefix(student: str, k: int, g: int, shard: int, shards: int) -> str:
    """A generation shard's unit folder: the unit's own folder when it is not sharded."""
    base = generation_prefix(student, k, g)
    return base if shards <= 1 else f"{base}/shard-{shard:03d}-of-{shards:03d}"


def final_by_index(records: Iterable[Any], key: Callable[[Any], Any]) -> dict[Any, Any]:
    """The last ok record per key, else the last failed one."""
    out: dict[Any, Any] = {}
    for r in records:
        k = key(r)
        if k not in out or out[k].status != "ok" or r.status == "ok":
            out[k] = r
    return out


@dataclass
class OpenedUnit(Generic[R]):
    """A unit as a task finds it (see :func:`open_unit`)."""

    skipped: bool  # finished with no failed record: nothing to do
    redo: bool  # finished with failed records: redone over the finished records
    found: list[PartInfo]  # parts of an unfinished unit (its manifest will list them)
    previous: list[R]  # the records already there
    repaired: list[str]  # damaged parts set aside (their records are redone)


async def open_unit(run: RunStore, prefix: str, model: type[R]) -> OpenedUnit[R]:
    """Open a unit to (re)do: damaged parts set aside; finished without failures, skipped;
    finished with failed records, redone (only those: the rest are kept); else resumed from
    the parts a crashed writer left."""
    repaired = await asyncio.to_thread(run.repair_unit, prefix, model)
    manifest = await asyncio.to_thread(run.manifest, prefix)
    if manifest is not None and manifest.failed == 0:
        return OpenedUnit(True, False, [], [], repaired)
    if manifest is not None:
        previous = await asyncio.to_thread(run.finished_records, prefix, model)
        return OpenedUnit(False, True, [], previous or [], repaired)
    found, records = await asyncio.to_thread(run.unfinished, prefix, model)
    return OpenedUnit(False, False, found, records, repaired)


async def finish_unit(
    run: RunStore,
    prefix: str,
    writer: PartWriter,
    records: list[Any],
    key: Callable[[Any], Any],
    *,
    found_parts: list[PartInfo],
    attempt: int = 0,
    replace: bool = False,
) -> None:
    """Write the manifest: over the parts as they are (those found on resume plus those this
    writer added), or over one consolidated part when the unit holds superseded records or is
    being redone (so readers never see duplicates)."""
    await writer.flush_async()
    final = final_by_index(records, key)
    failed = sum(1 for r in final.values() if r.status == "failed")
    if len(records) == len(final) and not replace:
        parts = [*found_parts, *writer.written]
        await asyncio.to_thread(run.write_manifest, prefix, parts, failed=failed, attempt=attempt)
        return
    consolidated = run.writer(prefix, part_size=len(final) + 1, flush_seconds=1e9)
    for _k, record in sorted(final.items()):
        await consolidated.add_async(record)
    await consolidated.flush_async()
    await asyncio.to_thread(
        run.write_manifest,
        prefix,
        consolidated.written,
        failed=failed,
        attempt=attempt,
        replace=replace,
    )


T = TypeVar("T")


async def ask_unit(
    run: RunStore,
    prefix: str,
    record_type: type[R],
    items: Sequence[T],
    *,
    index_of: Callable[[T], Any],
    ask: Callable[[T], Awaitable[R]],
    label: str,
    attempt: int = 0,
    progress: ProgressSink,
) -> UnitResult:
    """A unit whose records each answer one item (a combination, a problem): skip it when
    finished, else ask the items it still lacks (a redo retries only its failed records),
    keep each record as it comes, and write the manifest. Error lines read ``{label} #{index}``."""
    opened = await open_unit(run, prefix, record_type)
    progress.add_total("generate", len(items))
    if opened.skipped:
        progress.advance("generate", len(items))
        return UnitResult(prefix, skipped=True, records=len(items))
    results: list[Any] = list(opened.previous)  # records with an index, a status, an error
    done = {r.index for r in results if r.status == "ok"}
    todo = [item for item in items if index_of(item) not in done]
    progress.advance("generate", len(items) - len(todo))
    writer = unit_writer(run, prefix)

    async def one(item: T) -> None:
        record = await ask(item)
        await writer.add_async(record)
        results.append(record)
        progress.advance("generate")

    await gather_then_flush([one(item) for item in todo], [writer])
    found, redo = opened.found, opened.redo
    await finish_unit(
        run, prefix, writer, results, _index, found_parts=found, attempt=attempt, replace=redo
    )
    final = final_by_index(results, key=_index)
    errors = [f"{label} #{r.index}: {r.error}" for r in final.values() if r.status == "failed"]
    return UnitResult(
        prefix, records=len(final), failed=len(errors), errors=errors, repaired=opened.repaired
    )


def _index(record: Any) -> Any:
    return record.index


def unit_writer(run: RunStore, prefix: str) -> PartWriter:
    """The part writer of a unit's folder, flushing at ``PART_SIZE`` or ``FLUSH_SECONDS``."""
    return run.writer(prefix, part_size=PART_SIZE, flush_seconds=FLUSH_SECONDS)


async def gather_then_flush(coros: list[Any], writers: Iterable[PartWriter]) -> None:
    """``gather_or_cancel`` the unit's requests, then flush its writers even when interrupted,
    so finished work is kept."""
    try:
        await gather_or_cancel(coros)
    finally:
        for writer in writers:
            await writer.flush_async()


async def gather_or_cancel(coros: list[Any]) -> None:
    """Run concurrently; on the first exception cancel the rest and re-raise it."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def generation_records_for(
    run: RunStore, ctx: RunContext, student: str, k: int, g: int
) -> list[GenerationRecord] | None:
    """Finished generations of a unit (all its shards), or None while any shard is unfinished."""
    shards = ctx.shards(student)
    records: list[GenerationRecord] = []
    for shard in range(shards):
        part = run.finished_records(shard_prefix(student, k, g, shard, shards), GenerationRecord)
        if part is None:
            return None
        records.extend(part)
    return sorted(records, key=lambda r: r.index)


def grading_round_complete(manifest: Manifest | None, gradable: int) -> bool:
    """A grading round is complete when it has a verdict for every gradable answer and none
    failed for good (generations retried later may have added answers)."""
    return manifest is not None and manifest.failed == 0 and manifest.records >= gradable


def unit_finished(
    run: RunStore,
    ctx: RunContext,
    phase: str,
    student: str,
    k: int,
    g: int,
    *,
    min_attempt: int = 0,
) -> bool:
    """Has the unit a manifest (from launch attempt ``min_attempt`` or later)? What a
    downstream task waits for; failed records inside are fine here."""
    if phase == "generate":
        shards = ctx.shards(student)
        manifests = [run.manifest(shard_prefix(student, k, g, s, shards)) for s in range(shards)]
    else:
        grader = ctx.experiment.grader
        manifests = [
            run.manifest(grade_prefix(grader.name, student, k, g, r))
            for r in range(1, grader.rounds + 1)
        ]
    return all(m is not None and m.attempt >= min_attempt for m in manifests)


def unit_complete(run: RunStore, ctx: RunContext, phase: str, student: str, k: int, g: int) -> bool:
    """Finished with nothing left to retry: what a relaunch or a resume skips."""
    if phase == "generate":
        shards = ctx.shards(student)
        manifests = [run.manifest(shard_prefix(student, k, g, s, shards)) for s in range(shards)]
        return all(m is not None and m.failed == 0 for m in manifests)
    generations = generation_records_for(run, ctx, student, k, g)
    if generations is None:
        return False
    gradable = sum(1 for gen in generations if gen.status == "ok" and gen.answer is not None)
    grader = ctx.experiment.grader
    return all(
        grading_round_complete(run.manifest(grade_prefix(grader.name, student, k, g, r)), gradable)
        for r in range(1, grader.rounds + 1)
    )


def pending_units(
    run: RunStore,
    ctx: RunContext,
    phase: Phase,
    units: Iterable[Unit],
    *,
    relaunched: Iterable[Unit] = (),
    attempt: int = 0,
) -> list[Unit]:
    """Units still to wait for; those ``relaunched`` in ``attempt`` need a manifest from it."""
    again = set(relaunched)
    return [
        u
        for u in units
        if not unit_finished(run, ctx, phase, *u, min_attempt=attempt if u in again else 0)
    ]
