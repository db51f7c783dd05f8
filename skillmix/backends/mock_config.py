"""The mock server's settings: what it serves (models and their quality) and how it misbehaves.

Plain data, kept apart from the HTTP code: the CLI builds it from flags, the executors and tests
build it directly, and both the service (:mod:`skillmix.backends.mock_service`) and the runner
(:mod:`skillmix.backends.mock_server`) read it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from skillmix.config import MOCK_DEFAULT_QUALITY as DEFAULT_QUALITY
from skillmix.errors import SkillmixError


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
    """Repeated ``--model`` flags as model -> quality; a name given twice is an error."""
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
    answers: Mapping[str, str] = field(default_factory=dict)
    """Reasoning problems' answer key (``mock_reasoning.problem_key`` -> answer): the mock
    answers them right at each model's quality."""
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
        if self.api_key is not None and re.search(r"[\x00-\x1f\x7f]", self.api_key):
            raise SkillmixError(
                "--api-key contains a control character (a newline?)",
                hint="a key is one line: no newline, no tab",
            )
        return self

    def quality_of(self, model: str) -> float | None:
        """The model's quality, or None when the server does not serve it."""
        if not self.models:
            return self.default_quality
        return self.models.get(model)
