"""The mock backend: a real HTTP server speaking the subset of the vLLM/OpenAI API we use.

Endpoints: ``GET /health`` (503 during ``startup_delay``, then 200 ``{}``), ``GET /v1/models``,
``POST /v1/chat/completions``, ``POST /v1/completions`` and ``GET /stats`` (our counters).
Replies come from the pure functions of :mod:`skillmix.backends.mock_replies`; latency, failures
(500, dropped connections, long stalls, malformed grader replies) and RPM/TPM limits are
injected here. Every injection is a pure function of the seed, the request and its try number
(:func:`skillmix.backends.mock_replies.injection_for`): two runs that send the same requests see
the same faults, and the next try of a request draws afresh, so a retry can succeed. The try
number comes from the client when it sends :data:`ATTEMPT_HEADER` (skillmix's client does, with
:data:`SAMPLE_HEADER` naming the logical request), else from the server's count of identical
requests it has seen. Only the RPM/TPM limits depend on time.

Use :class:`MockServer` in tests and benchmarks (a background thread with its own event loop on
a real socket) and :func:`run_forever` from the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal

from aiohttp import web

from skillmix.backends.mock_replies import (
    ATTEMPT_HEADER,
    SAMPLE_HEADER,
    InjectionRates,
    Message,
    ReplyParams,
    estimate_tokens,
    injection_for,
    mock_replies,
    normalize_messages,
)
from skillmix.config import MOCK_DEFAULT_QUALITY as DEFAULT_QUALITY
from skillmix.errors import RunFailedError, SkillmixError

DEFAULT_COMPLETION_ESTIMATE = 256
RATE_WINDOW_SECONDS = 60.0
MAX_N = 128
START_TIMEOUT_SECONDS = 10.0
OWNER = "skillmix-mock"
ANY_MODEL_ID = "skillmix-mock"
COMPLETION_PATHS = ("/v1/chat/completions", "/v1/completions")


class MockServerError(RunFailedError):
    """The in-process mock server could not start or stop in time (one line, exit 1)."""


# ----------------------------------------------------------------------------- configuration


def parse_model_spec(spec: str) -> tuple[str, float]:
    """``NAME`` or ``NAME=QUALITY`` (QUALITY in [0, 1], default 0.7)."""
    name, sep, raw = spec.rpartition("=") if "=" in spec else (spec, "", "")
    name = name.strip()
    if not name:
        raise SkillmixError(f"--model {spec!r}: the model name is empty", hint="use NAME[=QUALITY]")
    if not sep:
        return name, DEFAULT_QUALITY
    try:
        quality = float(raw)
    except ValueError:
        raise SkillmixError(
            f"--model {spec!r}: quality {raw!r} is not a number", hint="use NAME[=QUALITY]"
        ) from None
    if not 0.0 <= quality <= 1.0:
        raise SkillmixError(f"--model {spec!r}: quality must be in [0, 1]")
    return name, quality


def parse_model_specs(specs: list[str] | tuple[str, ...]) -> dict[str, float]:
    models: dict[str, float] = {}
    for spec in specs:
        name, quality = parse_model_spec(spec)
        if name in models:
            raise SkillmixError(f"--model {name!r} is given twice")
        models[name] = quality
    return models


@dataclass(frozen=True)
class MockServerConfig:
    """Everything the mock server does. Rates are fractions of requests in [0, 1]."""

    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port."""
    seed: int = 0
    models: Mapping[str, float] = field(default_factory=dict)
    """Served model -> quality in [0, 1]; empty = any name is served at ``default_quality``."""
    default_quality: float = DEFAULT_QUALITY
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    """Uniform extra latency in [0, jitter_ms]."""
    per_token_ms: float = 0.0
    """Extra latency per completion token."""
    startup_delay: float = 0.0
    """Seconds during which /health (and the API) answer 503, like a model loading."""
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0
    malformed_rate: float = 0.0
    rpm: int = 0
    tpm: int = 0
    api_key: str | None = None
    request_log: str | Path | None = None
    port_file: str | Path | None = None
    shutdown_timeout: float = 2.0
    """Seconds in-flight requests get to finish when the server stops."""

    def validate(self) -> MockServerConfig:
        """Raise :class:`SkillmixError` (one line) for any out-of-range value."""
        for name in ("fail_rate", "drop_rate", "timeout_rate", "malformed_rate"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise SkillmixError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
        for name in (
            "latency_ms",
            "jitter_ms",
            "per_token_ms",
            "startup_delay",
            "timeout_seconds",
            "shutdown_timeout",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise SkillmixError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise SkillmixError(f"--{name} must be an integer >= 0 (0 = unlimited)")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise SkillmixError(f"--port must be in [0, 65535], got {self.port}")
        if not 0.0 <= self.default_quality <= 1.0:
            raise SkillmixError("the default quality must be in [0, 1]")
        for name, quality in self.models.items():
            if not name or not 0.0 <= quality <= 1.0:
                raise SkillmixError(f"--model {name!r}: quality must be in [0, 1]")
        if self.api_key is not None and not self.api_key.strip():
            raise SkillmixError("--api-key is empty")
        return self

    def quality_of(self, model: str) -> float | None:
        """The model's quality, or None when the server does not serve it."""
        if not self.models:
            return self.default_quality
        return self.models.get(model)


# ----------------------------------------------------------------------------- rate limits


def format_reset(seconds: float) -> str:
    """A duration as the x-ratelimit-reset-* headers write it: ``1.2s``, ``0.04s``, ``0s``."""
    text = f"{max(0.0, seconds):.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


@dataclass(frozen=True)
class RateDecision:
    """The limiter's answer for one request, with the values of the x-ratelimit-* headers."""

    allowed: bool
    reason: Literal["requests", "tokens"] | None
    retry_after: float
    """Seconds until the request would be admitted (0 when allowed)."""
    limit_requests: int
    remaining_requests: int
    reset_requests: float
    limit_tokens: int
    remaining_tokens: int
    reset_tokens: float
    too_large: bool = False
    """The request alone exceeds the token limit: waiting cannot help."""

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.limit_requests:
            out["x-ratelimit-limit-requests"] = str(self.limit_requests)
            out["x-ratelimit-remaining-requests"] = str(self.remaining_requests)
            out["x-ratelimit-reset-requests"] = format_reset(self.reset_requests)
        if self.limit_tokens:
            out["x-ratelimit-limit-tokens"] = str(self.limit_tokens)
            out["x-ratelimit-remaining-tokens"] = str(self.remaining_tokens)
            out["x-ratelimit-reset-tokens"] = format_reset(self.reset_tokens)
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return out


class RateLimiter:
    """Requests per minute and tokens per minute over a sliding window.

    The clock is a parameter (``now``, monotonic seconds) so the arithmetic can be tested
    without sleeping. A request is counted (with its tokens) only when it is admitted.
    ``reset_*`` is the time until the oldest admitted request leaves the window.
    """

    def __init__(self, rpm: int = 0, tpm: int = 0, window: float = RATE_WINDOW_SECONDS) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.window = window
        self._entries: deque[tuple[float, int]] = deque()
        self._tokens = 0

    @property
    def enabled(self) -> bool:
        return bool(self.rpm or self.tpm)

    def _evict(self, now: float) -> None:
        horizon = now - self.window
        entries = self._entries
        while entries and entries[0][0] <= horizon:
            self._tokens -= entries.popleft()[1]

    def acquire(self, tokens: int, now: float) -> RateDecision:
        """Admit (and count) a request of ``tokens`` tokens at time ``now``, or say how long to wait."""
        self._evict(now)
        entries = self._entries
        reason: Literal["requests", "tokens"] | None = None
        wait = 0.0
        too_large = False
        if self.rpm and len(entries) + 1 > self.rpm:
            reason = "requests"
            wait = entries[len(entries) - self.rpm][0] + self.window - now
        if self.tpm and self._tokens + tokens > self.tpm:
            if tokens > self.tpm:
                too_large = True
                token_wait = self.window
            else:
                need = self._tokens + tokens - self.tpm
                freed = 0
                token_wait = 0.0
                for stamp, size in entries:
                    freed += size
                    if freed >= need:
                        token_wait = stamp + self.window - now
                        break
            if reason is None or token_wait > wait:
                reason = "tokens"
            wait = max(wait, token_wait)
        allowed = reason is None
        if allowed:
            entries.append((now, tokens))
            self._tokens += tokens
        reset = entries[0][0] + self.window - now if entries else 0.0
        return RateDecision(
            allowed=allowed,
            reason=reason,
            retry_after=max(0.0, wait),
            limit_requests=self.rpm,
            remaining_requests=max(0, self.rpm - len(entries)) if self.rpm else 0,
            reset_requests=max(0.0, reset),
            limit_tokens=self.tpm,
            remaining_tokens=max(0, self.tpm - self._tokens) if self.tpm else 0,
            reset_tokens=max(0.0, reset),
            too_large=too_large,
        )


# ----------------------------------------------------------------------------- the service


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


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    *,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )


def _json_response(data: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data, ensure_ascii=False).encode(),
        content_type="application/json",
        headers=headers,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class _Parsed:
    model: str
    messages: tuple[Message, ...]
    n: int
    temperature: float | None
    max_tokens: int | None
    seed: int | None


def _parse_body(data: Any, chat: bool) -> _Parsed:
    if not isinstance(data, dict):
        raise _BadRequest("the request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("you must provide a model parameter", "model")
    if data.get("stream"):
        raise _BadRequest("streaming is not supported by the mock server", "stream")
    if chat:
        try:
            messages = normalize_messages(data.get("messages"))
        except ValueError as exc:
            raise _BadRequest(str(exc), "messages") from None
    else:
        prompt = data.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise _BadRequest("'prompt' must be a string (one prompt per request)", "prompt")
        messages = (("user", prompt),)
    n = data.get("n")
    n = 1 if n is None else n
    if not _is_int(n) or not 1 <= n <= MAX_N:
        raise _BadRequest(f"'n' must be an integer in [1, {MAX_N}]", "n")
    temperature = data.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float)
        or isinstance(temperature, bool)
        or not 0 <= temperature <= 2
    ):
        raise _BadRequest("'temperature' must be a number in [0, 2]", "temperature")
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        max_tokens = data.get("max_completion_tokens")
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise _BadRequest("'max_tokens' must be a positive integer", "max_tokens")
    seed = data.get("seed")
    if seed is not None and not _is_int(seed):
        raise _BadRequest("'seed' must be an integer", "seed")
    return _Parsed(
        model=model,
        messages=messages,
        n=n,
        temperature=None if temperature is None else float(temperature),
        max_tokens=max_tokens,
        seed=seed,
    )


