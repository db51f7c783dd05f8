"""One async client for every OpenAI-compatible endpoint (vLLM, the OpenAI API, our mock).

Built on the official SDK (``AsyncOpenAI``) with its own retries switched off: we retry here,
with full-jitter backoff that honours ``Retry-After``, pace to the RPM/TPM budget, count
usage, and consult the response cache before every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import math
import random
import time
import weakref
from dataclasses import dataclass
from typing import Any

from skillmix import settings
from skillmix.backends.base import BackendError, ChatResult
from skillmix.backends.cache import ResponseCache, cache_key
from skillmix.backends.mock_faults import ATTEMPT_HEADER, SAMPLE_HEADER
from skillmix.backends.ratelimit import Pacer
from skillmix.backends.retry import MalformedResponse, backoff_delay, classify_retry
from skillmix.config import DEFAULT_BASE_URLS, ModelSpec
from skillmix.errors import SkillmixError
from skillmix.retrying import RetryPolicy, retry_async
from skillmix.urls import REDACTED, redact_url


@dataclass
class ClientStats:
    """Live counters for progress displays and reports."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    failures: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    paced_seconds: float = 0.0


def parse_completion(data: Any) -> ChatResult:
    """A ChatResult from a chat-completion JSON body (choices in index order)."""
    try:
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        usage = data.get("usage") or {}
        return ChatResult(
            texts=[(c.get("message") or {}).get("content") or "" for c in choices],
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reasons=[str(c.get("finish_reason")) for c in choices],
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise MalformedResponse(f"not a chat completion: {exc!r}") from None


def _raw_response_type() -> Any:
    """The HTTP response class of the installed SDK: the one its own HTTP client returns
    (httpx2 in openai 3, httpx before; both may be installed side by side)."""
    import openai  # deferred: openai takes ~1 s to import; report/aggregate never call a server

    http_module = openai.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0]
    return importlib.import_module(http_module).Response


def estimate_tokens(messages: list[dict[str, str]], max_tokens: int | None, n: int) -> int:
    chars = sum(len(m.get("content", "")) for m in messages)
    return math.ceil(chars / 4) + n * (max_tokens or 256)


def resolve_endpoint(spec: ModelSpec, mock_base_url: str | None = None) -> str:
    if spec.base_url and REDACTED in spec.base_url:
        raise SkillmixError(
            f"{spec.name}: the run holds its base URL without the credentials it had "
            f"({spec.base_url}); they are never stored",
            hint="continue from the experiment file: skillmix evaluate -f FILE --resume",
        )
    if spec.base_url:
        return spec.base_url
    if spec.backend == "mock":
        if mock_base_url is None:
            raise SkillmixError(
                f"{spec.name}: the mock backend needs a base_url or the built-in mock server"
            )
        return mock_base_url
    if spec.backend in DEFAULT_BASE_URLS:
        return DEFAULT_BASE_URLS[spec.backend]
    raise SkillmixError(
        f"{spec.name}: backend {spec.backend} needs base_url",
        hint="e.g. base_url: http://localhost:8000/v1 for a local vLLM server",
    )


def resolve_api_key(spec: ModelSpec) -> str:
    env = spec.resolved_api_key_env()
    if env is None:
        return settings.dummy_api_key()
    value = settings.api_key(env)
    if not value:
        raise SkillmixError(
            f"{spec.name}: environment variable {env} is not set",
            hint=f"export {env}=... (the API key)",
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in value):  # sent as a header, it would break
        raise SkillmixError(
            f"{spec.name}: the key in {env} contains a control character (a newline?)",
            hint=f"export {env} without a trailing newline, e.g. {env}=$(cat key | tr -d '\\n')",
        )
    return value


# what a server says of a model in GET /models that names what answers: not `created` (a
# server restart changes it), the rest (vLLM's `root` is the weights it loaded)
_SERVED_KEYS = ("id", "root", "parent", "owned_by")
# one GET /models per SDK client (clients of one endpoint and key share one), asked once
_served_lists: weakref.WeakKeyDictionary[Any, asyncio.Task[list[dict[str, Any]]]] = (
    weakref.WeakKeyDictionary()
)


