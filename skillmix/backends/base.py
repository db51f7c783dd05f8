"""What the task logic needs from a model: ``ChatBackend``, its reply and its error.

``pipeline/generate.py`` and ``pipeline/grade.py`` depend on this Protocol, not on
``ChatClient`` (the OpenAI-compatible client in ``client.py``), so a test can run generation
and grading against an in-memory fake.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from skillmix.errors import RunFailedError


class BackendError(RunFailedError):
    """A request failed for good (after retries, or with an error retrying cannot fix)."""

    def __init__(self, message: str, *, status: int | None = None, fatal: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.fatal = fatal  # wrong key, unknown model: every further request would fail too
        if fatal:
            self.exit_code = 2  # configuration, not luck: a Job should not retry


@dataclass
class ChatResult:
    """A normalised reply: scoring code never touches SDK objects."""

    texts: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    attempts: int = 0
    finish_reasons: list[str] = field(default_factory=list)

    def as_cache_value(self) -> dict[str, Any]:
        """What the response cache keeps (not whether it came from there, nor the attempts)."""
        return {k: v for k, v in asdict(self).items() if k not in ("cached", "attempts")}

    @classmethod
    def from_cache_value(cls, value: dict[str, Any]) -> ChatResult:
        return cls(
            texts=list(value["texts"]),
            prompt_tokens=int(value.get("prompt_tokens", 0)),
            completion_tokens=int(value.get("completion_tokens", 0)),
            finish_reasons=list(value.get("finish_reasons", [])),
            cached=True,
        )


class ChatBackend(Protocol):
    """A chat model as the tasks see it.

    ``chat`` asks for ``n`` choices of one conversation. ``sample`` names which draw this is
    (round, index, attempt), so repeated samples of the same prompt stay distinct (the response
    cache keys on it). A request that fails for good raises ``BackendError``: the task records
    a failed record, unless ``fatal`` (wrong key, unknown model), which stops the task.
    """

    async def chat(
        self, messages: list[dict[str, str]], *, n: int = 1, sample: str
    ) -> ChatResult: ...
