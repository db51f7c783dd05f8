"""The generation task (``skillmix task generate``, and the local executor): a student answers
each combination of a unit (or of its shard), resuming and redoing as the unit machinery in
:mod:`skillmix.pipeline.units` describes."""

from __future__ import annotations

from collections.abc import Iterable

from skillmix.backends.base import BackendError, ChatBackend
from skillmix.method.prompts import render_generation_prompts
from skillmix.method.sampling import Combination
from skillmix.method.text import extract_answer
from skillmix.pipeline.context import RunContext
from skillmix.pipeline.units import NullProgress, ProgressSink, UnitResult, ask_unit, shard_prefix
from skillmix.records import GenerationRecord, Turn, Usage
from skillmix.store.runs import RunStore
from skillmix.vocab import Unit, owned_by


async def run_generate(
    ctx: RunContext,
    run: RunStore,
    client: ChatBackend,
    unit: Unit,
    *,
    shard: int = 0,
    shards: int = 1,
    attempt: int = 0,
    progress: ProgressSink | None = None,
) -> UnitResult:
    """Generate one unit's shard: skip it when finished, else answer what it still lacks (a
    redo retries only its failed records) and write its manifest."""
    student, k, g = unit
    prefix = shard_prefix(student, k, g, shard, shards)
    return await ask_unit(
        run,
        prefix,
        GenerationRecord,
        [c for c in ctx.combinations(k) if owned_by(c.index, shard, shards)],
        index_of=lambda combo: combo.index,
        ask=lambda combo: generate_one(ctx, client, student, k, g, combo),
        label=f"k={k} r{g}",
        attempt=attempt,
        progress=progress or NullProgress(),
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
                Unit(student, unit.k, unit.round),
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
    usage = Usage(cached=True)
    error: str | None = None
    for t, user in enumerate(turns_text):
        messages.append({"role": "user", "content": user})
        try:
            result = await client.chat(messages, n=1, sample=f"gen:r{g}:i{combo.index}:t{t}")
        except BackendError as exc:
            if exc.fatal:
                raise
            error = str(exc)
            break
        reply = result.texts[0] if result.texts else ""
        usage = usage.plus(result.prompt_tokens, result.completion_tokens, result.cached)
        messages.append({"role": "assistant", "content": reply})
        turns.append(Turn(user=user, assistant=reply))
    failed = error is not None
    return GenerationRecord(
        student=student,
        model=spec.model,
        k=k,
        generation_round=g,
        index=combo.index,
        topic=combo.topic,
        skills=list(combo.skills),
        prompt_version=ctx.generation_prompt.name,
        system_prompt=spec.system_prompt,
        turns=turns,
        answer=None if failed else extract_answer(turns[-1].assistant),
        status="failed" if failed else "ok",
        error=error,
        usage=usage.model_copy(update={"cached": usage.cached and not failed}),
    )
