"""``skillmix mock-server``: the OpenAI/vLLM-compatible mock backend as a standalone server."""

from __future__ import annotations

from typing import Any

import click

from skillmix import settings
from skillmix.backends.mock_config import MockServerConfig, parse_model_specs
from skillmix.backends.mock_server import run_forever


def _zero_option(name: str, help: str, kind: type = float, **extra: Any) -> Any:
    """A number flag that is off (0) unless given."""
    return click.option(name, type=kind, default=kind(0), show_default=True, help=help, **extra)


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
@_zero_option("--latency-ms", "Fixed latency per request.")
@_zero_option("--jitter-ms", "Uniform extra latency.")
@_zero_option("--per-token-ms", "Extra latency per completion token.")
@_zero_option(
    "--startup-delay",
    "Answer 503 on /health for this long (mimics model loading).",
    metavar="SECONDS",
)
@_zero_option("--fail-rate", "Fraction answered 500.")
@_zero_option("--drop-rate", "Fraction whose connection is dropped.")
@_zero_option("--timeout-rate", "Fraction that stall --timeout-seconds before answering.")
@click.option("--timeout-seconds", type=float, default=30.0, show_default=True)
@_zero_option("--malformed-rate", "Fraction of grading replies replaced by malformed ones.")
@_zero_option("--rpm", "Requests per minute (0 = unlimited).", int)
@_zero_option("--tpm", "Tokens per minute (0 = unlimited).", int)
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
def mock_server(models: tuple[str, ...], api_key: str | None, **options: Any) -> None:
    """Serve a deterministic mock of the vLLM/OpenAI API (chat and text completions).

    Students answer and graders grade SKILL-MIX prompts with a quality set per model; latency,
    failures and RPM/TPM limits can be injected. Stops cleanly on SIGTERM or Ctrl-C.
    """

    config = MockServerConfig(
        models=parse_model_specs(models), api_key=api_key or None, **options
    ).validate()
    run_forever(config)
