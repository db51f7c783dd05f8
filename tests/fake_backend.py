"""An in-memory ``ChatBackend`` for task tests (like inspect_ai's mock model): scripted replies,
every call recorded, no network."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from skillmix.backends.base import BackendError, ChatResult

Reply = str | BackendError
Script = Callable[[list[dict[str, str]], str], Reply]


@dataclass
class Call:
    messages: list[dict[str, str]]
    n: int
    sample: str


@dataclass
class FakeBackend:
    """``script(messages, sample)`` gives each choice's reply, or the error to raise (choices
    of an n-request are asked as ``sample#choice``). Tokens: 10 per prompt, 5 per choice."""

    script: Script
    calls: list[Call] = field(default_factory=list)
    closed: bool = False

    async def chat(self, messages: list[dict[str, str]], *, n: int = 1, sample: str) -> ChatResult:
        self.calls.append(Call([dict(m) for m in messages], n, sample))
        await asyncio.sleep(0)  # let other tasks interleave, as a real client would
        texts = []
        for choice in range(n):
            reply = self.script(messages, sample if n == 1 else f"{sample}#{choice}")
            if isinstance(reply, BackendError):
                raise reply
            texts.append(reply)
        return ChatResult(texts=texts, prompt_tokens=10, completion_tokens=5 * n)

    async def close(self) -> None:
        self.closed = True


def student_reply(messages: list[dict[str, str]], sample: str) -> Reply:
    """A student's reply naming its combination and turn (samples ``gen:r{g}:i{i}:t{t}``)."""
    turn = int(re.search(r":t(\d+)$", sample).group(1))  # type: ignore[union-attr]
    index = int(re.search(r":i(\d+):", sample).group(1))  # type: ignore[union-attr]
    return f"Draft {turn}.\nAnswer: Story {index} turn {turn}.\nExplanation: none."


def any_reply(messages: list[dict[str, str]], sample: str) -> Reply:
    """A student's reply for generation samples, a (unreadable) verdict for anything else."""
    if sample.startswith("gen:"):
        return student_reply(messages, sample)
    return "No verdict."
