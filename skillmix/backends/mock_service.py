"""The mock server's request handling: one :class:`MockService` per running app.

It decides what each request gets, in the order a real vLLM server would: the checks
(authorization, a valid body, the model loaded and served, the rate limits), then the seeded
faults of :mod:`skillmix.backends.mock_faults`, then the pure replies of
:mod:`skillmix.backends.mock_replies`, after the configured latency. It keeps the counters
behind ``GET /stats`` and the request log. Starting it on a socket is
:mod:`skillmix.backends.mock_server`'s job.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_faults import (
    ATTEMPT_HEADER,
    SAMPLE_HEADER,
    Injection,
    InjectionRates,
    RateLimiter,
    format_reset,
    injection_for,
)
from skillmix.backends.mock_protocol import (
    BadRequest,
    ParsedRequest,
    completion_body,
    error_response,
    json_response,
    parse_body,
    request_key,
)
from skillmix.backends.mock_replies import MockReply, ReplyParams, estimate_tokens, mock_replies

DEFAULT_COMPLETION_ESTIMATE = 256
"""Tokens per choice the rate limiter books for a request without ``max_tokens``."""
OWNER = "skillmix-mock"
ANY_MODEL_ID = "skillmix-mock"
"""What ``GET /v1/models`` lists when the server answers for any model name."""


def new_counters() -> dict[str, Any]:
    """The counters of a fresh server, as ``GET /stats`` reports them."""
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
        self.counters = new_counters()
        self.ready_at: float | None = None
        self._log: IO[str] | None = None

    # -- lifecycle

    def open(self) -> None:
        """Open the request log and start the ``startup_delay`` clock: the app is about to serve."""
        if self.config.request_log:
            path = Path(self.config.request_log)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._log = path.open("a", encoding="utf-8")
        self.ready_at = time.monotonic() + self.config.startup_delay

    def close(self) -> None:
        """Close the request log; safe to call twice."""
        if self._log is not None:
            self._log.close()
            self._log = None

    def stats(self) -> dict[str, Any]:
        """A copy of the counters, safe to hand to another thread."""
        snapshot = dict(self.counters)
        snapshot["by_path"] = dict(self.counters["by_path"])
        return snapshot

    def make_app(self) -> web.Application:
        """The aiohttp app routing the endpoints to this service (bodies up to 16 MiB)."""
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
        """Whether the simulated model load (``startup_delay``) is over."""
        return self.ready_at is not None and time.monotonic() >= self.ready_at

    def _count(self, path: str) -> None:
        """Count a request, in total and by path."""
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
        """Whether the bearer token matches ``api_key`` (always, without one); constant-time."""
        key = self.config.api_key
        if not key:
            return True
        header = request.headers.get("Authorization", "")
        return hmac.compare_digest(header.encode(), f"Bearer {key}".encode())

    def _unauthorized(self) -> web.Response:
        """The 401 an OpenAI-compatible server sends for a wrong key."""
        return error_response(
            401,
            "Incorrect API key provided.",
            "invalid_request_error",
            "invalid_api_key",
        )

    def _write_log(self, path: str, model: Any, key: str | None, status: int | str, n: Any) -> None:
        """Append one JSON line per completion request, flushed so tests can read it live."""
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
        """``GET /health``: 503 while loading, then 200 ``{}``, as vLLM answers."""
        self._count(request.path)
        if not self.ready:
            return error_response(
                503, "the model is still loading", "service_unavailable", "not_ready"
            )
        return json_response({})

    async def stats_handler(self, request: web.Request) -> web.Response:
        """``GET /stats``: the counters (not counted itself, so polling does not skew them)."""
        return json_response(self.stats())

    async def models(self, request: web.Request) -> web.Response:
        """``GET /v1/models``: the served models, or a placeholder when any name is served."""
        self._count(request.path)
        if not self._authorized(request):
            return self._unauthorized()
        names = list(self.config.models) or [ANY_MODEL_ID]
        data = [
            {"id": n, "object": "model", "created": 0, "owned_by": OWNER, "root": self._root(n)}
            for n in names
        ]
        return json_response({"object": "list", "data": data})

    def _root(self, name: str) -> str:
        """What answers for ``name`` (vLLM reports the weights here): the mock's seed and the
        model's quality, so that a differently configured mock is another server."""
        quality = self.config.quality_of(name)
        return f"skillmix-mock seed={self.config.seed} quality={quality}"

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``."""
        return await self._completion(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/completions`` (one string prompt per request)."""
        return await self._completion(request, chat=False)

    async def _completion(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        """Count and log the request whatever happens to it, including a dropped connection."""
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
        """The answer to one completion request; None when the connection is dropped."""
        config = self.config
        received = time.monotonic()  # latency counts from here: the server's own work is inside it
        admitted = await self._admit(request, chat, state)
        if isinstance(admitted, web.Response):
            return admitted
        parsed = admitted.parsed
        # Failure injection: a pure function of the seed, the request and its try number.
        request_id, attempt = self._try_of(request, admitted.data)
        inject = injection_for(config.seed, request_id, attempt, parsed.n, self._rates)
        delay = (config.latency_ms + inject.jitter * config.jitter_ms) / 1000.0
        if inject.drop or inject.fail:
            await _sleep(received + delay - time.monotonic())
            return self._injected_failure(request, inject, admitted.headers)
        replies = self._replies(parsed, admitted.quality, inject)
        completion_tokens = sum(estimate_tokens(r.text) for r in replies)
        if inject.stall:
            self.counters["timeouts"] += 1
            await _sleep(config.timeout_seconds)
        latency = delay + config.per_token_ms * completion_tokens / 1000.0
        await _sleep(received + latency - time.monotonic())
        return self._answer(chat, admitted, replies, completion_tokens)

    async def _admit(
        self, request: web.Request, chat: bool, state: dict[str, Any]
    ) -> _Admitted | web.Response:
        """Run the checks a real server makes before any work; a refusal comes back counted."""
        counters = self.counters
        if not self._authorized(request):
            counters["client_errors"] += 1
            return self._unauthorized()
        try:
            data = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            counters["client_errors"] += 1
            return error_response(
                400, "the request body is not valid JSON", "invalid_request_error"
            )
        _note_for_log(state, data, chat)
        try:
            parsed = parse_body(data, chat)
        except BadRequest as exc:
            counters["client_errors"] += 1
            return error_response(400, exc.message, "invalid_request_error", param=exc.param)
        if not self.ready:
            counters["unavailable"] += 1
            return error_response(
                503, "the model is still loading", "service_unavailable", "not_ready"
            )
        quality = self.config.quality_of(parsed.model)
        if quality is None:
            counters["client_errors"] += 1
            return error_response(
                404,
                f"The model `{parsed.model}` does not exist.",
                "invalid_request_error",
                "model_not_found",
                param="model",
            )
        prompt_tokens = estimate_tokens("".join(text for _, text in parsed.messages))
        headers = self._rate_limit(parsed, prompt_tokens)
        if isinstance(headers, web.Response):
            return headers
        return _Admitted(data, parsed, quality, prompt_tokens, headers)

    def _rate_limit(
        self, parsed: ParsedRequest, prompt_tokens: int
    ) -> dict[str, str] | web.Response:
        """The x-ratelimit-* headers for an admitted request, or its 429 (counted).

        The limiter books the prompt and ``max_tokens`` per choice up front: the reply's
        length is not known yet."""
        if not self.limiter.enabled:
            return {}
        config = self.config
        budget = prompt_tokens + parsed.n * (parsed.max_tokens or DEFAULT_COMPLETION_ESTIMATE)
        decision = self.limiter.acquire(budget, time.monotonic())
        headers = decision.headers()
        if decision.allowed:
            return headers
        self.counters["rate_limited"] += 1
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
        return error_response(
            429, message, decision.reason or "requests", "rate_limit_exceeded", headers=headers
        )

    def _injected_failure(
        self, request: web.Request, inject: Injection, headers: dict[str, str]
    ) -> web.Response | None:
        """A dropped connection (None) or a 500, whichever ``inject`` draws (drop wins)."""
        if inject.drop:
            self.counters["dropped"] += 1
            transport = request.transport
            if transport is not None:
                transport.abort()
            return None
        self.counters["failed"] += 1
        return error_response(
            500, "injected failure (mock server)", "server_error", "internal_error",
            headers=headers,
        )  # fmt: skip

    def _replies(self, parsed: ParsedRequest, quality: float, inject: Injection) -> list[MockReply]:
        """The request's choices, with the malformed ones ``inject`` drew (counted)."""
        params = ReplyParams(
            seed=self.config.seed,
            model=parsed.model,
            quality=quality,
            temperature=parsed.temperature,
            max_tokens=parsed.max_tokens,
            request_seed=parsed.seed,
        )
        replies = mock_replies(
            parsed.messages,
            params,
            parsed.n,
            malformed=inject.malformed,
            answers=self.config.answers,
        )
        self.counters["malformed"] += sum(1 for r in replies if r.malformed)
        return replies

    def _answer(
        self, chat: bool, admitted: _Admitted, replies: list[MockReply], completion_tokens: int
    ) -> web.Response:
        """The 200 reply, counted with its token usage."""
        prompt_tokens = admitted.prompt_tokens
        created = int(time.time())
        model = admitted.parsed.model
        body = completion_body(chat, model, replies, prompt_tokens, completion_tokens, created)
        counters = self.counters
        counters["ok"] += 1
        counters["prompt_tokens"] += prompt_tokens
        counters["completion_tokens"] += completion_tokens
        return json_response(body, admitted.headers)


@dataclass(frozen=True)
class _Admitted:
    """A request that passed the checks, with what the rest of the handling needs."""

    data: Any
    """The decoded body: the try identity (:meth:`MockService._try_of`) hashes it."""
    parsed: ParsedRequest
    quality: float
    prompt_tokens: int
    headers: dict[str, str]
    """The x-ratelimit-* headers, sent with every later answer (empty without limits)."""


def _note_for_log(state: dict[str, Any], data: Any, chat: bool) -> None:
    """Record model, n and the request key for the request log, even if the body is invalid."""
    if not isinstance(data, dict):
        return
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


async def _sleep(seconds: float) -> None:
    """Sleep until a deadline given as seconds from now; one already passed costs nothing."""
    if seconds > 0:
        await asyncio.sleep(seconds)
