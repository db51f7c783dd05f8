"""The mock server over real HTTP on 127.0.0.1, driven by the official ``openai`` client."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_faults import ATTEMPT_HEADER, SAMPLE_HEADER
from skillmix.backends.mock_server import MockServer
from skillmix.catalog import builtin_catalog
from skillmix.method.grading import parse_grader_output
from skillmix.method.prompts import render_generation_prompts, render_grading_prompt
from skillmix.method.text import extract_answer
from skillmix.promptset import load_prompt_version
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
CATALOG = builtin_catalog()
SKILLS = [CATALOG.skill("red herring"), CATALOG.skill("metaphor"), CATALOG.skill("simile")]
TOPIC = "Beekeeping"
PROMPT = render_generation_prompts(load_prompt_version("generation", "two-turn-v1"), SKILLS, TOPIC)
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT[0]}]


def client(srv: MockServer, **kwargs: object) -> OpenAI:
    options: dict[str, Any] = {"api_key": "x", "max_retries": 0, "timeout": 10.0, **kwargs}
    return OpenAI(base_url=srv.base_url, **options)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def http_post(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    config = MockServerConfig(models={"student": 0.8, "grader": 0.95}, seed=3)
    with MockServer(config) as srv:
        yield srv


def test_models_and_health(server: MockServer) -> None:
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["student", "grader"]
    assert all(m.owned_by == "skillmix-mock" and m.object == "model" for m in models.data)
    assert http_get(f"{server.url}/health") == (200, {})
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"


def test_chat_completion_with_usage(server: MockServer) -> None:
    response = client(server).chat.completions.create(
        model="student", messages=MESSAGES, temperature=0.7, max_tokens=512
    )
    assert response.object == "chat.completion"
    assert response.model == "student"
    choice = response.choices[0]
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    text = choice.message.content or ""
    assert text.startswith("Answer: ") and "Explanation:" in text
    assert TOPIC in extract_answer(text) or "Explanation" in text
    usage = response.usage
    assert usage is not None
    assert usage.prompt_tokens == math.ceil(len(PROMPT[0]) / 4)
    assert usage.completion_tokens == math.ceil(len(text) / 4)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_n_choices_are_distinct_and_deterministic(server: MockServer) -> None:
    api = client(server)

    def ask() -> list[str]:
        response = api.chat.completions.create(model="student", messages=MESSAGES, n=3)
        assert [c.index for c in response.choices] == [0, 1, 2]
        assert response.usage is not None
        total = sum(math.ceil(len(c.message.content or "") / 4) for c in response.choices)
        assert response.usage.completion_tokens == total
        return [c.message.content or "" for c in response.choices]

    first = ask()
    assert len(set(first)) == 3
    assert ask() == first


def test_completions_endpoint(server: MockServer) -> None:
    response = client(server).completions.create(model="student", prompt=PROMPT[0], max_tokens=400)
    assert response.object == "text_completion"
    assert response.choices[0].text.startswith("Answer: ")
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None and response.usage.prompt_tokens == math.ceil(
        len(PROMPT[0]) / 4
    )


def test_grading_through_the_server_parses(server: MockServer) -> None:
    api = client(server)
    answer = extract_answer(
        api.chat.completions.create(model="student", messages=MESSAGES).choices[0].message.content
        or ""
    )
    for version, style in (("table-v1", "table"), ("points-v1", "points")):
        prompt = render_grading_prompt(
            load_prompt_version("grading", version), SKILLS, TOPIC, answer
        )
        response = api.chat.completions.create(
            model="grader", messages=[{"role": "user", "content": prompt}], n=3
        )
        for choice in response.choices:
            parsed = parse_grader_output(choice.message.content or "", 3, style)  # type: ignore[arg-type]
            assert parsed.ok, parsed.detail


def test_unknown_model_is_404(server: MockServer) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(server).chat.completions.create(model="nope", messages=MESSAGES)
    assert "The model `nope` does not exist." in str(info.value)
    assert info.value.code == "model_not_found"


def test_bad_requests_are_400(server: MockServer) -> None:
    url = f"{server.base_url}/chat/completions"
    status, body = http_post(url, b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] is None
    status, body = http_post(url, json.dumps({"model": "student"}).encode())
    assert status == 400 and body["error"]["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        client(server).chat.completions.create(model="student", messages=MESSAGES, n=0)


def test_async_client_concurrency(server: MockServer) -> None:
    async def run() -> list[str]:
        api = AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=10.0)
        try:
            responses = await asyncio.gather(
                *(
                    api.chat.completions.create(
                        model="student",
                        messages=[{"role": "user", "content": f"{PROMPT[0]}\n{i}"}],
                    )
                    for i in range(24)
                )
            )
        finally:
            await api.close()
        return [r.choices[0].message.content or "" for r in responses]

    before = server.stats()["ok"]
    texts = asyncio.run(run())
    assert len(texts) == 24 and all(t.startswith("Answer:") for t in texts)
    stats = server.stats()
    assert stats["ok"] - before == 24
    assert stats["by_path"]["/v1/chat/completions"] >= 24
    assert http_get(f"{server.url}/stats")[1]["ok"] == stats["ok"]


def test_api_key_is_enforced() -> None:
    with MockServer(api_key="sekret") as srv:
        with pytest.raises(openai.AuthenticationError) as info:
            client(srv, api_key="wrong").chat.completions.create(model="m", messages=MESSAGES)
        assert info.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            client(srv, api_key="wrong").models.list()
        ok = client(srv, api_key="sekret").chat.completions.create(model="m", messages=MESSAGES)
        assert ok.choices
        assert http_get(f"{srv.url}/health")[0] == 200  # probes need no key


def test_injected_failures() -> None:
    with MockServer(fail_rate=1.0) as srv:
        with pytest.raises(openai.InternalServerError):
            client(srv).chat.completions.create(model="m", messages=MESSAGES)
        assert srv.stats()["failed"] == 1
    with MockServer(drop_rate=1.0) as srv:
        with pytest.raises(openai.APIConnectionError):
            client(srv).chat.completions.create(model="m", messages=MESSAGES)
        assert srv.stats()["dropped"] == 1


def test_partial_failure_rate_lets_retries_succeed() -> None:
    """Each try of a request draws its faults afresh, so retrying the same one succeeds."""
    with MockServer(fail_rate=0.5, seed=1) as srv:
        api = client(srv)
        texts = set()
        for _ in range(4):
            for _attempt in range(30):
                try:
                    response = api.chat.completions.create(model="m", messages=MESSAGES)
                except openai.InternalServerError:
                    continue
                texts.add(response.choices[0].message.content)
                break
        stats = srv.stats()
        assert stats["ok"] == 4 and stats["failed"] > 0
        assert len(texts) == 1  # the same request gets the same reply


def _grading_messages(answer: str) -> list[ChatCompletionMessageParam]:
    prompt = render_grading_prompt(
        load_prompt_version("grading", "table-v1"), SKILLS, TOPIC, answer
    )
    return [{"role": "user", "content": prompt}]


Outcomes = dict[int, list[tuple[int, tuple[str, ...]]]]


def _outcomes(srv: MockServer, order: list[int], headers: dict[str, str] | None = None) -> Outcomes:
    """Request i (a grading request, n=2) is sent once per occurrence in ``order``; per request,
    the sequence of (status, replies) it got."""
    api = client(srv, default_headers=headers or {})
    seen: Outcomes = {}
    for i in order:
        try:
            response = api.chat.completions.create(
                model="g", messages=_grading_messages(f"Bees hum {i} times."), n=2
            )
            got = (200, tuple(c.message.content or "" for c in response.choices))
        except openai.InternalServerError as exc:
            got = (exc.status_code, ())
        seen.setdefault(i, []).append(got)
    return seen


INJECTING = MockServerConfig(seed=5, fail_rate=0.3, malformed_rate=0.5)


def test_injections_are_a_function_of_the_seed_and_the_request() -> None:
    """Two servers with the same seed answer each request with the same sequence of faults and
    replies, whatever other requests arrive in between (and in whichever order)."""
    order = [0, 1, 2, 3, 4, 5] * 3
    with MockServer(INJECTING) as srv:
        first = _outcomes(srv, order)
    with MockServer(INJECTING) as srv:
        second = _outcomes(srv, list(reversed(order)))
        assert srv.stats()["failed"] > 0 and srv.stats()["malformed"] > 0
    assert first == second
    # a request's tries differ from one another: a retry can succeed
    assert any(len(set(tries)) > 1 for tries in first.values())
    with MockServer(replace(INJECTING, seed=6)) as srv:
        assert _outcomes(srv, order) != first


def test_the_clients_try_number_makes_injection_stateless() -> None:
    """With the client's try number in ATTEMPT_HEADER the server keeps no count: the same try
    of the same request gets the same answer every time, on one server or another."""
    with MockServer(INJECTING) as srv:
        tries = [
            _outcomes(srv, [0, 1, 2, 3] * 2, {ATTEMPT_HEADER: str(t), SAMPLE_HEADER: "s"})
            for t in range(4)
        ]
    for outcome in tries:
        assert all(len(set(seq)) == 1 for seq in outcome.values())  # repeats agree
    assert len({json.dumps(sorted(t.items())) for t in tries}) > 1  # tries differ
    with MockServer(INJECTING) as srv:
        again = _outcomes(srv, [3, 2, 1, 0], {ATTEMPT_HEADER: "2", SAMPLE_HEADER: "s"})
        other = _outcomes(srv, [3, 2, 1, 0], {ATTEMPT_HEADER: "2", SAMPLE_HEADER: "t"})
    assert again == {i: seq[:1] for i, seq in tries[2].items()}
    assert other != again  # the sample names a different logical request


def test_timeouts_stall_the_request() -> None:
    with MockServer(timeout_rate=1.0, timeout_seconds=5.0) as srv:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            client(srv, timeout=0.3).chat.completions.create(model="m", messages=MESSAGES)
        assert time.monotonic() - started < 3
        assert srv.stats()["timeouts"] == 1


def test_malformed_grading_replies() -> None:
    prompt = render_grading_prompt(
        load_prompt_version("grading", "table-v1"), SKILLS, TOPIC, "Bees hum. Honey flows."
    )
    with MockServer(malformed_rate=1.0) as srv:
        response = client(srv).chat.completions.create(
            model="g", messages=[{"role": "user", "content": prompt}], n=3
        )
        for choice in response.choices:
            assert not parse_grader_output(choice.message.content or "", 3, "table").ok
        generation = client(srv).chat.completions.create(model="s", messages=MESSAGES)
        assert (generation.choices[0].message.content or "").startswith("Answer:")
        assert srv.stats()["malformed"] == 3


def test_rate_limit_rpm() -> None:
    with MockServer(rpm=2) as srv:
        api = client(srv)
        raw = api.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-remaining-requests"] == "1"
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
        api.chat.completions.create(model="m", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as info:
            api.chat.completions.create(model="m", messages=MESSAGES)
        headers = info.value.response.headers
        assert int(headers["retry-after"]) >= 1
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert info.value.code == "rate_limit_exceeded"
        assert srv.stats()["rate_limited"] == 1


def test_rate_limit_tpm() -> None:
    with MockServer(tpm=2000) as srv:
        api = client(srv)
        raw = api.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, max_tokens=600
        )
        used = math.ceil(len(PROMPT[0]) / 4) + 600
        assert raw.headers["x-ratelimit-remaining-tokens"] == str(2000 - used)
        with pytest.raises(openai.RateLimitError) as info:
            api.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1500)
        assert info.value.response.headers["x-ratelimit-limit-tokens"] == "2000"


def test_health_during_startup_delay() -> None:
    with MockServer(startup_delay=0.6) as srv:
        assert http_get(f"{srv.url}/health")[0] == 503
        with pytest.raises(openai.InternalServerError):
            client(srv).chat.completions.create(model="m", messages=MESSAGES)
        deadline = time.monotonic() + 5
        status = 503
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
            status = http_get(f"{srv.url}/health")[0]
        assert status == 200
        assert client(srv).chat.completions.create(model="m", messages=MESSAGES).choices


def test_request_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "requests.jsonl"
    with MockServer(request_log=log, models={"m": 0.5}) as srv:
        api = client(srv)
        api.chat.completions.create(model="m", messages=MESSAGES, temperature=0.5)
        api.chat.completions.create(model="m", messages=MESSAGES, temperature=0.5)
        api.completions.create(model="m", prompt="hello")
        with pytest.raises(openai.NotFoundError):
            api.chat.completions.create(model="x", messages=MESSAGES)
        lines = [json.loads(line) for line in log.read_text().splitlines()]  # flushed per line
    assert len(lines) == 4
    assert {tuple(sorted(line)) for line in lines} == {
        ("key", "model", "n", "path", "status", "ts")
    }
    assert [line["status"] for line in lines] == [200, 200, 200, 404]
    assert lines[0]["key"] == lines[1]["key"] != lines[2]["key"]
    assert len(lines[0]["key"]) == 64
    assert lines[2]["path"] == "/v1/completions" and lines[3]["model"] == "x"


def test_cli_rejects_bad_values() -> None:
    result = run_cli("mock-server", "--fail-rate", "1.5")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --fail-rate must be in [0, 1], got 1.5"
    result = run_cli("mock-server", "--model", "m=2")
    assert result.exit_code == 2 and "quality must be in [0, 1]" in result.stderr


def test_cli_subprocess_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    env = {**os.environ, "SKILLMIX_MOCK_API_KEY": "k1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "skillmix",
            "mock-server",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--model",
            "cli-model=0.9",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate(timeout=5)
            time.sleep(0.05)
        port = int(port_file.read_text())
        api = OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="k1", max_retries=0, timeout=10
        )
        assert api.chat.completions.create(model="cli-model", messages=MESSAGES).choices
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0, stderr
    assert f"mock server listening on http://127.0.0.1:{port}" in stderr
