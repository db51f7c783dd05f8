"""The task runners: ``skillmix task generate|grade|aggregate`` and the local executor call these.

Each task owns one unit of the artifact store (a folder with parts and a ``_SUCCESS``
manifest). A task is idempotent: a finished unit is skipped, an unfinished one is resumed
from the parts it finds, and failed records are retried on the next attempt.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from skillmix.backends.base import BackendError, ChatBackend
from skillmix.errors import ModelServerUnhealthy, RunFailedError
from skillmix.method.grading import parse_grader_output
from skillmix.method.prompts import (
    GradingStyle,
    render_generation_prompts,
    render_grading_prompt,
)
from skillmix.method.sampling import Combination
from skillmix.method.text import extract_answer
from skillmix.pipeline.context import RunContext
from skillmix.pipeline.plan import Unit
from skillmix.records import GenerationRecord, GradeRecord, Turn, Usage
from skillmix.store.runs import (
    GENERATIONS,
    PartInfo,
    PartWriter,
    RunStore,
    generation_prefix,
    grade_prefix,
)
from skillmix.vocab import Phase

log = logging.getLogger("skillmix")
PART_SIZE = 10
FLUSH_SECONDS = 5.0


class ProgressSink(Protocol):
    def add_total(self, phase: str, n: int) -> None: ...

    def advance(self, phase: str, n: int = 1) -> None: ...


class NullProgress:
    def add_total(self, phase: str, n: int) -> None:
        pass

    def advance(self, phase: str, n: int = 1) -> None:
        pass


@dataclass
class UnitResult:
    prefix: str
    skipped: bool = False
    records: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # damaged files set aside, then redone


def shard_prefix(student: str, k: int, g: int, shard: int, shards: int) -> str:
    base = generation_prefix(student, k, g)
    return base if shards <= 1 else f"{base}/shard-{shard:03d}-of-{shards:03d}"


def _final_by_index(records: Iterable[Any], key: Callable[[Any], Any]) -> dict[Any, Any]:
    """The last ok record per key, else the last failed one."""
    out: dict[Any, Any] = {}
    for r in records:
        k = key(r)
        if k not in out or out[k].status != "ok" or r.status == "ok":
            out[k] = r
    return out


async def _finish_unit(
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
    final = _final_by_index(records, key)
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


# ---- generation ---------------------------------------------------------------------------


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
    progress = progress or NullProgress()
    prefix = shard_prefix(student, k, g, shard, shards)
    combos = [c for c in ctx.combinations(k) if c.index % shards == shard]
    repaired = await asyncio.to_thread(run.repair_unit, prefix, GenerationRecord)
    manifest = await asyncio.to_thread(run.manifest, prefix)
    if manifest is not None and manifest.failed == 0:
        progress.add_total("generate", len(combos))
        progress.advance("generate", len(combos))
        return UnitResult(prefix, skipped=True, records=len(combos))
    # a unit that finished with failed records is redone: only those records are retried
    redo = manifest is not None
    found: list[PartInfo] = []
    if redo:
        previous = await asyncio.to_thread(run.finished_records, prefix, GenerationRecord) or []
    else:
        found, previous = await asyncio.to_thread(run.unfinished, prefix, GenerationRecord)
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
    await _finish_unit(
        run,
        prefix,
        writer,
        results,
        key=lambda r: r.index,
        found_parts=found,
        attempt=attempt,
        replace=redo,
    )
    final = _final_by_index(results, key=lambda r: r.index)
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
    base = dict(
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


# ---- grading ------------------------------------------------------------------------------


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


async def run_grade(
    ctx: RunContext,
    run: RunStore,
    client: ChatBackend,
    student: str,
    k: int,
    g: int,
    *,
    attempt: int = 0,
    progress: ProgressSink | None = None,
) -> UnitResult:
    progress = progress or NullProgress()
    rounds = ctx.experiment.grader.rounds
    grader = ctx.experiment.grader.name
    prefixes = {r: grade_prefix(grader, student, k, g, r) for r in range(1, rounds + 1)}
    generations = await asyncio.to_thread(generation_records_for, run, ctx, student, k, g)
    if generations is None:
        raise RunFailedError(
            f"generations for {student} k={k} r{g} are not finished",
            hint="run the generate phase first (`skillmix generate`, or `evaluate --resume`)",
        )
    gradable = [gen for gen in generations if gen.status == "ok" and gen.answer is not None]
    total = len(gradable) * rounds
    progress.add_total("grade", total)
    repaired = [
        note
        for p in prefixes.values()
        for note in await asyncio.to_thread(run.repair_unit, p, GradeRecord)
    ]
    manifests = {r: await asyncio.to_thread(run.manifest, p) for r, p in prefixes.items()}
    complete = {r: _grading_round_complete(m, len(gradable)) for r, m in manifests.items()}
    if all(complete.values()):
        progress.advance("grade", total)
        return UnitResult(f"{prefixes[1]}..", skipped=True, records=total)
    gradable_index = {gen.index for gen in gradable}
    previous: dict[int, list[GradeRecord]] = {}
    found: dict[int, list[PartInfo]] = {}
    done: set[tuple[int, int]] = set()
    for r, p in prefixes.items():
        if manifests[r] is not None:  # finished, but with failures or answers still ungraded
            finished = await asyncio.to_thread(run.finished_records, p, GradeRecord)
            previous[r], found[r] = finished or [], []
        else:
            found[r], previous[r] = await asyncio.to_thread(run.unfinished, p, GradeRecord)
        done.update(
            (rec.index, r)
            for rec in previous[r]
            if rec.status in ("ok", "unparsed") and rec.index in gradable_index
        )
    progress.advance("grade", len(done))
    writers = {
        r: run.writer(p, part_size=PART_SIZE, flush_seconds=FLUSH_SECONDS)
        for r, p in prefixes.items()
    }
    results: dict[int, list[GradeRecord]] = {r: list(previous[r]) for r in prefixes}
    use_n = _use_n(ctx)

    async def one(gen: GenerationRecord) -> None:
        missing = [r for r in range(1, rounds + 1) if (gen.index, r) not in done]
        if not missing:
            return
        graded = await grade_one(ctx, client, gen, missing, use_n=use_n, all_rounds=rounds)
        for record in graded:
            await writers[record.grading_round].add_async(record)
            results[record.grading_round].append(record)
            progress.advance("grade")

    try:
        await gather_or_cancel([one(gen) for gen in gradable])
    finally:
        for w in writers.values():
            await w.flush_async()
    errors: list[str] = []
    failed = 0
    for r, p in prefixes.items():
        if not complete[r]:
            await _finish_unit(
                run,
                p,
                writers[r],
                results[r],
                key=lambda rec: rec.index,
                found_parts=found[r],
                attempt=attempt,
                replace=manifests[r] is not None,
            )
        final = _final_by_index(results[r], key=lambda rec: rec.index)
        for rec in final.values():
            if rec.status == "failed":
                failed += 1
                errors.append(f"k={k} r{g} g{r} #{rec.index}: {rec.error}")
    return UnitResult(prefixes[1], records=total, failed=failed, errors=errors, repaired=repaired)


def _grading_round_complete(manifest: Any, gradable: int) -> bool:
    """A grading round is complete when it has a verdict for every gradable answer and none
    failed for good (generations retried later may have added answers)."""
    return manifest is not None and manifest.failed == 0 and manifest.records >= gradable


def _use_n(ctx: RunContext) -> bool:
    grader = ctx.experiment.grader
    if grader.use_n == "auto":
        return grader.rounds > 1
    return grader.use_n == "always"


@dataclass
class _GradingAsk:
    """One answer's grading request: the messages, the record fields every round shares, and
    the cache-sample name its draws derive from."""

    messages: list[dict[str, str]]
    base: dict[str, Any]
    sample: str
    k: int
    style: GradingStyle


@dataclass
class _RoundReplies:
    """What one grading round got: replies in order (the last one counts), usage, error."""

    texts: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = True
    error: str | None = None

    def add(self, text: str, prompt_tokens: int, completion_tokens: int, cached: bool) -> None:
        self.texts.append(text)
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cached = self.cached and cached

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached=self.cached,
        )


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
    spec = ctx.experiment.grader
    style = ctx.grading_style
    prompt = render_grading_prompt(
        ctx.grading_prompt, ctx.skills(gen.skills), gen.topic, gen.answer or "", style
    )
    messages = (
        [{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []
    ) + [{"role": "user", "content": prompt}]
    base = dict(
        student=gen.student,
        grader=spec.name,
        k=gen.k,
        generation_round=gen.generation_round,
        index=gen.index,
        topic=gen.topic,
        skills=gen.skills,
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
            usage=replies.usage(),
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
        usage=replies.usage(),
    )


def _split(total: int, parts: int) -> list[int]:
    """Share one request's tokens among the rounds it answered, losing none."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ---- waiting (Kubernetes grading/aggregation Jobs) ----------------------------------------


