"""Finding prompt versions on disk: the built-in ``prompts/`` or any directory the user gives.

A prompts directory holds ``generation/*.json`` and ``grading/*.json`` (the reference's
``grade/`` is accepted too); a version is a file's stem. A version may also be a path to a
``.json`` file.
"""

from __future__ import annotations

import json
from pathlib import Path

from skillmix.catalog import read_text_file
from skillmix.errors import SkillmixError
from skillmix.limits import PROMPT_BYTES, read_at_most
from skillmix.method.prompts import PromptKind, PromptTemplate, make_template

KIND_DIRS: dict[str, tuple[str, ...]] = {
    "generation": ("generation",),
    "grading": ("grading", "grade"),
}


def builtin_prompts_dir() -> Path:
    """Wheels ship the prompts as ``skillmix/builtin_prompts``; a source checkout keeps them in
    the repository's ``prompts/`` (editable installs see that one)."""
    packaged = Path(__file__).parent / "builtin_prompts"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "prompts"


def _kind_dirs(root: Path, kind: PromptKind) -> list[Path]:
    return [root / d for d in KIND_DIRS[kind] if (root / d).is_dir()]


def list_prompt_versions(kind: PromptKind, prompts_dir: str | Path | None = None) -> list[str]:
    root = Path(prompts_dir) if prompts_dir else builtin_prompts_dir()
    return sorted({p.stem for d in _kind_dirs(root, kind) for p in d.glob("*.json")})


def parse_prompt_json(text: str, name: str, kind: PromptKind, source: str) -> PromptTemplate:
    try:
        turns = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SkillmixError(
            f"{source}:{exc.lineno}: invalid JSON: {exc.msg}",
            hint="a prompt version is a JSON array of strings",
        ) from None
    return make_template(name, kind, turns, source)


def load_prompt_version(
    kind: PromptKind,
    version: str,
    prompts_dir: str | Path | None = None,
    *,
    encoding: str = "utf-8",
) -> PromptTemplate:
    """Load ``version`` of ``kind``. ``encoding`` exists to re-create runs whose template files
    were decoded with another codec (the reference runs read their grading file as cp1252)."""
    if version.endswith(".json"):
        path = Path(version)
    else:
        root = Path(prompts_dir) if prompts_dir else builtin_prompts_dir()
        if prompts_dir and not root.is_dir():
            raise SkillmixError(f"{root}: prompts directory not found")
        candidates = [d / f"{version}.json" for d in _kind_dirs(root, kind)]
        found = [c for c in candidates if c.is_file()]
        if not found:
            available = ", ".join(list_prompt_versions(kind, root)) or "none"
            raise SkillmixError(
                f"no {kind} prompt version {version!r} in {root}",
                hint=f"available: {available}",
            )
        path = found[0]
    if encoding.replace("-", "").lower() in ("utf8", "utf8sig"):
        text = read_text_file(path)
    else:
        try:
            text = read_at_most(path, PROMPT_BYTES, "a prompt file").decode(encoding)
        except (OSError, UnicodeDecodeError, LookupError) as exc:
            raise SkillmixError(f"{path}: cannot read as {encoding}: {exc}") from None
    return parse_prompt_json(text, path.stem, kind, str(path))