SEEDED_BACKENDS = ("vllm", "mock")  # backends that take a seed per request and honour it


def request_seed(base: int | None, sample: str) -> int:
    """The seed sent with one draw to a backend that takes one per request (vLLM): a function
    of the draw's name (round, index, try: see ``ChatClient.chat``) and the experiment's
    sampling seed, so that a rerun at temperature > 0 draws the same tokens, and different
    draws of one prompt (generation rounds) still differ."""
    digest = hashlib.sha256(f"{base or 0}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


async def _served_models(sdk: Any) -> list[dict[str, Any]]:
    try:
        page = await sdk.models.list()
        return [m.model_dump() async for m in page]
    except Exception:  # a server without /models: requests will tell what is wrong
        return []


async def endpoint_identity(sdk: Any, base_url: str, spec: ModelSpec) -> dict[str, Any]:
    """What serves ``spec`` at ``base_url``, for cache keys: the URL without credentials (the
    built-in mock, whose port changes every run, by name), what the server reports of the
    model in ``GET /models`` (its weights and revision where it says them), and for vLLM the
    weights and arguments skillmix asked for. A server that does not list models is known by
    its URL alone."""
    builtin = spec.backend == "mock" and not spec.base_url
    url = "builtin-mock" if builtin else redact_url(base_url.rstrip("/")).lower()
    listing = _served_lists.get(sdk)
    if listing is None or listing.get_loop() is not asyncio.get_running_loop():
        listing = _served_lists[sdk] = asyncio.ensure_future(_served_models(sdk))
    entry = next((m for m in await listing if m.get("id") == spec.model), {})
    served = {k: v for k, v in entry.items() if k in _SERVED_KEYS or "revision" in k}
    identity: dict[str, Any] = {"url": url, "served": served or None}
    if spec.backend == "vllm":
        identity["weights"] = {"model": spec.vllm.model or spec.model, "args": spec.vllm.args}
    return identity


def sdk_client(base_url: str, api_key: str, timeout: float) -> Any:
    """The SDK client a ChatClient sends through. Its aiohttp transport costs less CPU per
    request than the default (httpx); at hundreds of requests per second the client's CPU is
    what bounds throughput."""
    from openai import (  # deferred: openai takes ~1 s to import; report/aggregate never call a server
        AsyncOpenAI,
        DefaultAioHttpClient,
    )

    return AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=0,
        timeout=timeout,
        http_client=DefaultAioHttpClient(timeout=timeout),
    )


