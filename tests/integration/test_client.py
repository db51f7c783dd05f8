"""ChatClient over real HTTP against the in-process mock server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from skillmix.backends import client as client_module
from skillmix.backends.base import BackendError, ChatResult
from skillmix.backends.cache import ResponseCache
from skillmix.backends.client import ChatClient, preflight
from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_faults import RateLimiter
from skillmix.backends.mock_server import MockServer
from skillmix.backends.retry import backoff_delay
from skillmix.config import ModelSpec
from skillmix.errors import SkillmixError
from skillmix.store.local import LocalStore

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write about beekeeping using a metaphor and a red herring."},
]


def spec(**overrides: Any) -> ModelSpec:
    data: dict[str, Any] = {"name": "student", "backend": "mock", "model": "m", "timeout": 10}
    data.update(overrides)
    return ModelSpec.model_validate(data)


def run(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def with_client(
    srv: MockServer, model_spec: ModelSpec, work: Any, *, api_key: str = "x", **kwargs: Any
) -> Any:
    client = ChatClient(model_spec, base_url=srv.base_url, api_key=api_key, **kwargs)
    try:
        return await work(client)
    finally:
        await client.close()


def completions(srv: MockServer) -> int:
    return int(srv.stats()["by_path"].get("/v1/chat/completions", 0))


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the exponential part of the backoff (a server's Retry-After still applies)."""
    monkeypatch.setattr(
        client_module, "backoff_delay", functools.partial(backoff_delay, base=0.005, cap=0.05)
    )


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer(MockServerConfig(models={"m": 0.8, "grader": 0.9}, seed=1)) as srv:
        yield srv


# ---- plain requests ------------------------------------------------------------------------


def test_chat_returns_text_and_usage(server: MockServer) -> None:
    async def work(client: ChatClient) -> ChatResult:
        return await client.chat(MESSAGES, sample="basic")

    model_spec = spec(sampling={"temperature": 0.7, "max_tokens": 256})
    result = run(with_client(server, model_spec, work))
    assert len(result.texts) == 1
    assert result.texts[0].strip()
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.cached is False
    assert result.attempts == 1
    assert result.finish_reasons and result.finish_reasons[0] in ("stop", "length")


def test_chat_counts_usage_in_stats(server: MockServer) -> None:
    async def work(client: ChatClient) -> tuple[list[ChatResult], Any]:
        results = [await client.chat(MESSAGES, sample=f"s{i}") for i in range(3)]
        return results, client.stats

    results, stats = run(with_client(server, spec(), work))
    assert stats.requests == 3
    assert stats.retries == 0 and stats.failures == 0 and stats.cached == 0
    assert stats.prompt_tokens == sum(r.prompt_tokens for r in results)
    assert stats.completion_tokens == sum(r.completion_tokens for r in results)


def test_chat_n_choices(server: MockServer) -> None:
    async def work(client: ChatClient) -> ChatResult:
        return await client.chat(MESSAGES, n=3, sample="n3")

    before = completions(server)
    result = run(with_client(server, spec(model="grader"), work))
    assert len(result.texts) == 3
    assert all(t.strip() for t in result.texts)
    assert len(result.finish_reasons) == 3
    assert completions(server) == before + 1  # one request for all three


# ---- retries -------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["fail_rate", "drop_rate"])
def test_retries_through_injected_failures(failure: str, fast_backoff: None) -> None:
    config = MockServerConfig(models={"m": 0.8}, seed=4)

    async def work(client: ChatClient) -> tuple[list[ChatResult], Any]:
        results = await asyncio.gather(*(client.chat(MESSAGES, sample=f"r{i}") for i in range(12)))
        return list(results), client.stats

    with MockServer(config, **{failure: 0.5}) as srv:
        results, stats = run(with_client(srv, spec(max_retries=20, concurrency=4), work))
        server_stats = srv.stats()
    assert len(results) == 12
    assert all(r.texts and r.texts[0] for r in results)
    assert stats.retries > 0
    assert stats.failures == 0
    assert stats.requests == 12 + stats.retries
    assert any(r.attempts > 1 for r in results)
    injected = server_stats["failed"] if failure == "fail_rate" else server_stats["dropped"]
    assert injected == stats.retries


