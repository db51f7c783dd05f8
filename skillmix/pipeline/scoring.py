"""Rule scoring of many responses with a time limit per answer.

sympy can run for minutes (or for ever) on a hostile answer and cannot be interrupted from
inside, so each answer is scored in a worker process (`python -m skillmix.pipeline.scoring`,
JSON lines on its stdin and stdout); a worker that overruns the limit is killed and replaced, and
its answer counts as incorrect with the reason "timed out". Plain subprocesses, not
multiprocessing: they need no `if __name__ == "__main__"` guard in the caller and no fork of a
threaded parent. Every worker is killed and reaped before `score_responses` returns, and each
also caps its own CPU time per answer, so none outlives a parent that was killed outright.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO, Literal

try:
    import resource
except ImportError:  # not POSIX: no memory or CPU cap in the worker
    resource = None  # type: ignore[assignment]

from skillmix.method.choices import choice_correct, multiple_choice_answer
from skillmix.method.math_answers import score_math

Kind = Literal["math", "choice", "math_verify"]  # math_verify: the optional second scorer
TIMED_OUT = "timed out"
CRASHED = "scorer crashed"
DEFAULT_LIMIT_S = 10.0
MEMORY_LIMIT_MB = 4096  # a hostile power tower fails with MemoryError before it swaps


@dataclass(frozen=True)
class Verdict:
    """One answer's verdict; `reason` is "" when correct, else why not."""

    correct: bool
    reason: str
    extracted: str = ""


def score_one(kind: Kind, response: str, reference: str) -> Verdict:
    """The verdict without a time limit (call it only where hanging does no harm)."""
    if kind == "math_verify":
        return _math_verify(response, reference)
    if kind == "choice":
        correct = choice_correct(response, reference)
        reason = "" if correct else "Solution is incorrect."
        return Verdict(correct, reason, multiple_choice_answer(response))
    verdict = score_math(response, reference)
    return Verdict(verdict.correct, verdict.reason, verdict.extracted)


def math_verify_available() -> bool:
    """Whether the optional second scorer (Hugging Face's math-verify) is installed."""
    return importlib.util.find_spec("math_verify") is not None


def _math_verify(response: str, reference: str) -> Verdict:
    """Hugging Face math-verify's verdict, offered by name (``--scorer math_verify``), never
    in place of the SkyThought-compatible default."""
    # deferred: an optional dependency (skillmix[math-verify]), imported only when chosen
    from math_verify import parse, verify

    gold = parse(f"${reference}$")
    answer = parse(response)
    correct = bool(verify(gold, answer))
    extracted = str(answer[1]) if len(answer) > 1 else (str(answer[0]) if answer else "")
    return Verdict(correct, "" if correct else "Solution is incorrect.", extracted)


def _cap_resources(memory_mb: int) -> None:
    if resource is None:
        return
    with suppress(ValueError, OSError):
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _cap_cpu(limit_s: float) -> None:
    """SIGXCPU (then SIGKILL) once this answer used its CPU budget: the orphan backstop."""
    if resource is None:
        return
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = used.ru_utime + used.ru_stime
    soft = math.ceil(spent + 2 * limit_s + 1)
    with suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 5))


def _serve(memory_mb: int) -> None:
    """The worker: one JSON request per stdin line, one verdict per stdout line, until EOF."""
    _cap_resources(memory_mb)
    sys.stdout.write("ready\n")  # imports done: the parent's clock per answer starts now
    sys.stdout.flush()
    for line in sys.stdin:
        kind, response, reference, limit_s = json.loads(line)
        _cap_cpu(limit_s)
        try:
            verdict = score_one(kind, response, reference)
        except MemoryError:
            verdict = Verdict(False, "out of memory")
        except Exception as exc:  # a scorer bug must not stop the other answers
            verdict = Verdict(False, f"scoring error: {type(exc).__name__}")
        sys.stdout.write(json.dumps([verdict.correct, verdict.reason, verdict.extracted]) + "\n")
        sys.stdout.flush()


