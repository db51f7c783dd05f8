"""A task's problems, loaded through Hugging Face ``datasets`` (the Hub, or a local JSONL or
Parquet file with ``--dataset-file``: the same loader either way), filtered as the task says,
each with its ``_index``. The Hub revision read is recorded, so a run can name its data."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillmix.errors import SkillmixError
from skillmix.tasks.config import TaskConfig

MAX_DATASET_FILE_BYTES = 2_000_000_000


@dataclass
class Problems:
    """The rows of a task (dataset columns plus ``_index``) and where they came from."""

    rows: list[dict[str, Any]]
    source: str  # the Hub id or the file
    revision: str  # the Hub commit read, or the file's sha256


def load_problems(
    task: TaskConfig, *, dataset_file: str | None = None, revision: str | None = None
) -> Problems:
    """Every problem of ``task``, filtered (an empty result is an error naming the filter)."""
    if dataset_file:
        rows, source, read = (
            _from_file(Path(dataset_file)),
            dataset_file,
            _file_digest(dataset_file),
        )
    else:
        rows, source = _from_hub(task, revision), task.dataset_path
        read = _hub_revision(task, revision)
    rows = _filtered(task, rows, source)
    for i, row in enumerate(rows):
        row.setdefault("_index", i)
    return Problems(rows, source, read)


def _from_file(path: Path) -> list[dict[str, Any]]:
    import datasets  # deferred: datasets (pyarrow, pandas) takes ~1 s; SKILL-MIX runs skip it

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SkillmixError(f"--dataset-file {path}: cannot read: {exc.strerror}") from None
    if size > MAX_DATASET_FILE_BYTES:
        raise SkillmixError(f"--dataset-file {path}: larger than {MAX_DATASET_FILE_BYTES:,} bytes")
    kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix.lower())
    if kind is None:
        raise SkillmixError(
            f"--dataset-file {path}: expected .jsonl or .parquet", hint="convert it with datasets"
        )
    try:
        data = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as exc:  # datasets wraps parse errors in several types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SkillmixError(f"--dataset-file {path}: cannot load: {first}") from None
    return [dict(row) for row in data]


def _from_hub(task: TaskConfig, revision: str | None) -> list[dict[str, Any]]:
    import datasets  # deferred: datasets (pyarrow, pandas) takes ~1 s; SKILL-MIX runs skip it

    rows: list[dict[str, Any]] = []
    for subset in task.subsets:
        try:
            data = datasets.load_dataset(
                task.dataset_path, subset, split=task.dataset_split, revision=revision
            )
        except Exception as exc:
            raise _hub_error(task, exc) from None
        rows += [dict(row) for row in data]
    return rows


def _hub_revision(task: TaskConfig, revision: str | None) -> str:
    """The commit of the dataset repository that was read (``revision`` resolved)."""
    import huggingface_hub  # deferred: only when reading from the Hub

    try:
        return str(huggingface_hub.dataset_info(task.dataset_path, revision=revision).sha)
    except Exception:  # the rows were read (maybe from the cache): the commit is unknown
        return revision or "unknown"


def _hub_error(task: TaskConfig, exc: Exception) -> SkillmixError:
    text = str(exc)
    gated = task.gated or "gated" in text.lower() or "401" in text or "403" in text
    if gated:
        return SkillmixError(
            f"task {task.name}: dataset {task.dataset_path} is gated: accept its terms at "
            f"https://huggingface.co/datasets/{task.dataset_path} and set HF_TOKEN",
            hint="or give the rows with --dataset-file FILE.jsonl",
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return SkillmixError(
        f"task {task.name}: cannot load {task.dataset_path}: {first}",
        hint="offline? give the rows with --dataset-file FILE.jsonl",
    )


def _filtered(task: TaskConfig, rows: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    p = task.preprocess
    if rows and task.question_key not in rows[0]:
        raise SkillmixError(
            f"{source}: no column {task.question_key!r} (the task's question_key); "
            f"columns: {', '.join(sorted(rows[0]))}"
        )
    if p.url_contains is not None:
        rows = [r for r in rows if p.url_contains in str(r.get("url") or "")]
    if p.source is not None:
        rows = [r for r in rows if r.get("source") == p.source]
    if p.answer_contains is not None:
        rows = [r for r in rows if p.answer_contains in str(r.get(task.answer_key) or "")]
    if not rows:
        raise SkillmixError(f"{source}: no rows left for task {task.name} after its filters")
    return rows


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"