def test_server_rate_limit_is_retried_after_retry_after() -> None:
    with MockServer(MockServerConfig(models={"m": 0.8})) as srv:
        # the same limiter over a 1 s window (the default minute would make the test slow)
        assert srv._service is not None
        srv._service.limiter = RateLimiter(rpm=2, window=1.0)

        async def work(client: ChatClient) -> tuple[list[ChatResult], Any, float]:
            started = time.monotonic()
            results = await asyncio.gather(
                *(client.chat(MESSAGES, sample=f"l{i}") for i in range(3))
            )
            return list(results), client.stats, time.monotonic() - started

        results, stats, elapsed = run(with_client(srv, spec(concurrency=8), work))
        server_stats = srv.stats()
    assert len(results) == 3 and all(r.texts for r in results)
    assert server_stats["rate_limited"] >= 1
    assert stats.rate_limited == server_stats["rate_limited"]
    assert stats.retries == stats.rate_limited
    assert stats.failures == 0
    assert elapsed >= 1.0  # the server said Retry-After: 1
    assert elapsed < 8.0
    assert max(r.attempts for r in results) == 2


def test_exhausted_retries_are_not_fatal(fast_backoff: None) -> None:
    config = MockServerConfig(models={"m": 0.8}, fail_rate=1.0)

    async def work(client: ChatClient) -> tuple[BackendError, Any]:
        with pytest.raises(BackendError) as info:
            await client.chat(MESSAGES, sample="doomed")
        # a non-fatal error does not poison the client
        assert client.fatal is None
        return info.value, client.stats

    with MockServer(config) as srv:
        error, stats = run(with_client(srv, spec(max_retries=2), work))
        assert completions(srv) == 3
    assert error.fatal is False
    assert error.exit_code == 1
    assert error.status == 500
    assert "after 3 attempts" in str(error)
    assert "injected failure" in str(error)
    assert "HTTP 500" in str(error)
    assert stats.requests == 3 and stats.retries == 2 and stats.failures == 1


def test_exhausted_connection_retries(fast_backoff: None) -> None:
    config = MockServerConfig(models={"m": 0.8}, drop_rate=1.0)

    async def work(client: ChatClient) -> BackendError:
        with pytest.raises(BackendError) as info:
            await client.chat(MESSAGES, sample="dropped")
        return info.value

    with MockServer(config) as srv:
        error = run(with_client(srv, spec(max_retries=1), work))
    assert not error.fatal
    assert "connection failed after 2 attempts" in str(error)


def test_request_timeout(fast_backoff: None) -> None:
    config = MockServerConfig(models={"m": 0.8}, timeout_rate=1.0, timeout_seconds=3.0)

    async def work(client: ChatClient) -> BackendError:
        with pytest.raises(BackendError) as info:
            await client.chat(MESSAGES, sample="slow")
        return info.value

    with MockServer(config, shutdown_timeout=0.2) as srv:
        started = time.monotonic()
        error = run(with_client(srv, spec(max_retries=0, timeout=0.3), work))
        assert time.monotonic() - started < 5
    assert not error.fatal
    assert "timed out after 1 attempts" in str(error)


# ---- fatal errors --------------------------------------------------------------------------


def test_wrong_api_key_is_fatal() -> None:
    config = MockServerConfig(models={"m": 0.8}, api_key="right-key")

    async def work(client: ChatClient) -> tuple[BackendError, BackendError]:
        with pytest.raises(BackendError) as first:
            await client.chat(MESSAGES, sample="a")
        with pytest.raises(BackendError) as second:
            await client.chat(MESSAGES, sample="b")
        return first.value, second.value

    with MockServer(config) as srv:
        first, second = run(with_client(srv, spec(), work, api_key="wrong-key"))
        assert completions(srv) == 1  # the second call fails without asking again
    assert first.fatal is True
    assert first.exit_code == 2
    assert first.status == 401
    assert "API key was rejected" in str(first)
    assert "wrong-key" not in str(first)
    assert second is first


