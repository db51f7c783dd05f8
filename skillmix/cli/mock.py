"""``skillmix mock-server``: the OpenAI/vLLM-compatible mock backend as a standalone server."""

from __future__ import annotations

import click

from skillmix import settings
from skillmix.backends.mock_config import MockServerConfig, parse_model_specs
from skillmix.backends.mock_server import run_forever


@click.command("mock-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=int,
    default=8000,
    show_default=True,
    help="Port to listen on (0 = pick a free one).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of every reply and injection (each a function of seed, request and try).",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME[=QUALITY]",
    help="A served model and its quality in [0, 1] (repeatable; default: any name, quality 0.7).",
)
@click.option(
    "--latency-ms", type=float, default=0.0, show_default=True, help="Fixed latency per request."
)
@click.option(
    "--jitter-ms", type=float, default=0.0, show_default=True, help="Uniform extra latency."
)
@click.option(
    "--per-token-ms",
    type=float,
    default=0.0,
    show_default=True,
    help="Extra latency per completion token.",
)
@click.option(
    "--startup-delay",
    type=float,
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Answer 503 on /health for this long (mimics model loading).",
)
@click.option(
    "--fail-rate", type=float, default=0.0, show_default=True, help="Fraction answered 500."
)
@click.option(
    "--drop-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction whose connection is dropped.",
)
@click.option(
    "--timeout-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction that stall --timeout-seconds before answering.",
)
@click.option("--timeout-seconds", type=float, default=30.0, show_default=True)
@click.option(
    "--malformed-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction of grading replies replaced by malformed ones.",
)
@click.option(
    "--rpm", type=int, default=0, show_default=True, help="Requests per minute (0 = unlimited)."
)
@click.option(
    "--tpm", type=int, default=0, show_default=True, help="Tokens per minute (0 = unlimited)."
)
@click.option(
    "--api-key",
    envvar=settings.MOCK_API_KEY.name,
    default=None,
    help="Require 'Authorization: Bearer KEY' on /v1 (env SKILLMIX_MOCK_API_KEY).",
)
@click.option(
    "--request-log",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append one JSON line per completion request to this file.",
)
@click.option(
    "--port-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the bound port to this file once listening.",
)
def mock_server(
    host: str,
    port: int,
    seed: int,
    models: tuple[str, ...],
    latency_ms: float,
    jitter_ms: float,
    per_token_ms: float,
    startup_delay: float,
    fail_rate: float,
    drop_rate: float,
    timeout_rate: float,
    timeout_seconds: float,
    malformed_rate: float,
    rpm: int,
    tpm: int,
    api_key: str | None,
    request_log: str | None,
    port_file: str | None,
) -> None:
    """Serve a deterministic mock of the vLLM/OpenAI API (chat and text completions).

    Students answer and graders grade SKILL-MIX prompts with a quality set per model; latency,
    failures and RPM/TPM limits can be injected. Stops cleanly on SIGTERM or Ctrl-C.
    """

    config = MockServerConfig(
        host=host,
        port=port,
        seed=seed,
        models=parse_model_specs(models),
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        per_token_ms=per_token_ms,
        startup_delay=startup_delay,
        fail_rate=fail_rate,
        drop_rate=drop_rate,
        timeout_rate=timeout_rate,
        timeout_seconds=timeout_seconds,
        malformed_rate=malformed_rate,
        rpm=rpm,
        tpm=tpm,
        api_key=api_key or None,
        request_log=request_log,
        port_file=port_file,
    ).validate()
    run_forever(config)
