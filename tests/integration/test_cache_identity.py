"""The response cache answers only for the server that gave the answer (issue 24's probe: a
different server behind the same model name answered from the old cache, 0 requests sent, the
numbers wrong). Real mock servers over HTTP, the same loopback port reused."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillmix.backends.mock_config import MockServerConfig
from skillmix.backends.mock_server import MockServer
from tests.helpers import run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def experiment(path: Path, port: int) -> Path:
    exp: dict[str, Any] = {
        "name": "cachekey",
        "seed": 1,
        "ks": [2],
        "combinations": 3,
        "students": [
            {
                "name": "s1",
                "backend": "openai",
                "model": "gpt-test",
                "base_url": f"http://127.0.0.1:{port}/v1",
            }
        ],
        "grader": {"name": "g", "backend": "mock", "model": "mock-g", "rounds": 1},
        "metrics": {"bootstrap_samples": 10},
    }
    path.write_text(yaml.safe_dump(exp))
    return path


def chat_requests(server: MockServer) -> int:
    return int(server.stats()["by_path"].get("/v1/chat/completions", 0))


def run(exp: Path, store: Path, *extra: str) -> None:
    result = run_cli("evaluate", "-f", str(exp), "--store", str(store), "--no-progress", *extra)
    assert result.exit_code == 0, result.stderr


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "any")


def test_the_same_server_answers_a_rerun_from_the_cache(tmp_path: Path) -> None:
    port = free_port()
    exp = experiment(tmp_path / "e.yaml", port)
    config = MockServerConfig(port=port, models={"gpt-test": 0.8}, seed=1)
    with MockServer(config) as server:
        run(exp, tmp_path / "runs")
        first = chat_requests(server)
        run(exp, tmp_path / "runs", "--overwrite")
        assert first > 0 and chat_requests(server) == first  # nothing asked twice


@pytest.mark.parametrize(
    "second",
    [
        {"seed": 2, "models": {"gpt-test": 0.8}},  # other weights behind the same name
        {"seed": 1, "models": {"gpt-test": 0.3}},
    ],
)
def test_another_server_behind_the_same_url_and_name_is_asked_again(
    tmp_path: Path, second: dict[str, Any]
) -> None:
    port = free_port()
    exp = experiment(tmp_path / "e.yaml", port)
    with MockServer(MockServerConfig(port=port, models={"gpt-test": 0.8}, seed=1)) as old:
        run(exp, tmp_path / "runs")
        assert chat_requests(old) > 0
    with MockServer(MockServerConfig(port=port, **second)) as new:
        run(exp, tmp_path / "runs", "--overwrite")
        assert chat_requests(new) > 0, "answered from the old server's cache"


def test_a_key_in_the_url_does_not_change_the_cache_identity(tmp_path: Path) -> None:
    """Rotating a key given in the URL keeps the cache (the key is not part of it)."""
    from skillmix.urls import redact_url

    assert redact_url("http://u:old@h/v1?api-key=1") == redact_url("http://u:new@h/v1?api-key=2")


# ---- credentials in URLs (issue 24) ----------------------------------------------------------
PASSWORD, QUERY_KEY = "pw-SECRET-4711", "qk-SECRET-0815"


def secret_url(port: int, query: bool = False) -> str:
    """A URL with a user and password (and, for error lines, a secret query parameter: the
    SDK cannot send requests through a base URL with a query)."""
    tail = f"?api-key={QUERY_KEY}" if query else ""
    return f"http://alice:{PASSWORD}@127.0.0.1:{port}/v1{tail}"


def test_credentials_in_a_base_url_reach_no_file_and_no_output(tmp_path: Path) -> None:
    port = free_port()
    exp = experiment(tmp_path / "e.yaml", port)
    data = yaml.safe_load(exp.read_text())
    data["students"][0]["base_url"] = secret_url(port)
    exp.write_text(yaml.safe_dump(data))
    with MockServer(MockServerConfig(port=port, models={"gpt-test": 0.8}, seed=1)):
        # the preflight gets through; the requests fail (the SDK's aiohttp transport refuses a
        # URL with credentials), and every failed record, error line and file is written
        result = run_cli("evaluate", "-f", str(exp), "--store", str(tmp_path / "runs"))
        assert result.exit_code == 1 and "REDACTED@127.0.0.1" in result.stderr, result.stderr
    written = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert any(p.name == "run.json" for p in written)
    assert any("generations" in p.parts for p in written)  # the failed records
    for path in written:  # run.json, the records with their errors, the manifests
        text = path.read_bytes().decode("utf-8", "replace")
        assert PASSWORD not in text and QUERY_KEY not in text, path
    assert PASSWORD not in result.stdout + result.stderr
    run_json = next(p for p in written if p.name == "run.json").read_text()
    assert "REDACTED@127.0.0.1" in run_json

    # a run that holds a redacted URL cannot be continued from its records: one line says why
    from skillmix.backends.client import resolve_endpoint
    from skillmix.errors import SkillmixError
    from skillmix.loading import parse_experiment

    stored = parse_experiment(json.loads(run_json)["experiment"], "run.json")
    with pytest.raises(SkillmixError, match="never stored"):
        resolve_endpoint(stored.students[0])


def test_an_error_line_never_shows_the_credentials(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    exp = experiment(tmp_path / "e.yaml", port)
    data = yaml.safe_load(exp.read_text())
    data["students"][0]["base_url"] = secret_url(port, query=True)
    exp.write_text(yaml.safe_dump(data))
    result = run_cli("evaluate", "-f", str(exp), "--store", str(tmp_path / "runs"))
    assert result.exit_code == 2 and "cannot reach" in result.stderr, result.stderr
    assert PASSWORD not in result.stderr and QUERY_KEY not in result.stderr
    assert "REDACTED" in result.stderr


def test_kubernetes_refuses_credentials_in_a_base_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "skillmix.yaml").write_text(
        "clusters:\n  prod:\n    namespace: evals\n    store: s3://bucket/runs\n"
    )
    monkeypatch.setenv("SKILLMIX_CONFIG", str(tmp_path / "skillmix.yaml"))
    exp = experiment(tmp_path / "e.yaml", 9)
    data = yaml.safe_load(exp.read_text())
    data["students"][0]["base_url"] = secret_url(9)
    exp.write_text(yaml.safe_dump(data))
    result = run_cli("render", "-f", str(exp), "--cluster", "prod")
    assert result.exit_code == 2 and "carries credentials" in result.stderr, result.stderr
    assert PASSWORD not in result.stderr and "api_key_env" in result.stderr


def test_no_cache_asks_again(tmp_path: Path) -> None:
    port = free_port()
    exp = experiment(tmp_path / "e.yaml", port)
    with MockServer(MockServerConfig(port=port, models={"gpt-test": 0.8}, seed=1)) as server:
        run(exp, tmp_path / "runs")
        first = chat_requests(server)
        run(exp, tmp_path / "runs", "--overwrite", "--no-cache")
        assert chat_requests(server) == 2 * first
