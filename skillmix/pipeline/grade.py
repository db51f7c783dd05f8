"""The grading task (``skillmix task grade``, and the local executor): the grader scores each
finished answer of a generation unit, once per grading round. Each round is a unit of its own
(resumed and redone as :mod:`skillmix.pipeline.units` describes); one answer's rounds share
one request with n choices where allowed, then re-ask for replies that do not parse."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from skillmix.backends.base import BackendError, ChatBackend
from skillmix.errors import RunFailedError
from skillmix.method.grading import parse_grader_output
from skillmix.method.prompts import GradingStyle, render_grading_prompt
from skillmix.pipeline import units
from skillmix.pipeline.context import RunContext
from skillmix.records import AnswerId, GenerationRecord, GradeRecord, Usage, answer_id
from skillmix.store.runs import Manifest, PartInfo, PartWriter, RunStore, grade_prefix
from skillmix.vocab import Unit


async def run_grade(
    ctx: RunContext,
    run: RunStore,
    client: ChatBackend,
    unit: Unit,
    *,
    attempt: int = 0,
    progress: units.ProgressSink | None = None,
) -> units.UnitResult:
    """Grade one generation unit in every round: skip it when each round is complete, else
    grade what the rounds still lack (failed grades, answers a generation redo added) and write
    the manifests of the rounds that were not complete."""
    student, k, g = unit
    progress = progress or units.NullProgress()
    rounds = ctx.experiment.grader.rounds
    grader = ctx.experiment.grader.name
    prefixes = {r: grade_prefix(grader, student, k, g, r) for r in range(1, rounds + 1)}
    gradable = await _gradable_answers(run, ctx, student, k, g)
    total = len(gradable) * rounds
    progress.add_total("grade", total)
    repaired = [
        note
        for p in prefixes.values()
        for note in await asyncio.to_thread(run.repair_unit, p, GradeRecord)
    ]
    state = await _open_rounds(run, prefixes, len(gradable))
    if all(state.complete.values()):
        progress.advance("grade", total)
        return units.UnitResult(f"{prefixes[1]}..", skipped=True, records=total)
    await _resume_rounds(run, state, {gen.index for gen in gradable})
    progress.advance("grade", len(state.done))
    writers = {r: units.unit_writer(run, p) for r, p in prefixes.items()}
    use_n = _use_n(ctx)

    async def one(gen: GenerationRecord) -> None:
        missing = [r for r in range(1, rounds + 1) if (gen.index, r) not in state.done]
        if not missing:
            return
        graded = await grade_one(ctx, client, gen, missing, use_n=use_n, all_rounds=rounds)
        for record in graded:
            await writers[record.grading_round].add_async(record)
            state.records[record.grading_round].append(record)
            progress.advance("grade")

    await units.gather_then_flush([one(gen) for gen in gradable], writers.values())
    errors = await _finish_rounds(run, state, writers, attempt=attempt, label=f"k={k} r{g}")
    return units.UnitResult(
        prefixes[1], records=total, failed=len(errors), errors=errors, repaired=repaired
    )


async def _gradable_answers(
    run: RunStore, ctx: RunContext, student: str, k: int, g: int
) -> list[GenerationRecord]:
    """The unit's answers to grade (ok, with an answer); grading before its generations are
    finished is a mistake the user must hear about."""
    generations = await asyncio.to_thread(units.generation_records_for, run, ctx, student, k, g)
    if generations is None:
        raise RunFailedError(
            f"generations for {student} k={k} r{g} are not finished",
            hint="run the generate phase first (`skillmix generate`, or `evaluate --resume`)",
        )
    return [gen for gen in generations if gen.status == "ok" and gen.answer is not None]


@dataclass
class _Rounds:
    """A grading unit's rounds, each a store unit of its own: its manifest (if finished), the
    records it holds (this attempt's are added), the parts kept as they are (an unfinished
    round's), and the (answer index, round) pairs that need no new ask."""

    prefixes: dict[int, str]
    manifests: dict[int, Manifest | None]
    complete: dict[int, bool]
    records: dict[int, list[GradeRecord]] = field(default_factory=dict)
    found: dict[int, list[PartInfo]] = field(default_factory=dict)
    done: set[tuple[int, int]] = field(default_factory=set)


async def _open_rounds(run: RunStore, prefixes: dict[int, str], gradable: int) -> _Rounds:
    """Each round's manifest, and whether it is complete for this many gradable answers."""
    manifests = {r: await asyncio.to_thread(run.manifest, p) for r, p in prefixes.items()}
    complete = {r: units.grading_round_complete(m, gradable) for r, m in manifests.items()}
    return _Rounds(prefixes, manifests, complete)


async def _resume_rounds(run: RunStore, state: _Rounds, gradable_index: set[int]) -> None:
    """Read what each round holds already: a finished round (with failures or answers still
    ungraded) is redone over its records; an unfinished one resumes from its parts."""
    for r, p in state.prefixes.items():
        if state.manifests[r] is not None:
            finished = await asyncio.to_thread(run.finished_records, p, GradeRecord)
            previous, state.found[r] = finished or [], []
        else:
            state.found[r], previous = await asyncio.to_thread(run.unfinished, p, GradeRecord)
        state.records[r] = list(previous)
        state.done.update(
            (rec.index, r)
            for rec in previous
            if rec.status in ("ok", "unparsed") and rec.index in gradable_index
        )


async def _finish_rounds(
    run: RunStore, state: _Rounds, writers: dict[int, PartWriter], *, attempt: int, label: str
) -> list[str]:
    """Write the manifest of each round that was not complete; return one error line per
    record that failed for good, in every round (``label`` names the unit: "k=K rG")."""
    errors: list[str] = []
    for r, p in state.prefixes.items():
        if not state.complete[r]:
            await units.finish_unit(
                run,
                p,
                writers[r],
                state.records[r],
                key=lambda rec: rec.index,
                found_parts=state.found[r],
                attempt=attempt,
                replace=state.manifests[r] is not None,
            )
        final = units.final_by_index(state.records[r], key=lambda rec: rec.index)
        errors += [
            f"{label} g{r} #{rec.index}: {rec.error}"
            for rec in final.values()
            if rec.status == "failed"
        ]
    return errors


def _use_n(ctx: RunContext) -> bool:
    """Ask an answer's rounds in one n-choice request? ``auto``: when there are several rounds
    (the prompt is then paid once)."""
    grader = ctx.experiment.grader
    if grader.use_n == "auto":
        return grader.rounds > 1
    return grader.use_n == "always"


class _SharedFields(AnswerId):
    """The record fields every grading round of one answer shares."""

    grader: str
    answer: str
    prompt_version: str
    style: GradingStyle
    prompt: str


@dataclass
class _GradingAsk:
    """One answer's grading request: the messages, the record fields every round shares, and
    the cache-sample name its draws derive from."""

    messages: list[dict[str, str]]
    base: _SharedFields
    sample: str
    k: int
    style: GradingStyle


@dataclass
class _RoundReplies:
    """What one grading round got: replies in order (the last one counts), usage, error."""

    texts: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=lambda: Usage(cached=True))
    error: str | None = None

    def add(self, text: str, prompt_tokens: int, completion_tokens: int, cached: bool) -> None:
        self.texts.append(text)
        self.usage = self.usage.plus(prompt_tokens, completion_tokens, cached)


