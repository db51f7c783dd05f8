"""Which failures are retried and how long the client waits (pure functions)."""

from __future__ import annotations

import random

import httpx2
import openai
import pytest

from skillmix.backends.retry import (
    RETRY_STATUSES,
    RetryDecision,
    backoff_delay,
    classify_retry,
    classify_status,
    parse_duration,
    retry_after_from_headers,
)

URL = "http://127.0.0.1:1/v1/chat/completions"


# ---- parse_duration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2", 2.0),
        ("1.5", 1.5),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("6m0s", 360.0),
        ("1m30s", 90.0),
        ("120ms", 0.12),
        ("1.5s", 1.5),
        ("20s", 20.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1h2m3s", 3723.0),
        ("1h2m3s500ms", 3723.5),
        ("0.04s", 0.04),
        ("-3", 0.0),  # a negative wait is no wait
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", [None, "", "soon", "abc", "1x", "s", "ms", "1m2h", "Wed, 21 Oct 2015 07:28:00 GMT"]
)
def test_parse_duration_garbage(text: str | None) -> None:
    assert parse_duration(text) is None


# ---- headers -------------------------------------------------------------------------------


def test_retry_after_from_headers() -> None:
    assert retry_after_from_headers(None) is None
    assert retry_after_from_headers({}) is None
    assert retry_after_from_headers({"x-other": "1"}) is None
    assert retry_after_from_headers({"Retry-After": "3"}) == 3.0
    assert retry_after_from_headers({"retry-after": "1m"}) == 60.0
    assert retry_after_from_headers({"RETRY-AFTER": "2.5"}) == 2.5


def test_retry_after_ms_wins() -> None:
    headers = {"Retry-After": "3", "Retry-After-Ms": "250"}
    assert retry_after_from_headers(headers) == pytest.approx(0.25)
    assert retry_after_from_headers({"retry-after-ms": "1500"}) == pytest.approx(1.5)


def test_retry_after_ms_garbage_falls_back() -> None:
    assert retry_after_from_headers({"retry-after-ms": "nope", "retry-after": "4"}) == 4.0
    assert retry_after_from_headers({"retry-after": "a while"}) is None


def test_retry_after_from_httpx_headers() -> None:
    headers = httpx2.Headers({"Retry-After": "2", "retry-after-ms": "900"})
    assert retry_after_from_headers(headers) == pytest.approx(0.9)


# ---- classify_status -----------------------------------------------------------------------


def test_classify_status_rate_limit() -> None:
    decision = classify_status(429, {"Retry-After": "2"})
    assert decision == RetryDecision("rate_limit", 2.0)
    assert classify_status(429) == RetryDecision("rate_limit", None)


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504])
def test_classify_status_transient(status: int) -> None:
    assert classify_status(status) == RetryDecision("transient", None)
    assert classify_status(status, {"retry-after": "5"}) == RetryDecision("transient", 5.0)


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 413, 422])
def test_classify_status_not_retried(status: int) -> None:
    assert classify_status(status) is None


def test_retry_statuses() -> None:
    assert {408, 409, 429, 500, 502, 503, 504} == RETRY_STATUSES


# ---- classify_retry on real SDK exceptions ---------------------------------------------------


def _status_error(
    cls: type[openai.APIStatusError], status: int, headers: dict[str, str] | None = None
) -> openai.APIStatusError:
    request = httpx2.Request("POST", URL)
    response = httpx2.Response(status, headers=headers or {}, request=request)
    body = {"error": {"message": f"status {status}", "type": "x", "code": None}}
    return cls(f"Error code: {status}", response=response, body=body)


def test_classify_rate_limit_error() -> None:
    exc = _status_error(openai.RateLimitError, 429, {"retry-after": "3"})
    assert classify_retry(exc) == RetryDecision("rate_limit", 3.0)
    exc = _status_error(openai.RateLimitError, 429, {"retry-after-ms": "40", "retry-after": "1"})
    decision = classify_retry(exc)
    assert decision is not None and decision.kind == "rate_limit"
    assert decision.retry_after == pytest.approx(0.04)


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (openai.InternalServerError, 500),
        (openai.InternalServerError, 503),
        (openai.ConflictError, 409),
        (openai.APIStatusError, 408),
    ],
)
def test_classify_transient_errors(cls: type[openai.APIStatusError], status: int) -> None:
    assert classify_retry(_status_error(cls, status)) == RetryDecision("transient")


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (openai.BadRequestError, 400),
        (openai.AuthenticationError, 401),
        (openai.PermissionDeniedError, 403),
        (openai.NotFoundError, 404),
        (openai.UnprocessableEntityError, 422),
    ],
)
def test_classify_input_errors_not_retried(cls: type[openai.APIStatusError], status: int) -> None:
    assert classify_retry(_status_error(cls, status)) is None