def health_url(base_url: str) -> str:
    """The model server's ``/health`` (vLLM and the mock serve it beside ``/v1``)."""
    root = base_url.rstrip("/")
    return f"{root.removesuffix('/v1')}/health"


# ---- the model server's start (a pod's vLLM sidecar) ------------------------------------------

#: The line the chart's vLLM wrapper writes first into the model log at each start of the server
#: (the file then holds that start's output alone); what follows it names the start.
MODEL_LOG_START = "skillmix: model server start "
#: How much of the model log's end the health wait reads (a chained traceback fits).
MODEL_LOG_TAIL = 128 * 1024
#: After a transient failure: the pause before the one more model-load budget it is given.
MODEL_RETRY_BACKOFF = 10.0

_HUB = r"(?:huggingface\.co|hf\.co)"
#: (kind, transient, pattern, why, fix) in the order they are tried: permanent causes before
#: transient ones (a permanent cause does not go away by loading again), vLLM's own catch-all
#: for a model it could not resolve last (it wraps Hub errors of every kind).
_MODEL_FAILURES: tuple[tuple[str, bool, str, str, str], ...] = (
    (
        "oom",
        False,
        r"torch\.(?:cuda\.)?OutOfMemoryError|CUDA out of memory|CUDA error: out of memory"
        r"|No available memory for the cache blocks|larger than the available KV cache memory",
        "does not fit in GPU memory (CUDA out of memory)",
        "give it more GPUs (vllm.tensor_parallel_size), a smaller --max-model-len or "
        "--gpu-memory-utilization in vllm.args, or a smaller model",
    ),
    (
        "gated",
        False,
        r"GatedRepoError|Cannot access gated repo|You are trying to access a gated repo"
        r"|Access to model \S+ is restricted",
        "is gated on the Hugging Face Hub and this pod may not download it",
        "accept its terms on the Hub and set secrets.HF_TOKEN in the cluster profile to a "
        "token of that account",
    ),
    (
        "forbidden",
        False,
        r"\b403 Forbidden\b|Invalid credentials in Authorization header",
        "was refused by the Hugging Face Hub (401/403: the token is invalid or lacks access)",
        "check the token in the Secret of secrets.HF_TOKEN in the cluster profile",
    ),
    (
        "offline",
        False,
        r"outgoing traffic has been disabled",
        "is not in the model cache and Hub downloads are off (HF_HUB_OFFLINE)",
        "fill the cache (skillmix cache warm) or set model_cache_offline: false in the "
        "cluster profile",
    ),
    (
        "not-found",
        False,
        r"RepositoryNotFoundError|Repository Not Found for url|RevisionNotFoundError"
        r"|is not a local folder and is not a valid model identifier",
        "was not found on the Hugging Face Hub (404; a private repository answers 401)",
        "check the student's vllm.model (a Hub id or a path in the model cache); a private "
        "repository needs secrets.HF_TOKEN in the cluster profile",
    ),
    (
        "hub-429",
        True,
        r"\b429 Client Error|Too Many Requests for url|'429 Too Many Requests'",
        "could not be downloaded: the Hugging Face Hub rate-limited this pod (429 Too Many "
        "Requests)",
        "set secrets.HF_TOKEN in the cluster profile (a token has a higher rate limit), or "
        "fill a model cache once (skillmix cache warm) for the pods to share",
    ),
    (
        "hub-5xx",
        True,
        r"\b(?P<status>5\d\d) Server Error|Server error '(?P<status2>5\d\d)",
        "could not be downloaded: the Hugging Face Hub answered {status} (a server error)",
        "relaunch the run later (https://status.huggingface.co), or use a model cache "
        "(skillmix cache warm)",
    ),
    (
        "hub-unreachable",
        True,
        rf"host='[^'\n]*{_HUB}'|We couldn't connect to 'https://{_HUB}"
        r"|error happened while trying to locate the file on the Hub"
        rf"|(?:ConnectError|ConnectTimeout|ReadTimeout|ConnectionError)\b[^\n]*{_HUB}",
        "could not be downloaded: the Hugging Face Hub was unreachable (a connection error)",
        "check the pods' egress to huggingface.co, or use a model cache (skillmix cache warm)",
    ),
    (
        "not-found",
        False,
        r"Invalid repository ID or local directory specified",
        "was not found: vLLM could resolve it neither on the Hugging Face Hub nor as a path",
        "check the student's vllm.model (a Hub id or a path in the model cache)",
    ),
)
_MODEL_PATTERNS = tuple(re.compile(p) for _, _, p, _, _ in _MODEL_FAILURES)


