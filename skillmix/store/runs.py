"""A run's folder in the store: layout, JSONL parts and ``_SUCCESS`` manifests.

Write protocol: records go into small JSONL parts with unique keys as work progresses (a crash
loses at most the unflushed part); when a unit of work is complete its manifest ``_SUCCESS``
is written last, listing the parts with their sha256. Readers of finished work trust only
manifests and check each part against it (a mismatch is ``DamagedUnit``); a task resuming its
own unfinished work lists the parts it finds, after ``repair_unit`` has set damaged files aside.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skillmix.artifacts import (
    RUN_JSON_ADAPTER,
    EvaluationRun,
    LaunchRecord,
    ReferenceImportRun,
    Summary,
    parse_artifact,
)
from skillmix.errors import RunFailedError, SkillmixError
from skillmix.records import GenerationRecord, GradeRecord
from skillmix.store.base import ArtifactStore, KeyExists, KeyNotFound, join_key
from skillmix.store.layout import RunLayout

# the layout's names, for the readers and writers below (store/layout.py owns them)
RUN_JSON = RunLayout.RUN_JSON
MANIFEST = RunLayout.MANIFEST
PART_PREFIX = RunLayout.PART_PREFIX
GENERATIONS = RunLayout.GENERATIONS
GRADES = RunLayout.GRADES
REPORT = RunLayout.REPORT
LAUNCHES = RunLayout.LAUNCHES
SUMMARY_JSON = RunLayout.summary_key()
generation_prefix = RunLayout.generation_prefix
grade_prefix = RunLayout.grade_prefix
launch_record_key = RunLayout.launch_record

R = TypeVar("R", bound=BaseModel)
A = TypeVar("A", bound=BaseModel)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PartInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(description="Part key relative to the manifest's folder.")
    records: int
    sha256: str


class Manifest(BaseModel):
    """Lists the parts of one finished unit of work; written last."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    parts: list[PartInfo]
    records: int
    failed: int = Field(0, description="Records in the parts whose status is 'failed'.")
    attempt: int = Field(0, description="Launch attempt that wrote it (0: the local executor).")
    created_at: str = Field(default_factory=utc_now)


RESUME_HINT = (
    "run `skillmix evaluate --resume` (or `skillmix launch` again, for a Kubernetes run) to redo it"
)
DAMAGED = "_damaged"  # a unit's subfolder where a repair sets damaged files aside


class DamagedUnit(RunFailedError):
    """A unit of work whose files no longer match: a corrupt manifest, a part it lists that is
    missing, altered (sha256) or unreadable. Readers name it; a resume repairs it."""

    def __init__(self, uri: str, prefix: str, detail: str, *, part: str | None = None) -> None:
        super().__init__(f"{uri.rstrip('/')}/{prefix}: damaged unit: {detail}", hint=RESUME_HINT)
        self.prefix = prefix
        self.part = part


def _dump_records(records: Iterable[BaseModel]) -> bytes:
    return b"".join(r.model_dump_json().encode() + b"\n" for r in records)


