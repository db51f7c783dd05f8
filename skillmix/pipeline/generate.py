"""The generation task (``skillmix task generate``, and the local executor): a student answers
each combination of a unit (or of its shard), resuming and redoing as the unit machinery in
:mod:`skillmix.pipeline.units` describes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from skillmix.backends.base import BackendError, ChatBackend
from skillmix.method.prompts import render_generation_prompts
from skillmix.method.sampling import Combination
from skillmix.method.text import extract_answer
from skillmix.pipeline.context import RunContext
from skillmix.pipeline.units import (
    FLUSH_SECONDS,
    PART_SIZE,
    NullProgress,
    ProgressSink,
    UnitResult,
    final_by_index,
    finish_unit,
    gather_or_cancel,
    open_unit,
    shard_prefix,
)
from skillmix.records import GenerationRecord, Turn, Usage
from skillmix.store.runs import RunStore
from skillmix.vocab import Unit


async def run_generate(
    ctx: RunContext,
    run: RunStore,
    client: ChatBackend,
    student: str,
    k: int,
    g: int,
    *,
    shard: int = 0,
    shards: int = 1,
    attempt: int = 0,
    progress: ProgressSink | None = None,
) -> UnitResult:
    """Generate one unit's shard: skip it when finished, else answer what it still lacks (a
    redo retries only its failed records) and write its manifest."""
    progress = progress or NullProgress()
    prefix = shard_prefix(student, k, g, shard, shards)
    combos = [c for c in ctx.combinations(k) if c.index % shards == shard]
    unit = await open_unit(run, prefix, GenerationRecord)
    if unit.skipped:
        progress.add_total("generate", len(combos))
        progress.advance("generate", len(combos))
        return UnitResult(prefix, skipped=True, records=len(combos))
    # a unit that finished with failed records is redone: only those records are retried
    redo, found, previous, repaired = unit.redo, unit.found, unit.previous, unit.repaired
    done = {r.index for r in previous if r.status == "ok"}
    todo = [c for c in combos if c.index not in done]
    progress.add_total("generate", len(combos))
    progress.advance("generate", len(combos) - len(todo))
    writer = run.writer(prefix, part_size=PART_SIZE, flush_seconds=FLUSH_SECONDS)
    results: list[GenerationRecord] = list(previous)

    async def one(combo: Combination) -> None:
        record = await generate_one(ctx, client, student, k, g, combo)
        await writer.add_async(record)
        results.append(record)
        progress.advance("generate")

    try:
        await gather_or_cancel([one(c) for c in todo])
    finally:
        await writer.flush_async()  # keep finished work even when interrupted
    await finish_unit(
        run,
        prefix,
        writer,
        results,
        key=lambda r: r.index,
        found_parts=found,
        attempt=attempt,
        replace=redo,
    )
    final = final_by_index(results, key=lambda r: r.index)
    errors = [f"k={k} r{g} #{r.index}: {r.error}" for r in final.values() if r.status == "failed"]
    return UnitResult(
        prefix, records=len(final), failed=len(errors), errors=errors, repaired=repaired
    )


async def run_generate_units(
    ctx: RunContext,
    run: RunStore,
    client: ChatBackend,
    student: str,
    units: Iterable[Unit],
    *,
    shard: int = 0,
    shards: int = 1,
    attempt: int = 0,
    progress: ProgressSink | None = None,
) -> list[UnitResult]:
    """Serving ``per-model``: this shard's share of each unit, one unit after another, with one
    client (one model server). Each unit is ``run_generate``'s, so resume, repair, failed
    records and manifests (written as each unit ends) are exactly the per-unit task's."""
    results = []
    for unit in units:
        results.append(
            await run_generate(
                ctx,
                run,
                client,
                student,
                unit.k,
                unit.round,
                shard=shard,
                shards=shards,
                attempt=attempt,
                progress=progress,
            )
        )
    return results


async def generate_one(
    ctx: RunContext, client: ChatBackend, student: str, k: int, g: int, combo: Combination
) -> GenerationRecord:
    """One combination's conversation, turn by turn; a request that fails (not fatally) makes a
    failed record holding the turns so far, to be retried on the next attempt."""
    spec = ctx.experiment.student(student)
    turns_text = render_generation_prompts(
        ctx.generation_prompt, ctx.skills(combo.skills), combo.topic
    )
    messages: list[dict[str, str]] = []
    if spec.system_prompt:
        messages.append({"role": "system", "content": spec.system_prompt})
    turns: list[Turn] = []
    prompt_tokens = completion_tokens = 0
    cached = True
    base: dict[str, Any] = dict(
        student=student,
        model=spec.model,
        k=k,
        generation_round=g,
        index=combo.index,
        topic=combo.topic,
        skills=list(combo.skills),
        prompt_version=ctx.generation_prompt.name,
        system_prompt=spec.system_prompt,
    )
    for t, user in enumerate(turns_text):
        messages.append({"role": "user", "content": user})
        try:
            result = await client.chat(messages, n=1, sample=f"gen:r{g}:i{combo.index}:t{t}")
        except BackendError as exc:
            if exc.fatal:
                raise
            return GenerationRecord(
                **base,
                turns=turns,
                answer=None,
                status="failed",
                error=str(exc),
                usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
            )
        reply = result.texts[0] if result.texts else ""
        prompt_tokens += result.prompt_tokens
        completion_tokens += result.completion_tokens
        cached = cached and result.cached
        messages.append({"role": "assistant", "content": reply})
        turns.append(Turn(user=user, assistant=reply))
    return GenerationRecord(
        **base,
        turns=turns,
        answer=extract_answer(turns[-1].assistant),
        usage=Usage(
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached=cached
        ),
    )
