"""The OpenAI wire format as the mock speaks it: request validation, error and completion bodies.

Kept apart from the service's state and timing (:mod:`skillmix.backends.mock_service`) so the
shapes a client sees can be read in one place, next to the checks a real vLLM server makes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from skillmix.backends.mock_prompts import Message, normalize_messages
from skillmix.backends.mock_replies import MockReply

MAX_N = 128
"""The largest ``n`` (choices per request) the mock accepts."""


def request_key(
    model: Any,
    conversation: Any,
    n: Any,
    temperature: Any,
    max_tokens: Any,
    seed: Any,
    *,
    field_name: str = "messages",
) -> str:
    """SHA-256 of the canonical request body (what the request log calls ``key``)."""
    doc = {
        "model": model,
        field_name: conversation,
        "n": n,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "seed": seed,
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class BadRequest(Exception):
    """A request the server refuses with 400; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    *,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An OpenAI-style error body, so clients classify it the same way as a real server's."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )


def json_response(data: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON reply; non-ASCII text is sent as is, as vLLM does."""
    return web.Response(
        body=json.dumps(data, ensure_ascii=False).encode(),
        content_type="application/json",
        headers=headers,
    )


def _is_int(value: Any) -> bool:
    """JSON integers only: ``true`` is not 1 here."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class ParsedRequest:
    """The fields of a valid completion request that a reply depends on."""

    model: str
    messages: tuple[Message, ...]
    n: int
    temperature: float | None
    max_tokens: int | None
    seed: int | None


def parse_body(data: Any, chat: bool) -> ParsedRequest:
    """Validate a chat (``messages``) or text (``prompt``) completion body; :class:`BadRequest`
    says which field is wrong, in the words a real server would use."""
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    if data.get("stream"):
        raise BadRequest("streaming is not supported by the mock server", "stream")
    if chat:
        try:
            messages = normalize_messages(data.get("messages"))
        except ValueError as exc:
            raise BadRequest(str(exc), "messages") from None
    else:
        prompt = data.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' must be a string (one prompt per request)", "prompt")
        messages = (("user", prompt),)
    n = data.get("n")
    n = 1 if n is None else n
    if not _is_int(n) or not 1 <= n <= MAX_N:
        raise BadRequest(f"'n' must be an integer in [1, {MAX_N}]", "n")
    temperature = data.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float)
        or isinstance(temperature, bool)
        or not 0 <= temperature <= 2
    ):
        raise BadRequest("'temperature' must be a number in [0, 2]", "temperature")
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        max_tokens = data.get("max_completion_tokens")
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise BadRequest("'max_tokens' must be a positive integer", "max_tokens")
    seed = data.get("seed")
    if seed is not None and not _is_int(seed):
        raise BadRequest("'seed' must be an integer", "seed")
    return ParsedRequest(
        model=model,
        messages=messages,
        n=n,
        temperature=None if temperature is None else float(temperature),
        max_tokens=max_tokens,
        seed=seed,
    )


def completion_body(
    chat: bool,
    model: str,
    replies: Sequence[MockReply],
    prompt_tokens: int,
    completion_tokens: int,
    created: int,
) -> dict[str, Any]:
    """A ``chat.completion`` or ``text_completion`` object, as vLLM returns it."""
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if chat:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": r.text},
                    "logprobs": None,
                    "finish_reason": r.finish_reason,
                }
                for i, r in enumerate(replies)
            ],
            "usage": usage,
        }
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
            for i, r in enumerate(replies)
        ],
        "usage": usage,
    }
