"""Reading an artifact: any problem (damage, a partial file, an unknown version) is one
:class:`SkillmixError` line naming the file and what is wrong, never a traceback."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import (
    TypeAdapter,
    ValidationError,
)

from skillmix.artifacts.base import (
    SCHEMA_VERSION,
    SUPPORTED_VERSIONS,
)
from skillmix.artifacts.run import (
    RUN_JSON_ADAPTER,
)
from skillmix.errors import SkillmixError

M = TypeVar("M")


def _problem(exc: ValidationError, *, tagged: bool) -> str:
    errors = exc.errors()
    err = errors[0]
    loc = err["loc"][1:] if tagged else err["loc"]  # a union's errors start with the tag
    path = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "union_tag_invalid":
        text = f"unknown kind {err['input'].get('kind')!r}"
    elif err["type"] == "missing":
        text = f"missing field {path!r}"
    else:
        text = f"{path}: {err['msg']}"
    return text + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")


def parse_artifact(model: type[M] | TypeAdapter[M], raw: bytes, source: str) -> M:
    """Validate the bytes of one artifact; any problem is one SkillmixError naming ``source``."""
    if b"\x00" in raw:
        raise SkillmixError(f"{source}: damaged file (it contains a NUL byte)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SkillmixError(f"{source}: damaged file (not UTF-8 at byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SkillmixError(
            f"{source}: damaged file (invalid JSON at line {exc.lineno}: {exc.msg})"
        ) from None
    return validate_artifact(model, data, source)


def validate_artifact(model: type[M] | TypeAdapter[M], data: object, source: str) -> M:
    """Validate an artifact's parsed JSON (see :func:`parse_artifact`)."""
    if not isinstance(data, dict):
        raise SkillmixError(f"{source}: damaged file (expected a JSON object)")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        raise SkillmixError(
            f"{source}: unknown schema_version {version!r} "
            f"(this skillmix reads {', '.join(map(str, sorted(SUPPORTED_VERSIONS)))})",
            hint="upgrade skillmix to read it",
        )
    adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise SkillmixError(
            f"{source}: damaged or partial file: {_problem(exc, tagged=model is RUN_JSON_ADAPTER)}"
        ) from None