def test_right_api_key_works() -> None:
    config = MockServerConfig(models={"m": 0.8}, api_key="right-key")

    async def work(client: ChatClient) -> ChatResult:
        return await client.chat(MESSAGES, sample="ok")

    with MockServer(config) as srv:
        result = run(with_client(srv, spec(), work, api_key="right-key"))
    assert result.texts


def test_unknown_model_is_fatal_404(server: MockServer) -> None:
    async def work(client: ChatClient) -> BackendError:
        with pytest.raises(BackendError) as info:
            await client.chat(MESSAGES, sample="x")
        return info.value

    error = run(with_client(server, spec(model="absent"), work))
    assert error.fatal is True
    assert error.status == 404
    assert error.exit_code == 2
    assert "model not found" in str(error)
    assert "absent" in str(error)


# ---- the response cache --------------------------------------------------------------------


def test_cache_serves_identical_requests(server: MockServer, tmp_path: Path) -> None:
    cache = ResponseCache(LocalStore(tmp_path))

    async def work(client: ChatClient) -> list[ChatResult]:
        first = await client.chat(MESSAGES, sample="x")
        n_before = completions(server)
        again = await client.chat(MESSAGES, sample="x")
        assert completions(server) == n_before  # served from the cache
        other = await client.chat(MESSAGES, sample="y")
        assert completions(server) == n_before + 1
        assert client.stats.cached == 1
        assert client.stats.requests == 2
        return [first, again, other]

    first, again, other = run(with_client(server, spec(), work, cache=cache))
    assert first.cached is False and other.cached is False
    assert again.cached is True
    assert again.texts == first.texts
    assert again.prompt_tokens == first.prompt_tokens
    assert again.completion_tokens == first.completion_tokens
    assert again.finish_reasons == first.finish_reasons
    assert len(list((tmp_path / "_cache").rglob("*.json"))) == 2


def test_cache_is_shared_across_clients(server: MockServer, tmp_path: Path) -> None:
    async def ask(client: ChatClient) -> ChatResult:
        return await client.chat(MESSAGES, n=2, sample="shared")

    first = run(with_client(server, spec(), ask, cache=ResponseCache(LocalStore(tmp_path))))
    before = completions(server)
    second = run(with_client(server, spec(), ask, cache=ResponseCache(LocalStore(tmp_path))))
    assert completions(server) == before
    assert second.cached and second.texts == first.texts and len(second.texts) == 2
    # a different model identity or sampling setting is a different entry
    third = run(
        with_client(
            server,
            spec(sampling={"max_tokens": 100}),
            ask,
            cache=ResponseCache(LocalStore(tmp_path)),
        )
    )
    assert not third.cached
    assert completions(server) == before + 1


def test_failed_requests_are_not_cached(tmp_path: Path, fast_backoff: None) -> None:
    with MockServer(MockServerConfig(models={"m": 0.8}, fail_rate=1.0)) as srv:

        async def work(client: ChatClient) -> None:
            with pytest.raises(BackendError):
                await client.chat(MESSAGES, sample="x")

        run(with_client(srv, spec(max_retries=0), work, cache=ResponseCache(LocalStore(tmp_path))))
    assert not (tmp_path / "_cache").exists() or not list((tmp_path / "_cache").rglob("*.json"))


# ---- client-side pacing --------------------------------------------------------------------