@dataclass(frozen=True)
class ModelStartFailure:
    """Why a model server did not start, as its output says: ``transient`` ones (the Hub's
    429 and 5xx answers, connection errors) may pass on a restart; the others will not."""

    kind: str  # oom | gated | forbidden | offline | not-found | hub-429 | hub-5xx | hub-unreachable
    transient: bool
    reason: str  # "model M <why>"
    fix: str


def classify_model_log(text: str, model: str = "") -> ModelStartFailure | None:
    """The cause of a failed start that the output of one start of the model server (vLLM,
    with huggingface_hub, transformers and torch inside) names, or None when it names none of
    them (still loading, or an error this does not know). Pure: the text in, the verdict
    out."""
    name = f"model {model}" if model else "the model"
    for (kind, transient, _, why, fix), pattern in zip(
        _MODEL_FAILURES, _MODEL_PATTERNS, strict=True
    ):
        m = pattern.search(text)
        if m is None:
            continue
        groups = {k: v for k, v in m.groupdict().items() if v}
        status = groups.get("status") or groups.get("status2") or ""
        return ModelStartFailure(kind, transient, f"{name} {why.format(status=status)}", fix)
    return None


def read_model_log(path: str) -> tuple[str, str]:
    """(the start it is of, the text of its end) of the model log, ("", "") while there is
    none. The start is the wrapper's first line, so a restart of the server is a new one."""
    try:
        with open(path, "rb") as f:
            first = f.readline(512)
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - MODEL_LOG_TAIL))
            tail = f.read(MODEL_LOG_TAIL)
    except OSError:
        return "", ""
    head = first.decode("utf-8", "replace")
    start = head.strip() if head.startswith(MODEL_LOG_START) else ""
    return start, tail.decode("utf-8", "replace")


