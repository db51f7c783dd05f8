"""A reasoning run in SkyThought's layout: ``{result_dir}/{model with / as _}_{task}_{6 hex}/``
with ``results.json`` (keyed by ``_index``: the row, ``input_conversation``, ``responses``
with content, correctness and reason, ``token_usages``) and ``summary.json`` (configuration,
token totals and averages, accuracy, ``pass_at_k`` keyed ``"k=N"``).

Unlike SkyThought, results arrive as they are made: each finished problem is appended to
``results.jsonl`` at once (a crash loses at most the problems in flight) and ``results.json``
is rewritten from it atomically every few seconds and at the end. ``--resume`` reads both."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from skillmix.errors import SkillmixError
from skillmix.limits import RESULTS_BYTES, read_at_most

RESULTS_JSON = "results.json"
RESULTS_JOURNAL = "results.jsonl"
SUMMARY_JSON = "summary.json"
HASH_DIGITS = 6


def run_dir_name(model: str, task: str, configuration: dict[str, Any]) -> str:
    """SkyThought's folder name; the hash covers everything that changes the results."""
    canonical = json.dumps(configuration, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:HASH_DIGITS]
    return f"{model.replace('/', '_')}_{task}_{digest}"


def write_json(path: Path, data: Any) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be read
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=4, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    """The results of one run, problem by problem, in memory and on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.results: dict[str, dict[str, Any]] = {}

    @classmethod
    def open(cls, path: Path, *, resume: bool, overwrite: bool) -> RunDir:
        """A new run folder, or the one there: resumed (``resume``), started over
        (``overwrite``), else refused so that no result is lost."""
        run = cls(path)
        exists = (path / RESULTS_JSON).exists() or (path / RESULTS_JOURNAL).exists()
        if exists and overwrite:
            for name in (RESULTS_JSON, RESULTS_JOURNAL, SUMMARY_JSON):
                (path / name).unlink(missing_ok=True)
        elif exists and not resume:
            raise SkillmixError(
                f"{path}: results of this run exist",
                hint="--resume continues it, --overwrite starts over",
            )
        elif exists:
            run.results = read_results(path)
        path.mkdir(parents=True, exist_ok=True)
        return run

    def add(self, index: str, entry: dict[str, Any]) -> None:
        """One finished problem: kept, and appended to the journal at once."""
        self.results[index] = entry
        line = json.dumps({"_index": index, "entry": entry}, ensure_ascii=False)
        with open(self.path / RESULTS_JOURNAL, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def flush(self) -> None:
        """``results.json`` as SkyThought writes it: problems in index order."""
        write_json(self.path / RESULTS_JSON, dict(sorted(self.results.items(), key=_order)))


def _order(item: tuple[str, Any]) -> tuple[int, str]:
    key = item[0]
    return (int(key), "") if key.isdigit() else (1 << 62, key)


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The problems of a run folder: ``results.json`` (written by skillmix or SkyThought), then
    what the journal holds beyond it (a torn last line, from a crash, is left out)."""
    results: dict[str, dict[str, Any]] = {}
    main = path / RESULTS_JSON
    if main.exists():
        try:
            data = json.loads(read_at_most(main, RESULTS_BYTES, "a results.json").decode("utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SkillmixError(f"{main}: cannot read: {exc}") from None
        if not isinstance(data, dict):
            raise SkillmixError(f"{main}: expected an object keyed by _index")
        results = {str(k): v for k, v in data.items()}
    journal = path / RESULTS_JOURNAL
    if journal.exists():
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line a crash cut short
            results[str(record["_index"])] = record["entry"]
    return results