def test_client_pacing_spaces_requests(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    config = MockServerConfig(models={"m": 0.8}, request_log=str(log))

    async def work(client: ChatClient) -> Any:
        await asyncio.gather(*(client.chat(MESSAGES, sample=f"p{i}") for i in range(6)))
        return client.stats

    with MockServer(config) as srv:
        started = time.monotonic()
        # rpm=120: a burst of 2, then one request every 60/118 s
        stats = run(with_client(srv, spec(rpm=120, concurrency=8), work))
        elapsed = time.monotonic() - started
    stamps = sorted(json.loads(line)["ts"] for line in log.read_text().splitlines())
    assert len(stamps) == 6
    interval = 60 / 118
    # a bucket's guarantee: after the burst of 2, the k-th request comes (k - 1) intervals
    # after the first at the earliest (a little slack for when the first one arrived)
    for k in range(2, 6):
        assert stamps[k] - stamps[0] >= (k - 1) * interval - 0.25, stamps
    assert stamps[-1] - stamps[0] >= 4 * interval - 0.25
    assert elapsed < 8.0  # ~2 s of pacing; generous for loaded machines
    assert stats.paced_seconds > 0
    assert stats.rate_limited == 0


# ---- preflight -----------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_preflight_ok(server: MockServer) -> None:
    run(preflight(spec(), server.base_url, "x"))
    run(preflight(spec(model="grader", backend="vllm"), server.base_url, "x"))
    # the OpenAI API lists many models; we do not insist on ours being listed there
    run(preflight(spec(model="gpt-x", backend="openai", api_key_env="K"), server.base_url, "x"))


def test_preflight_unreachable() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    started = time.monotonic()
    with pytest.raises(SkillmixError) as info:
        run(preflight(spec(), url, "x", timeout=2.0))
    assert time.monotonic() - started < 10
    assert type(info.value) is SkillmixError
    assert info.value.exit_code == 2
    assert f"cannot reach {url}" in str(info.value)


def test_preflight_wrong_key() -> None:
    with MockServer(MockServerConfig(models={"m": 0.8}, api_key="right")) as srv:
        with pytest.raises(SkillmixError) as info:
            run(preflight(spec(api_key_env="MY_KEY"), srv.base_url, "wrong"))
        run(preflight(spec(), srv.base_url, "right"))
    message = str(info.value)
    assert "rejected the API key" in message
    assert "MY_KEY" in message
    assert "wrong" not in message.replace("rejected", "")


def test_preflight_model_not_served(server: MockServer) -> None:
    with pytest.raises(SkillmixError) as info:
        run(preflight(spec(model="absent"), server.base_url, "x"))
    message = str(info.value)
    assert "does not serve model 'absent'" in message
    assert "served: m, grader" in message


def test_vllm_requests_carry_a_seed_per_draw(server: MockServer, tmp_path: Path) -> None:
    """A vLLM student at temperature > 0 gets one seed per draw, derived from the draw's name
    (and the sampling seed): the same draw again gives the same text (a rerun reproduces it),
    two draws of one prompt (two generation rounds) differ. The mock's replies depend on the
    request's seed as vLLM's do; without a seed they would be the same for both draws."""
    vllm = spec(backend="vllm", base_url=server.base_url, sampling={"temperature": 1.0})

    async def draws(client: ChatClient) -> list[str]:
        out = []
        for sample in ("gen:r1:i0:t0", "gen:r2:i0:t0", "gen:r1:i0:t0"):
            result = await client.chat(MESSAGES, sample=sample)
            out.append(result.texts[0])
        return out

    first, second, again = run(with_client(server, vllm, draws))
    assert first == again and first != second
    assert client_module.request_seed(None, "a") == client_module.request_seed(0, "a")
    assert client_module.request_seed(None, "a") != client_module.request_seed(7, "a")
    assert 0 <= client_module.request_seed(3, "x" * 1000) < 2**31
    seeded = spec(
        backend="vllm", base_url=server.base_url, sampling={"temperature": 1.0, "seed": 7}
    )
    assert run(with_client(server, seeded, draws))[0] != first  # the experiment's seed counts