def _new_counters() -> dict[str, Any]:
    return {
        "requests": 0,
        "ok": 0,
        "rate_limited": 0,
        "failed": 0,
        "dropped": 0,
        "timeouts": 0,
        "malformed": 0,
        "client_errors": 0,
        "unavailable": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "in_flight": 0,
        "max_in_flight": 0,
        "by_path": {},
    }


class MockService:
    """State and handlers of one mock server (one instance per running app)."""

    def __init__(self, config: MockServerConfig) -> None:
        self.config = config
        self.limiter = RateLimiter(config.rpm, config.tpm)
        self._rates = InjectionRates(
            drop=config.drop_rate,
            fail=config.fail_rate,
            stall=config.timeout_rate,
            malformed=config.malformed_rate,
        )
        self._tries: dict[str, int] = {}
        """Requests without ATTEMPT_HEADER: how many identical ones reached injection."""
        self.counters = _new_counters()
        self.ready_at: float | None = None
        self._log: IO[str] | None = None

    # -- lifecycle

    def open(self) -> None:
        if self.config.request_log:
            path = Path(self.config.request_log)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._log = path.open("a", encoding="utf-8")
        self.ready_at = time.monotonic() + self.config.startup_delay

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def stats(self) -> dict[str, Any]:
        snapshot = dict(self.counters)
        snapshot["by_path"] = dict(self.counters["by_path"])
        return snapshot

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/stats", self.stats_handler)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        return app

    # -- helpers

    @property
    def ready(self) -> bool:
        return self.ready_at is not None and time.monotonic() >= self.ready_at

    def _count(self, path: str) -> None:
        counters = self.counters
        counters["requests"] += 1
        by_path = counters["by_path"]
        by_path[path] = by_path.get(path, 0) + 1

    def _try_of(self, request: web.Request, data: Any) -> tuple[str, int]:
        """The request's identity for injection (a digest of its body, with the client's name
        for it) and its try number: the client's ATTEMPT_HEADER, else the count of identical
        requests this server has seen before."""
        sample = request.headers.get(SAMPLE_HEADER, "")
        body = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(f"{sample}\n{body}".encode()).hexdigest()
        header = request.headers.get(ATTEMPT_HEADER, "")
        if header.isascii() and header.isdigit():
            return digest, int(header)
        attempt = self._tries.get(digest, 0)
        self._tries[digest] = attempt + 1
        return digest, attempt

    def _authorized(self, request: web.Request) -> bool:
        key = self.config.api_key
        if not key:
            return True
        header = request.headers.get("Authorization", "")
        return hmac.compare_digest(header.encode(), f"Bearer {key}".encode())

    def _unauthorized(self) -> web.Response:
        return _error_response(
            401,
            "Incorrect API key provided.",
            "invalid_request_error",
            "invalid_api_key",
        )

    def _write_log(self, path: str, model: Any, key: str | None, status: int | str, n: Any) -> None:
        if self._log is None:
            return
        line = {
            "ts": round(time.time(), 6),
            "path": path,
            "model": model,
            "key": key,
            "status": status,
            "n": n,
        }
        self._log.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._log.flush()

    # -- handlers

    async def health(self, request: web.Request) -> web.Response:
        self._count(request.path)
        if not self.ready:
            return _error_response(
                503, "the model is still loading", "service_unavailable", "not_ready"
            )
        return _json_response({})

    async def stats_handler(self, request: web.Request) -> web.Response:
        return _json_response(self.stats())

    async def models(self, request: web.Request) -> web.Response:
        self._count(request.path)
        if not self._authorized(request):
            return self._unauthorized()
        names = list(self.config.models) or [ANY_MODEL_ID]
        data = [{"id": n, "object": "model", "created": 0, "owned_by": OWNER} for n in names]
        return _json_response({"object": "list", "data": data})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._completion(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._completion(request, chat=False)

    async def _completion(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        counters = self.counters
        path = request.path
        self._count(path)
        counters["in_flight"] += 1
        counters["max_in_flight"] = max(counters["max_in_flight"], counters["in_flight"])
        state: dict[str, Any] = {"model": None, "key": None, "n": None, "status": "cancelled"}
        try:
            response = await self._complete(request, chat, state)
            state["status"] = response.status if response is not None else "dropped"
            if response is None:
                # The transport is aborted: aiohttp's write fails quietly and nothing is sent.
                return web.Response(status=500)
            return response
        finally:
            counters["in_flight"] -= 1
            self._write_log(path, state["model"], state["key"], state["status"], state["n"])

    async def _complete(
        self, request: web.Request, chat: bool, state: dict[str, Any]
    ) -> web.Response | None:
        config = self.config
        counters = self.counters
        received = time.monotonic()  # latency counts from here: the server's own work is inside it
        if not self._authorized(request):
            counters["client_errors"] += 1
            return self._unauthorized()
        try:
            data = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            counters["client_errors"] += 1
            return _error_response(
                400, "the request body is not valid JSON", "invalid_request_error"
            )
        if isinstance(data, dict):
            state["model"] = data.get("model")
            state["n"] = data.get("n", 1)
            state["key"] = request_key(
                data.get("model"),
                data.get("messages") if chat else data.get("prompt"),
                data.get("n"),
                data.get("temperature"),
                data.get("max_tokens"),
                data.get("seed"),
                field_name="messages" if chat else "prompt",
            )
        try:
            parsed = _parse_body(data, chat)
        except _BadRequest as exc:
            counters["client_errors"] += 1
            return _error_response(400, exc.message, "invalid_request_error", param=exc.param)
        if not self.ready:
            counters["unavailable"] += 1
            return _error_response(
                503, "the model is still loading", "service_unavailable", "not_ready"
            )
        quality = config.quality_of(parsed.model)
        if quality is None:
            counters["client_errors"] += 1
            return _error_response(
                404,
                f"The model `{parsed.model}` does not exist.",
                "invalid_request_error",
                "model_not_found",
                param="model",
            )
        prompt_tokens = estimate_tokens("".join(text for _, text in parsed.messages))
        headers: dict[str, str] = {}
        if self.limiter.enabled:
            budget = prompt_tokens + parsed.n * (parsed.max_tokens or DEFAULT_COMPLETION_ESTIMATE)
            decision = self.limiter.acquire(budget, time.monotonic())
            headers = decision.headers()
            if not decision.allowed:
                counters["rate_limited"] += 1
                if decision.too_large:
                    message = (
                        f"Request too large for {parsed.model}: limit {config.tpm} tokens per "
                        f"minute, requested {budget}."
                    )
                else:
                    limit = config.rpm if decision.reason == "requests" else config.tpm
                    message = (
                        f"Rate limit reached for {parsed.model}: limit {limit} "
                        f"{decision.reason} per minute. Please try again in "
                        f"{format_reset(decision.retry_after)}."
                    )
                return _error_response(
                    429, message, decision.reason or "requests", "rate_limit_exceeded",
                    headers=headers,
                )  # fmt: skip

        # Failure injection: a pure function of the seed, the request and its try number.
        request_id, attempt = self._try_of(request, data)
        inject = injection_for(config.seed, request_id, attempt, parsed.n, self._rates)
        delay = (config.latency_ms + inject.jitter * config.jitter_ms) / 1000.0
        if inject.drop:
            await _sleep(received + delay - time.monotonic())
            counters["dropped"] += 1
            transport = request.transport
            if transport is not None:
                transport.abort()
            return None
        if inject.fail:
            await _sleep(received + delay - time.monotonic())
            counters["failed"] += 1
            return _error_response(
                500, "injected failure (mock server)", "server_error", "internal_error",
                headers=headers,
            )  # fmt: skip

        params = ReplyParams(
            seed=config.seed,
            model=parsed.model,
            quality=quality,
            temperature=parsed.temperature,
            max_tokens=parsed.max_tokens,
            request_seed=parsed.seed,
        )
        replies = mock_replies(parsed.messages, params, parsed.n, malformed=inject.malformed)
        completion_tokens = sum(estimate_tokens(r.text) for r in replies)
        counters["malformed"] += sum(1 for r in replies if r.malformed)
        if inject.stall:
            counters["timeouts"] += 1
            await _sleep(config.timeout_seconds)
        latency = delay + config.per_token_ms * completion_tokens / 1000.0
        await _sleep(received + latency - time.monotonic())

        created = int(time.time())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if chat:
            body: dict[str, Any] = {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": created,
                "model": parsed.model,
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
        else:
            body = {
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": created,
                "model": parsed.model,
                "choices": [
                    {"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
                    for i, r in enumerate(replies)
                ],
                "usage": usage,
            }
        counters["ok"] += 1
        counters["prompt_tokens"] += prompt_tokens
        counters["completion_tokens"] += completion_tokens
        return _json_response(body, headers)


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


# ----------------------------------------------------------------------------- running it


def bind_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening, non-blocking TCP socket (port 0 picks a free one)."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, type_, proto, _, address = infos[0]
        sock = socket.socket(family, type_, proto)
    except OSError as exc:
        raise SkillmixError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise SkillmixError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


async def _start(
    config: MockServerConfig, sock: socket.socket
) -> tuple[web.AppRunner, MockService]:
    service = MockService(config)
    service.open()
    runner = web.AppRunner(
        service.make_app(),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=config.shutdown_timeout,
    )
    try:
        await runner.setup()
        await web.SockSite(runner, sock, backlog=1024).start()
    except BaseException:
        await runner.cleanup()
        service.close()
        raise
    return runner, service


def _write_port_file(path: str | Path, port: int) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n", encoding="utf-8")
    os.replace(tmp, target)


async def serve(config: MockServerConfig) -> None:
    """Serve until cancelled: binds, writes ``port_file``, prints the ready line to stderr."""
    config.validate()
    sock = bind_socket(config.host, config.port)
    port = sock.getsockname()[1]
    runner, service = await _start(config, sock)
    try:
        if config.port_file:
            _write_port_file(config.port_file, port)
        print(
            f"mock server listening on http://{_url_host(config.host)}:{port}",
            file=sys.stderr,
            flush=True,
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        service.close()


def run_forever(config: MockServerConfig) -> None:
    """Blocking entry point for the CLI: returns normally on SIGTERM or SIGINT."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        server = asyncio.create_task(serve(config))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({server, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if server.done():
            server.result()  # re-raise a startup error
            return
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server

    asyncio.run(main())


class MockServer:
    """The mock server on a real socket, served from a background thread.

    >>> with MockServer(MockServerConfig(latency_ms=5)) as srv:
    ...     client = OpenAI(base_url=srv.base_url, api_key="x")
    """

    def __init__(self, config: MockServerConfig | None = None, **overrides: Any) -> None:
        config = config or MockServerConfig()
        self.config = replace(config, **overrides) if overrides else config
        self.config.validate()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._service: MockService | None = None

    @property
    def url(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{_url_host(self.config.host)}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> MockServer:
        if self._thread is not None:
            raise MockServerError("the mock server is already started")
        sock = bind_socket(self.config.host, self.config.port)
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._runner, self._service = loop.run_until_complete(_start(self.config, sock))
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"mock-server-{self.port}", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            sock.close()
            raise MockServerError(f"the mock server did not start within {timeout:g} s")
        if failure:
            self._thread.join(timeout)
            self._thread = None
            sock.close()
            raise MockServerError(f"the mock server failed to start: {failure[0]!r}")
        return self

    def stop(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Stop serving (in-flight requests get ``shutdown_timeout`` seconds); idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._thread = None
        if thread.is_alive() and not loop.is_closed():

            async def shutdown() -> None:
                if self._runner is not None:
                    await self._runner.cleanup()
                if self._service is not None:
                    self._service.close()

            future = asyncio.run_coroutine_threadsafe(shutdown(), loop)
            try:
                future.result(timeout)
            except Exception as exc:
                raise MockServerError(f"the mock server did not stop cleanly: {exc!r}") from exc
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (see ``GET /stats``)."""
        if self._service is None:
            return _new_counters()
        return self._service.stats()

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