class _Slot:
    """One worker process and the answer it is working on."""

    def __init__(self, memory_mb: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "skillmix.pipeline.scoring", str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.index: int | None = None
        self.deadline = 0.0
        self.started = False

    @property
    def out(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    def give(self, index: int, item: tuple[Kind, str, str], limit_s: float) -> bool:
        """Send one answer; False when the worker is gone."""
        assert self.process.stdin is not None
        if not self.started:  # wait out the imports, so they do not count against the answer
            self.started = self.out.readline() == "ready\n"
            if not self.started:
                return False
        try:
            self.process.stdin.write(json.dumps([*item, limit_s]) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        self.index, self.deadline = index, time.monotonic() + limit_s
        return True

    def read(self) -> Verdict:
        line = self.out.readline()
        if not line:
            return Verdict(False, CRASHED)
        correct, reason, extracted = json.loads(line)
        return Verdict(bool(correct), str(reason), str(extracted))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with suppress(Exception):
            self.process.communicate(timeout=5)
        self.index = None


@contextmanager
def _pool(count: int, memory_mb: int) -> Iterator[list[_Slot]]:
    slots: list[_Slot] = []
    try:
        slots.extend(_Slot(memory_mb) for _ in range(count))
        yield slots
    finally:
        for slot in slots:
            slot.stop()


def _settle(slot: _Slot, ready: bool, results: list[Verdict | None]) -> bool:
    """Record the busy slot's verdict if it has one or ran out of time; True if it must be
    replaced (its worker died or was killed)."""
    assert slot.index is not None
    if ready:
        verdict = slot.read()
        results[slot.index] = verdict
        slot.index = None
        return verdict.reason == CRASHED
    if time.monotonic() >= slot.deadline:
        results[slot.index] = Verdict(False, TIMED_OUT)
        return True
    return False


def score_responses(
    items: Sequence[tuple[Kind, str, str]],
    limit_s: float = DEFAULT_LIMIT_S,
    workers: int | None = None,
    memory_mb: int = MEMORY_LIMIT_MB,
) -> list[Verdict]:
    """Verdicts for (kind, response, reference) triples, in order; none takes over `limit_s`
    once its worker has started. `workers` defaults to the CPUs this process may use."""
    if not items:
        return []
    count = max(1, min(workers or len(os.sched_getaffinity(0)), len(items)))
    results: list[Verdict | None] = [None] * len(items)
    pending = list(enumerate(items))[::-1]
    with _pool(count, memory_mb) as slots, selectors.DefaultSelector() as selector:
        while True:
            for i, slot in enumerate(slots):
                if slot.index is None and pending:
                    index, item = pending.pop()
                    if not slot.give(index, item, limit_s):
                        results[index] = Verdict(False, CRASHED)
                        slot.stop()
                        slots[i] = _Slot(memory_mb)
            busy = [s for s in slots if s.index is not None]
            if not busy:
                break
            _wait_and_settle(selector, slots, busy, results, memory_mb)
    return [r if r is not None else Verdict(False, CRASHED) for r in results]


def _wait_and_settle(
    selector: selectors.BaseSelector,
    slots: list[_Slot],
    busy: list[_Slot],
    results: list[Verdict | None],
    memory_mb: int,
) -> None:
    """Wait for the first verdict or deadline, then settle every busy slot."""
    for slot in busy:
        selector.register(slot.out, selectors.EVENT_READ, slot)
    try:
        timeout = max(0.0, min(s.deadline for s in busy) - time.monotonic())
        ready = {key.data for key, _ in selector.select(timeout)}
    finally:
        for slot in busy:
            selector.unregister(slot.out)
    for slot in busy:
        if _settle(slot, slot in ready, results):
            slot.stop()
            slots[slots.index(slot)] = _Slot(memory_mb)


def score_math_answers(
    pairs: Sequence[tuple[str, str]], limit_s: float = DEFAULT_LIMIT_S, workers: int | None = None
) -> list[Verdict]:
    """Math verdicts for (response, reference answer) pairs, each under `limit_s` seconds."""
    return score_responses([("math", r, a) for r, a in pairs], limit_s, workers)


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else MEMORY_LIMIT_MB)
