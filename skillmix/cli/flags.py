"""SkyThought-style flags (``--backend-args``, ``--sampling-params``, ``--ks``) into the
experiment mapping: the quick form's parsers, checked with one-line errors."""

from __future__ import annotations

import re
from typing import Any

from skillmix.config import SAMPLING_KEYS
from skillmix.errors import SkillmixError


def parse_kv_pairs(text: str, option: str) -> dict[str, str]:
    """``a=1,b=x`` (SkyThought-style flags) into a dict; malformed pairs are errors."""
    out: dict[str, str] = {}
    for item in [i for i in text.split(",") if i.strip()]:
        if "=" not in item:
            raise SkillmixError(f"{option}: expected key=value, got {item.strip()!r}")
        key, value = item.split("=", 1)
        if key.strip() in out:
            raise SkillmixError(
                f"{option}: key {key.strip()!r} given twice", hint="give each key once"
            )
        out[key.strip()] = value.strip()
    return out


def parse_int_list(text: str, option: str, example: str) -> list[int]:
    """``2,3`` into [2, 3]; an empty item (``2,,3``, ``2,``) or a non-integer is an error."""
    items = [item.strip() for item in text.split(",")]
    for item in items:
        if not re.fullmatch(r"[+-]?[0-9]+", item):
            what = "an empty item" if not item else repr(item)
            raise SkillmixError(
                f"{option}: expected comma-separated integers, got {what} in {text!r}",
                hint=f"e.g. {option} {example}",
            )
    return [int(item) for item in items]


BACKEND_ARG_KEYS = frozenset(
    {
        "base_url",
        "api_key_env",
        "concurrency",
        "rpm",
        "tpm",
        "timeout",
        "max_retries",
        "quality",
        "system_prompt",
    }
)


def apply_backend_args(
    spec: dict[str, Any], text: str, option: str = "--backend-args"
) -> dict[str, Any]:
    pairs = parse_kv_pairs(text, option)
    if "num_replicas" in pairs:  # SkyThought's data-parallel replicas
        raise SkillmixError(
            f"{option}: num_replicas splits a task's problems over pods on Kubernetes",
            hint="list the task in an experiment file (tasks: [{name: T, shards: R}]) and "
            "`skillmix launch` it; locally one server answers (raise concurrency instead)",
        )
    unknown = sorted(set(pairs) - BACKEND_ARG_KEYS)
    if unknown:
        raise SkillmixError(
            f"{option}: unknown key {unknown[0]!r}",
            hint=f"allowed: {', '.join(sorted(BACKEND_ARG_KEYS))}",
        )
    return {**spec, **pairs}


def apply_sampling_params(spec: dict[str, Any], text: str) -> dict[str, Any]:
    pairs = parse_kv_pairs(text, "--sampling-params")
    unknown = sorted(set(pairs) - SAMPLING_KEYS)
    if unknown:
        raise SkillmixError(
            f"--sampling-params: unknown key {unknown[0]!r}",
            hint=f"allowed: {', '.join(sorted(SAMPLING_KEYS))}",
        )
    sampling: dict[str, Any] = dict(spec.get("sampling") or {})
    for key, value in pairs.items():
        sampling[key] = value.split("|") if key == "stop" else value
    return {**spec, "sampling": sampling}