class PartWriter:
    """Buffers records and writes them as new parts every ``part_size`` records or
    ``flush_seconds`` seconds, whichever comes first (a crash loses at most that much).

    Two ways in: ``add``/``flush`` write synchronously (scripts, imports); coroutines use
    ``add_async``/``flush_async``, which buffer on the event loop and write the part in a
    worker thread (``asyncio.to_thread``), so a slow store never blocks other requests.
    ``flush_async`` returns once every part written so far is in ``written``."""

    def __init__(
        self, store: ArtifactStore, prefix: str, *, part_size: int = 20, flush_seconds: float = 5.0
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.part_size = max(1, part_size)
        self.flush_seconds = flush_seconds
        self._buffer: list[BaseModel] = []
        self._last_flush = time.monotonic()
        self._writing: set[asyncio.Future[PartInfo]] = set()
        self.written: list[PartInfo] = []

    def _due(self) -> bool:
        return (
            len(self._buffer) >= self.part_size
            or time.monotonic() - self._last_flush >= self.flush_seconds
        )

    def _take(self) -> list[BaseModel]:
        """The buffered records, leaving the buffer empty and the flush clock restarted."""
        self._last_flush = time.monotonic()
        batch, self._buffer = self._buffer, []
        return batch

    def _write(self, batch: list[BaseModel]) -> PartInfo:
        """Write one new part (safe in a worker thread: touches no shared state but ``written``,
        appended to once the part is in the store)."""
        data = _dump_records(batch)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{PART_PREFIX}{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
        self.store.write_bytes(join_key(self.prefix, name), data, if_absent=True)
        info = PartInfo(key=name, records=len(batch), sha256=hashlib.sha256(data).hexdigest())
        self.written.append(info)
        return info

    def add(self, record: BaseModel) -> None:
        self._buffer.append(record)
        if self._due():
            self.flush()

    def flush(self) -> PartInfo | None:
        batch = self._take()
        if not batch:
            return None
        try:
            return self._write(batch)
        except BaseException:
            self._buffer[:0] = batch  # not written: keep them for the next flush
            raise

    async def add_async(self, record: BaseModel) -> None:
        """Buffer ``record``; when a part is due, write it off the event loop."""
        self._buffer.append(record)
        if self._due():
            await self.flush_async()

    async def flush_async(self) -> None:
        """Write the buffered records as one part in a worker thread, then wait for every
        write in flight (this writer's other coroutines' too), so ``written`` is complete.

        Cancelling the caller does not cancel a write already started: it finishes in its
        thread and still lands in ``written``. A failed write puts its records back in the
        buffer (for the next flush) and raises here."""
        batch = self._take()
        mine = self._start_write(batch) if batch else None
        if self._writing:
            await asyncio.wait(set(self._writing))
        if mine is not None and not mine.cancelled() and mine.exception() is not None:
            raise mine.exception()  # type: ignore[misc]

    def _start_write(self, batch: list[BaseModel]) -> asyncio.Future[PartInfo]:
        write = asyncio.ensure_future(asyncio.to_thread(self._write, batch))
        self._writing.add(write)

        def done(future: asyncio.Future[PartInfo]) -> None:  # on the event loop
            self._writing.discard(future)
            if not future.cancelled() and future.exception() is not None:
                self._buffer[:0] = batch  # not written: keep them for the next flush

        write.add_done_callback(done)
        return write


class RunStore:
    """Typed access to one run's folder (the store passed in is rooted at the run)."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    @property
    def uri(self) -> str:
        return self.store.uri

    # run.json -----------------------------------------------------------------------------
    def read_run_json(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.store.read_bytes(RUN_JSON))
        except KeyNotFound:
            return None
        except json.JSONDecodeError as exc:
            raise RunFailedError(f"{self.uri}/{RUN_JSON}: corrupt JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise RunFailedError(f"{self.uri}/{RUN_JSON}: expected a JSON object")
        return data

    def read_run(self) -> EvaluationRun | ReferenceImportRun | None:
        """The typed run.json (None when absent); a damaged or partial file, or an unknown
        schema version, is one SkillmixError line."""
        try:
            raw = self.store.read_bytes(RUN_JSON)
        except KeyNotFound:
            return None
        return parse_artifact(RUN_JSON_ADAPTER, raw, f"{self.uri.rstrip('/')}/{RUN_JSON}")

    def write_run(
        self, run: EvaluationRun | ReferenceImportRun, *, overwrite: bool = False
    ) -> None:
        self.write_run_json(run.model_dump(mode="json"), overwrite=overwrite)

    def write_run_json(self, data: dict[str, Any], *, overwrite: bool = False) -> None:
        blob = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        self.store.write_bytes(RUN_JSON, blob, if_absent=not overwrite)

    def read_launch_record(self, attempt: int) -> LaunchRecord | None:
        """The record of Kubernetes launch ``attempt`` (None when there is none)."""
        return self._read_artifact(LaunchRecord, launch_record_key(attempt))

    def read_summary(self, key: str = SUMMARY_JSON) -> Summary | None:
        """The report's summary.json (None when there is none)."""
        return self._read_artifact(Summary, key)

    def _read_artifact(self, model: type[A], key: str) -> A | None:
        try:
            raw = self.store.read_bytes(key)
        except KeyNotFound:
            return None
        return parse_artifact(model, raw, f"{self.uri.rstrip('/')}/{key}")

    def is_empty(self) -> bool:
        """No run content (the run lock of a process taking the run is not content)."""
        lock = RunLayout.LOCK + "/"
        return not [k for k in self.store.list_keys() if not k.startswith(lock)]

    # manifests ----------------------------------------------------------------------------
    def manifest(self, prefix: str) -> Manifest | None:
        key = join_key(prefix, MANIFEST)
        try:
            raw = self.store.read_bytes(key)
        except KeyNotFound:
            return None
        try:
            return Manifest.model_validate_json(raw)
        except ValidationError as exc:
            raise DamagedUnit(
                self.uri, prefix, f"{MANIFEST} is not a valid manifest ({exc.errors()[0]['msg']})"
            ) from None

    def write_manifest(
        self,
        prefix: str,
        parts: list[PartInfo],
        *,
        failed: int = 0,
        attempt: int = 0,
        replace: bool = False,
    ) -> Manifest:
        """Write ``_SUCCESS`` last. Create-only, unless ``replace``: a unit that finished with
        failed records is redone and its manifest atomically replaced (readers see the old or
        the new list of parts, both complete)."""
        manifest = Manifest(
            parts=parts, records=sum(p.records for p in parts), failed=failed, attempt=attempt
        )
        blob = manifest.model_dump_json(indent=2).encode() + b"\n"
        try:
            self.store.write_bytes(join_key(prefix, MANIFEST), blob, if_absent=not replace)
        except KeyExists:
            raise RunFailedError(
                f"{self.uri}/{prefix}: finished by another writer while this one was running"
            ) from None
        return manifest

    def manifest_prefixes(self, top: str) -> list[str]:
        """Folders under ``top`` that hold a manifest. ``top`` being a file (a damaged run
        folder) is an error: read as "no records", it would turn a finished run into an
        empty one, and its report into a wrong one."""
        self.check_folder(top)
        suffix = "/" + MANIFEST
        return [k[: -len(suffix)] for k in self.store.list_keys(top) if k.endswith(suffix)]

    def check_folder(self, top: str) -> None:
        if top and self.store.exists(top):
            raise SkillmixError(
                f"{self.uri}/{top} is a file, not the {top} folder: this run folder is damaged",
                hint=f"restore {top}/ from a copy (nothing was read or written)",
            )

    def check_layout(self) -> None:
        """Refuse a damaged run folder (a record folder replaced by a file) before writing."""
        for top in (GENERATIONS, GRADES):
            self.check_folder(top)

    # parts --------------------------------------------------------------------------------
    def writer(self, prefix: str, **kwargs: Any) -> PartWriter:
        return PartWriter(self.store, prefix, **kwargs)

    def _part_names(self, prefix: str) -> list[str]:
        names = []
        for key in self.store.list_keys(prefix):
            name = key[len(prefix) + 1 :] if prefix else key
            if "/" not in name and name.startswith(PART_PREFIX):
                names.append(name)
        return names

    def part_infos(self, prefix: str) -> list[PartInfo]:
        """Every part present under ``prefix`` (for resuming unfinished work)."""
        return self.unfinished(prefix, None)[0]

    def _read_part(self, prefix: str, name: str, model: type[R]) -> Iterator[R]:
        key = join_key(prefix, name)
        yield from self._parse_part(key, self.store.read_bytes(key), model)

    def _parse_part(self, key: str, data: bytes, model: type[R]) -> Iterator[R]:
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                yield model.model_validate_json(line)
            except ValidationError as exc:
                raise RunFailedError(
                    f"{self.uri}/{key}:{number}: not a valid {model.__name__}: {exc.errors()[0]['msg']}"
                ) from None

    def read_parts(self, prefix: str, names: Iterable[str], model: type[R]) -> list[R]:
        return [r for name in names for r in self._read_part(prefix, name, model)]

    def finished_records(self, prefix: str, model: type[R]) -> list[R] | None:
        """Records of a finished unit (None when it has no manifest yet), each part checked
        against its manifest (present, same sha256, readable): a mismatch is DamagedUnit."""
        manifest = self.manifest(prefix)
        if manifest is None:
            return None
        records: list[R] = []
        for info in manifest.parts:
            records.extend(self._checked_part(prefix, info, model))
        return records

    def _checked_part(self, prefix: str, info: PartInfo, model: type[R]) -> list[R]:
        key = join_key(prefix, info.key)
        try:
            data = self.store.read_bytes(key)
        except KeyNotFound:
            raise DamagedUnit(
                self.uri, prefix, f"part {info.key} listed in {MANIFEST} is missing", part=info.key
            ) from None
        if hashlib.sha256(data).hexdigest() != info.sha256:
            raise DamagedUnit(
                self.uri,
                prefix,
                f"part {info.key} does not match the sha256 in {MANIFEST} (changed after the unit finished)",
                part=info.key,
            )
        try:
            return list(self._parse_part(key, data, model))
        except RunFailedError as exc:
            raise DamagedUnit(self.uri, prefix, exc.message, part=info.key) from None

    def repair_unit(self, prefix: str, model: type[BaseModel]) -> list[str]:
        """What a resume does before taking up a unit: set aside (into ``_damaged/``) a manifest
        that is corrupt or lists a part that is missing, altered or unreadable, and every part
        that is unreadable (truncated, garbage, another record schema). The unit is then
        unfinished and resumes from the parts left; what the set-aside parts held is redone
        (from the response cache when it was answered before). Returns one line per repair."""
        notes: list[str] = []
        try:
            manifest = self.manifest(prefix)
        except DamagedUnit as exc:
            manifest = None
            notes.append(f"{exc.message}: set it aside, the unit is redone")
            self._set_aside(prefix, MANIFEST)
        if manifest is not None:
            damaged: list[DamagedUnit] = []
            for info in manifest.parts:
                try:
                    self._checked_part(prefix, info, model)
                except DamagedUnit as exc:
                    damaged.append(exc)
            if not damaged:
                return notes  # a sound finished unit: nothing to repair
            for bad in damaged:
                notes.append(f"{bad.message}: set it aside with {MANIFEST}, its records are redone")
                if bad.part is not None:
                    self._set_aside(prefix, bad.part)
            self._set_aside(prefix, MANIFEST)
        for name in self._part_names(prefix):
            key = join_key(prefix, name)
            try:
                data = self.store.read_bytes(key)
            except KeyNotFound:
                continue
            try:
                for _record in self._parse_part(key, data, model):
                    pass
            except RunFailedError as exc:
                notes.append(f"{exc.message}: set aside, its records are redone")
                self._set_aside(prefix, name)
        return notes

    def _set_aside(self, prefix: str, name: str) -> None:
        """Move ``prefix/name`` to ``prefix/_damaged/name.<time>`` (kept for inspection, out of
        every reader's way: readers list only the unit's own parts and manifest)."""
        key = join_key(prefix, name)
        try:
            data = self.store.read_bytes(key)
        except KeyNotFound:
            return
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        self.store.write_bytes(join_key(prefix, DAMAGED, f"{name}.{stamp}"), data)
        self.store.delete_prefix(key)

    def unfinished_records(self, prefix: str, model: type[R]) -> list[R]:
        """Records a crashed writer left in parts (no manifest yet)."""
        return self.unfinished(prefix, model)[1]

    def unfinished(self, prefix: str, model: type[R] | None) -> tuple[list[PartInfo], list[R]]:
        """The parts present under ``prefix`` and (with a model) their records, reading each
        part once: what a task resuming its own unit needs for both its work and its manifest."""
        infos: list[PartInfo] = []
        records: list[R] = []
        for name in self._part_names(prefix):
            key = join_key(prefix, name)
            data = self.store.read_bytes(key)
            lines = [line for line in data.split(b"\n") if line.strip()]
            infos.append(
                PartInfo(key=name, records=len(lines), sha256=hashlib.sha256(data).hexdigest())
            )
            if model is not None:
                records.extend(self._parse_part(key, data, model))
        return infos, records

    # whole-run readers --------------------------------------------------------------------
    def generation_records(self) -> list[GenerationRecord]:
        out: list[GenerationRecord] = []
        for prefix in self.manifest_prefixes(GENERATIONS):
            out.extend(self.finished_records(prefix, GenerationRecord) or [])
        return out

    def grade_records(self) -> list[GradeRecord]:
        out: list[GradeRecord] = []
        for prefix in self.manifest_prefixes(GRADES):
            out.extend(self.finished_records(prefix, GradeRecord) or [])
        return out

    def write_report_file(self, name: str, data: bytes) -> str:
        key = join_key(REPORT, name)
        self.store.write_bytes(key, data)
        return key