def test_classify_connection_and_timeout() -> None:
    request = httpx2.Request("POST", URL)
    assert classify_retry(openai.APIConnectionError(request=request)) == RetryDecision("transient")
    assert classify_retry(openai.APITimeoutError(request=request)) == RetryDecision("transient")


def test_classify_other_exceptions() -> None:
    assert classify_retry(ValueError("x")) is None
    assert classify_retry(KeyboardInterrupt()) is None


def test_classify_real_errors_from_mock_server() -> None:
    """The same decisions for exceptions the SDK raises from real HTTP replies."""
    from skillmix.backends.mock_config import MockServerConfig
    from skillmix.backends.mock_server import MockServer

    messages = [{"role": "user", "content": "hi"}]
    config = MockServerConfig(models={"m": 0.5}, rpm=1, api_key="right")
    with MockServer(config) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="right", max_retries=0, timeout=5)
        client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
        decision = classify_retry(limited.value)
        assert decision is not None and decision.kind == "rate_limit"
        assert decision.retry_after is not None and 1 <= decision.retry_after <= 60
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="absent", messages=messages)  # type: ignore[arg-type]
        assert classify_retry(missing.value) is None
        wrong = openai.OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0, timeout=5)
        with pytest.raises(openai.AuthenticationError) as denied:
            wrong.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
        assert classify_retry(denied.value) is None
        client.close()
        wrong.close()
    closed = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0, timeout=2)
    with pytest.raises(openai.APIConnectionError) as refused:
        closed.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert classify_retry(refused.value) == RetryDecision("transient")
    closed.close()


# ---- backoff_delay -------------------------------------------------------------------------


TRANSIENT = RetryDecision("transient")


@pytest.mark.parametrize("attempt", range(12))
def test_backoff_within_exponential_envelope(attempt: int) -> None:
    rng = random.Random(attempt)
    for _ in range(200):
        delay = backoff_delay(attempt, TRANSIENT, base=0.5, cap=60.0, rng=rng)
        assert 0.0 <= delay <= min(60.0, 0.5 * 2**attempt)


def test_backoff_jitter_spreads() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(4, TRANSIENT, base=0.5, cap=60.0, rng=rng) for _ in range(500)]
    assert max(delays) <= 8.0
    assert min(delays) < 1.0 and max(delays) > 7.0  # full jitter over [0, 8]
    assert len(set(delays)) > 400


def test_backoff_seeded_is_reproducible() -> None:
    a = [backoff_delay(i, TRANSIENT, rng=random.Random(5)) for i in range(6)]
    b = [backoff_delay(i, TRANSIENT, rng=random.Random(5)) for i in range(6)]
    assert a == b


def test_backoff_capped() -> None:
    rng = random.Random(2)
    for attempt in (10, 20, 50):
        for _ in range(100):
            assert backoff_delay(attempt, TRANSIENT, base=1.0, cap=5.0, rng=rng) <= 5.0


@pytest.mark.parametrize("retry_after", [0.0, 0.3, 2.0, 7.5, 30.0])
def test_backoff_never_below_retry_after(retry_after: float) -> None:
    decision = RetryDecision("rate_limit", retry_after)
    rng = random.Random(3)
    for attempt in range(8):
        for _ in range(100):
            delay = backoff_delay(attempt, decision, base=0.5, cap=60.0, rng=rng)
            assert delay >= retry_after
            # the floor gets at most 0.25 s of jitter, the exponential part stays in its envelope
            assert delay <= max(retry_after + 0.25, min(60.0, 0.5 * 2**attempt))


def test_backoff_retry_after_beyond_cap_is_honoured() -> None:
    decision = RetryDecision("rate_limit", 120.0)
    rng = random.Random(4)
    delays = [backoff_delay(attempt, decision, base=0.5, cap=10.0, rng=rng) for attempt in range(5)]
    assert all(120.0 <= d <= 120.25 for d in delays)  # the server's wait plus a little jitter
    assert len(set(delays)) > 1  # clients limited together do not retry in lockstep


def test_backoff_without_rng_uses_module_random() -> None:
    random.seed(0)
    delay = backoff_delay(3, TRANSIENT)
    assert 0.0 <= delay <= 4.0