class ChatClient:
    """Chat completions for one model spec, shared by every task that uses it (a
    ``ChatBackend``). ``rpm``, ``tpm`` and ``concurrency`` override the spec's budgets (a pod's
    share of them on Kubernetes: see ``factory.budget_share_of``)."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        base_url: str,
        api_key: str,
        cache: ResponseCache | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        concurrency: int | None = None,
        seed: int = 0,
        sdk: Any = None,
    ) -> None:
        """``sdk``: an SDK client to share with other ChatClients of the same endpoint and key
        (one connection pool instead of one per model; see ``sdk_client``)."""
        self.spec = spec
        self.base_url = base_url
        self.cache = cache
        self.stats = ClientStats()
        self.pacer = Pacer(spec.rpm if rpm is None else rpm, spec.tpm if tpm is None else tpm)
        self._semaphore = asyncio.Semaphore(
            spec.concurrency if concurrency is None else concurrency
        )
        self._rng = random.Random(seed)
        self._client = sdk if sdk is not None else sdk_client(base_url, api_key, spec.timeout)
        self._params = spec.sampling.request_params()  # fixed for the client's lifetime
        self.retry_policy = RetryPolicy(
            name=f"model {spec.name}",
            retry_on=lambda exc: classify_retry(exc) is not None,
            delay=self._backoff,
            attempts=spec.max_retries + 1,
        )
        self.fatal: BackendError | None = None
        self.endpoint: dict[str, Any] | None = None  # what serves the model: see endpoint_identity

    async def close(self) -> None:
        if not self._client.is_closed():  # a shared SDK client closes once
            await self._client.close()

    def key_for(self, messages: list[dict[str, str]], n: int, sample: str) -> str:
        """The cache key: everything that determines the reply, the server that gives it
        included (a different server, URL or weights behind the same model name must not
        answer from the old server's cache)."""
        return cache_key(
            {
                "model": self.spec.identity(),
                "endpoint": self.endpoint,
                "messages": messages,
                "params": self._params,
                "n": n,
                "sample": sample,
            }
        )

    async def resolve_endpoint(self) -> dict[str, Any]:
        """The endpoint's identity, asked once per client (see :func:`endpoint_identity`)."""
        if self.endpoint is None:
            self.endpoint = await endpoint_identity(self._client, self.base_url, self.spec)
        return self.endpoint

    async def chat(self, messages: list[dict[str, str]], *, n: int = 1, sample: str) -> ChatResult:
        """Ask for ``n`` choices. ``sample`` names which draw this is (round, index, attempt), so
        repeated samples of the same prompt are distinct cache entries."""
        if self.cache is not None and self.endpoint is None:
            await self.resolve_endpoint()
        key = self.key_for(messages, n, sample) if self.cache is not None else ""
        if self.cache is not None:
            hit = await self.cache.get(key)
            texts = hit.get("texts") if hit is not None else None
            if (
                hit is not None
                and isinstance(texts, list)
                and texts
                and all(isinstance(t, str) for t in texts)
            ):
                self.stats.cached += 1
                return ChatResult.from_cache_value(hit)
        async with self._semaphore:
            result = await self._request(messages, n, sample)
            # cache before releasing the slot: at most `concurrency` answers are ever uncached
            if self.cache is not None:
                await self.cache.put(key, result.as_cache_value())
        return result

    async def _request(self, messages: list[dict[str, str]], n: int, sample: str) -> ChatResult:
        """One request, retried under the client's policy (``retry_policy``): rate limits
        pause the pacer for every task of the model, other retries count as tries the mock
        injects faults into."""
        estimate = estimate_tokens(messages, self._params.get("max_tokens"), n)
        tries = 0  # requests sent
        injected = 0  # tries the mock injected into: its faults are a function of this number

        async def once() -> tuple[Any, ChatResult]:
            nonlocal tries
            if self.fatal is not None:
                raise self.fatal
            started = time.monotonic()
            await self.pacer.acquire(estimate)
            self.stats.paced_seconds += time.monotonic() - started
            self.stats.requests += 1
            tries += 1
            # The client's generic post (documented by openai-python for such uses) keeps
            # the SDK's transport, auth and typed errors, and skips its per-field parameter
            # transformation, which walks every message and dominated our CPU per request.
            raw = await self._client.post(
                "/chat/completions",
                cast_to=_raw_response_type(),
                body=self._body(messages, n, sample),
                options=self._mock_headers(sample, injected),
            )
            try:
                body = raw.json()
            except ValueError:
                raise MalformedResponse("the body is not JSON") from None
            return raw, parse_completion(body)

        def on_retry(exc: BaseException, delay: float) -> None:
            nonlocal injected
            decision = classify_retry(exc)
            if decision is not None and decision.kind == "rate_limit":
                self.stats.rate_limited += 1
                self.pacer.pause(delay)
            if getattr(exc, "status_code", None) not in (429, 503):
                injected += 1
            self.stats.retries += 1

        try:
            raw, completion = await retry_async(once, self.retry_policy, on_retry=on_retry)
        except BackendError:
            raise  # fatal for the model (see ``fatal``): already said
        except Exception as exc:
            self.stats.failures += 1
            raise self._final_error(exc, tries - 1) from None
        self.pacer.observe_headers(raw.headers)
        self.pacer.settle(estimate, completion.prompt_tokens + completion.completion_tokens)
        self.stats.prompt_tokens += completion.prompt_tokens
        self.stats.completion_tokens += completion.completion_tokens
        completion.attempts = tries
        return completion

    def _backoff(self, exc: BaseException, attempt: int) -> float:
        decision = classify_retry(exc)
        assert decision is not None  # the policy retries only what classify_retry names
        return backoff_delay(attempt, decision, rng=self._rng)

    def _body(self, messages: list[dict[str, str]], n: int, sample: str) -> dict[str, Any]:
        body = {"model": self.spec.model, "messages": messages, "n": n, **self._params}
        if self.spec.backend in SEEDED_BACKENDS:
            body["seed"] = request_seed(self._params.get("seed"), sample)
        return body

    def _mock_headers(self, sample: str, tried: int) -> Any:
        """The mock backend draws a request's faults from its name for it and the try number,
        so identical runs see the same faults (other backends get no extra headers)."""
        if self.spec.backend != "mock":
            return {}
        if not sample.isascii():
            sample = hashlib.sha256(sample.encode()).hexdigest()
        return {"headers": {SAMPLE_HEADER: sample, ATTEMPT_HEADER: str(tried)}}

    def _final_error(self, exc: Exception, attempt: int) -> BackendError:
        import openai  # deferred: openai takes ~1 s to import; report/aggregate never call a server

        where = f"{self.spec.name} ({self.spec.model} at {redact_url(self.base_url)})"
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            self.fatal = BackendError(
                f"{where}: the API key was rejected ({exc.status_code})",
                status=exc.status_code,
                fatal=True,
            )
            return self.fatal
        if isinstance(exc, openai.NotFoundError):
            self.fatal = BackendError(f"{where}: model not found (404)", status=404, fatal=True)
            return self.fatal
        if isinstance(exc, openai.APIStatusError):
            message = _error_message(exc)
            return BackendError(
                f"{where}: HTTP {exc.status_code} after {attempt + 1} attempts: {message}",
                status=exc.status_code,
            )
        if isinstance(exc, MalformedResponse):
            return BackendError(f"{where}: malformed response after {attempt + 1} attempts: {exc}")
        kind = "timed out" if _timed_out(exc) else "connection failed"
        return BackendError(f"{where}: {kind} after {attempt + 1} attempts")


def _timed_out(exc: BaseException) -> bool:
    """A real timeout, not a dropped connection (the SDK's aiohttp transport reports a server
    that hung up as a connect timeout; the root cause tells them apart)."""
    import openai  # deferred: openai takes ~1 s to import; report/aggregate never call a server

    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            break
        if "Disconnected" in type(cause).__name__ or isinstance(cause, ConnectionError):
            return False
        cause = cause.__cause__ or cause.__context__
    return isinstance(exc, openai.APITimeoutError)


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return " ".join(str(inner["message"]).split())[:200]
    return " ".join(str(exc).split())[:200]


async def preflight(spec: ModelSpec, base_url: str, api_key: str, timeout: float = 10.0) -> None:
    """Fail fast (exit 2, nothing written) on an unreachable endpoint, a rejected key or an
    unknown model, before a run starts."""
    await preflight_endpoint([spec], base_url, api_key, timeout)


async def preflight_endpoint(
    specs: list[ModelSpec], base_url: str, api_key: str, timeout: float = 10.0
) -> None:
    """:func:`preflight` for every spec served by one endpoint with one key: one request
    (``GET /models``) however many models the endpoint serves."""
    import openai  # deferred: openai takes ~1 s to import; report/aggregate never call a server

    first = specs[0]
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=1, timeout=timeout)
    try:
        models = await client.models.list()
        ids = [m.id async for m in models]
    except openai.AuthenticationError:
        env = first.resolved_api_key_env() or "the API key"
        raise SkillmixError(
            f"{first.name}: {redact_url(base_url)} rejected the API key", hint=f"check {env}"
        ) from None
    except openai.APIConnectionError:
        raise SkillmixError(
            f"{first.name}: cannot reach {redact_url(base_url)}",
            hint="check base_url and that the server is running",
        ) from None
    except openai.APIStatusError as exc:
        if exc.status_code == 404:
            return  # some compatible servers do not list models; requests will tell
        raise SkillmixError(
            f"{first.name}: {redact_url(base_url)} answered HTTP {exc.status_code} to GET /models"
        ) from None
    finally:
        await client.close()
    served = set(ids)
    for spec in specs:
        if spec.backend in ("vllm", "mock") and ids and spec.model not in served:
            raise SkillmixError(
                f"{spec.name}: {redact_url(base_url)} does not serve model {spec.model!r}",
                hint=f"served: {', '.join(ids[:5])}",
            )
