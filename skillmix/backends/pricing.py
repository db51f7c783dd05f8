"""Estimated API cost per model. Prices are USD per million tokens and change often: the
table is a default, overridable per experiment (``prices:``)."""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4": (30.0, 60.0),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
    "gpt-3.5-turbo": (0.5, 1.5),
}


def price_for(
    backend: str, model: str, overrides: Mapping[str, tuple[float, float]] | None = None
) -> tuple[float, float] | None:
    """(prompt, completion) USD per 1M tokens; self-hosted backends cost 0 in API terms;
    None when unknown. Dated snapshots (``gpt-4o-2024-08-06``) use their base model's price."""
    if overrides and model in overrides:
        return overrides[model]
    if backend in ("mock", "vllm"):
        return (0.0, 0.0)
    if model in DEFAULT_PRICES:
        return DEFAULT_PRICES[model]
    base = max((m for m in DEFAULT_PRICES if model.startswith(m + "-")), key=len, default=None)
    return DEFAULT_PRICES[base] if base else None


def cost_usd(
    prompt_tokens: int, completion_tokens: int, price: tuple[float, float] | None
) -> float | None:
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000