async def grade_one(
    ctx: RunContext,
    client: ChatBackend,
    gen: GenerationRecord,
    rounds: list[int],
    *,
    use_n: bool,
    all_rounds: int | None = None,
) -> list[GradeRecord]:
    """Grade one answer for the given rounds: one request with n choices when allowed (the
    prompt is paid once), then a bounded number of re-asks for unreadable replies.

    With ``all_rounds`` (the unit's R) the n-choice request always asks for every round, the
    same request as the first time, so a round redone later (a damaged unit repaired, an
    interrupted part) is answered by the response cache."""
    ask = _grading_ask(ctx, gen)
    replies = {r: _RoundReplies() for r in rounds}
    asked = list(range(1, all_rounds + 1)) if all_rounds else rounds
    if use_n and len(asked) > 1:
        await _ask_rounds_at_once(client, ask, asked, replies)
    retries = ctx.experiment.grader.max_parse_retries
    for r in rounds:
        await _ask_until_readable(client, ask, r, replies[r], retries=retries)
    return [_grade_record(ask, r, replies[r]) for r in rounds]


def _grading_ask(ctx: RunContext, gen: GenerationRecord) -> _GradingAsk:
    """The one request all of an answer's rounds ask (so the response cache answers a redo)."""
    spec = ctx.experiment.grader
    style = ctx.grading_style
    prompt = render_grading_prompt(
        ctx.grading_prompt, ctx.skills(gen.skills), gen.topic, gen.answer or "", style
    )
    messages = (
        [{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []
    ) + [{"role": "user", "content": prompt}]
    base = _SharedFields(
        **answer_id(gen),
        grader=spec.name,
        answer=gen.answer or "",
        prompt_version=ctx.grading_prompt.name,
        style=style,
        prompt=prompt,
    )
    sample = f"grade:{gen.student}:r{gen.generation_round}:i{gen.index}"
    return _GradingAsk(messages, base, sample, gen.k, style)


async def _ask_rounds_at_once(
    client: ChatBackend, ask: _GradingAsk, rounds: list[int], replies: dict[int, _RoundReplies]
) -> None:
    """One request with a choice per round, its tokens shared among them. A request that fails
    (not fatally) leaves the rounds to be asked one by one."""
    n = len(rounds)
    try:
        result = await client.chat(
            ask.messages, n=n, sample=f"{ask.sample}:n{n}:" + ",".join(map(str, rounds))
        )
    except BackendError as exc:
        if exc.fatal:
            raise
        return
    prompt_split = _split(result.prompt_tokens, n)
    completion_split = _split(result.completion_tokens, n)
    for j, (r, text) in enumerate(zip(rounds, result.texts, strict=False)):
        if r in replies:  # the rounds wanted (the request may ask for all of them)
            replies[r].add(text, prompt_split[j], completion_split[j], result.cached)


def _readable(ask: _GradingAsk, text: str) -> bool:
    """Does the reply parse into the rubric's points (else it is asked again)?"""
    return parse_grader_output(text, ask.k, ask.style).ok


async def _ask_until_readable(
    client: ChatBackend, ask: _GradingAsk, r: int, replies: _RoundReplies, *, retries: int
) -> None:
    """Ask for round ``r`` until a reply parses: the first ask (unless the n-request answered)
    plus ``retries`` re-asks after unreadable replies. A failed request ends it."""
    budget = retries + (0 if replies.texts else 1)
    for attempt in range(budget):
        if replies.texts and _readable(ask, replies.texts[-1]):
            return
        try:
            result = await client.chat(ask.messages, n=1, sample=f"{ask.sample}:g{r}:a{attempt}")
        except BackendError as exc:
            if exc.fatal:
                raise
            replies.error = str(exc)
            return
        text = result.texts[0] if result.texts else ""
        replies.add(text, result.prompt_tokens, result.completion_tokens, result.cached)


def _grade_record(ask: _GradingAsk, r: int, replies: _RoundReplies) -> GradeRecord:
    """Round ``r``'s record: its last reply parsed (ok or unparsed), or failed without one."""
    if not replies.texts:
        return GradeRecord(
            **ask.base,
            grading_round=r,
            status="failed",
            error=replies.error or "no reply",
            usage=replies.usage,
            attempts=0,
        )
    raw = replies.texts[-1]
    parsed = parse_grader_output(raw, ask.k, ask.style)
    return GradeRecord(
        **ask.base,
        grading_round=r,
        raw=raw,
        points=list(parsed.points),
        total=parsed.total,
        parse_status=parsed.status,
        parse_detail=parsed.detail,
        attempts=len(replies.texts),
        status="ok" if parsed.ok else "unparsed",
        usage=replies.usage,
    )


def _split(total: int, parts: int) -> list[int]:
    """Share one request's tokens among the rounds it answered, losing none."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