def wait_for_model_server(
    base_url: str,
    timeout: float,
    *,
    interval: float = 2.0,
    say: Callable[[str], None] = lambda _line: None,
    model_log: str | None = None,
    model: str = "",
    retry_backoff: float = MODEL_RETRY_BACKOFF,
    limit: float = 0.0,
) -> None:
    """Block until the pod's model server answers ``/health`` with 200, for at most
    ``timeout`` seconds (the model-load budget), else raise :class:`ModelServerUnhealthy`
    (exit 3) naming the last answer. A native sidecar that never becomes healthy is restarted
    by the kubelet forever and the pod never fails on its own: this bound is what ends it.

    With ``model_log`` (the file the chart's vLLM wrapper fills with the output of the
    server's current start) the wait also reads why a start failed
    (:func:`classify_model_log`): a permanent cause (gated, not found, out of memory) ends it
    at once; a transient one (the Hub's 429 or 5xx, a connection error) gets one more chance
    while the kubelet restarts the server: ``retry_backoff`` seconds, then one more budget,
    and a transient failure of a later start ends it. An unknown cause waits out the budget.
    ``limit`` (seconds, 0 = none) bounds the whole wait, the retry included."""

    url = health_url(base_url)
    began = time.monotonic()
    cap = began + limit if limit > 0 else float("inf")
    deadline = min(cap, began + timeout)
    last, tries, said = "no answer yet", 0, 0.0
    retried: ModelStartFailure | None = None  # the transient failure given the one retry
    retried_start = ""
    while True:
        tries += 1
        try:
            with urllib.request.urlopen(url, timeout=min(5.0, max(0.5, timeout))) as answer:
                if answer.status == 200:
                    if tries > 1:
                        say(f"model server healthy after {tries} checks")
                    return
                last = f"HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(getattr(exc, "reason", exc)) or exc.__class__.__name__
        failure, start = None, ""
        if model_log:
            start, text = read_model_log(model_log)
            failure = classify_model_log(text, model)
        now = time.monotonic()
        if failure is not None and not failure.transient:
            raise ModelServerUnhealthy(
                f"model server failed to start: {failure.reason}", hint=failure.fix
            )
        if failure is not None and retried is None:
            retried, retried_start = failure, start
            deadline = min(cap, now + retry_backoff + timeout)
            say(
                f"model server failed to start: {failure.reason}; transient: waiting "
                f"{retry_backoff:g}s, then up to {timeout:g}s more for its restart"
            )
            time.sleep(max(0.0, min(retry_backoff, deadline - now)))
            continue
        if failure is not None and start != retried_start:
            raise ModelServerUnhealthy(
                f"model server failed to start: {failure.reason}, again after one retry",
                hint=failure.fix,
            )
        if now >= deadline:
            if retried is not None:
                raise ModelServerUnhealthy(
                    f"model server never became healthy after one retry: {retried.reason}; "
                    f"then {url} did not answer 200 within {timeout:g}s (last: {last})",
                    hint=retried.fix,
                )
            raise ModelServerUnhealthy(
                f"model server never became healthy: {url} did not answer 200 within "
                f"{timeout:g}s (model-load budget; last: {last})",
                hint="see the model container's log (skillmix logs RUN --container model): "
                "a wrong model id, a gated model without HF_TOKEN, out of memory, or a load "
                "slower than deadlines.model_load_seconds",
            )
        if now - said >= 30:
            said = now
            say(f"waiting for the model server at {url} ({last})")
        time.sleep(min(interval, max(0.05, deadline - now)))


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
        _grading_round_complete(run.manifest(grade_prefix(grader.name, student, k, g, r)), gradable)
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


__all__ = [
    "GENERATIONS",
    "MODEL_LOG_START",
    "ModelStartFailure",
    "NullProgress",
    "ProgressSink",
    "UnitResult",
    "classify_model_log",
    "gather_or_cancel",
    "generate_one",
    "grade_one",
    "health_url",
    "pending_units",
    "read_model_log",
    "run_generate",
    "run_generate_units",
    "run_grade",
    "unit_complete",
    "unit_finished",
    "wait_for_model_server",
]
