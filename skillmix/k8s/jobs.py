"""A run's Kubernetes Job as skillmix reads it, defined once: :class:`JobState`, parsed from the
API's JSON (lists, watches), from the client's models, or from a deferred Job's stored
manifest. The client, the coordinator, ``status`` and ``launch`` all read Jobs through it, so
a label, a condition or a hold mode is interpreted in one place. No Kubernetes client here:
the coordinator's decisions and the unit tests use it without one."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from skillmix.k8s.helm import split_manifests
from skillmix.store.base import KeyNotFound
from skillmix.store.layout import RunLayout
from skillmix.store.runs import RunStore
from skillmix.vocab import (
    ADMISSION_GATE_ANNOTATION,
    ATTEMPT_LABEL,
    FAILURE_ANNOTATION,
    GATED_LABEL,
    HOLD_ANNOTATION,
    JOB_PHASES,
    K_LABEL,
    PHASE_LABEL,
    POOL_ANNOTATION,
    POOL_SIZE_ANNOTATION,
    POOL_WEIGHT_ANNOTATION,
    QUEUE_LABEL,
    ROUND_LABEL,
    RUN_LABEL,
    STUDENT_LABEL,
    Unit,
)

# what a Job's conditions and counts say, in the words `status` shows
JobStatus = Literal["Complete", "Failed", "Suspended", "Running", "Pending"]
# how a gated Job is held back (k8s/values.py hold_mode)
Hold = Literal["suspend", "gate", "defer"]
_HOLDS: dict[str, Hold] = {h: h for h in get_args(Hold)}
_SELECTOR_LABELS = {"phase": PHASE_LABEL, "student": STUDENT_LABEL, "attempt": ATTEMPT_LABEL}


def run_selector(run_id: str, **labels: str | int | None) -> str:
    """The label selector of a run's objects, narrowed by ``phase``, ``student``, ``attempt``."""
    parts = [f"{RUN_LABEL}={run_id}"]
    for key, value in labels.items():
        if value:
            parts.append(f"{_SELECTOR_LABELS[key]}={value}")
    return ",".join(parts)


@dataclass(frozen=True)
class JobCondition:
    """One condition of a Job whose status is True."""

    type: str
    reason: str = ""
    message: str = ""


@dataclass
class JobState:
    """One Job of a run: its labels and annotations, counts and true conditions."""

    name: str
    labels: dict[str, str]
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    completions: int = 1
    conditions: list[JobCondition] = field(default_factory=list)
    suspended: bool = False
    annotations: dict[str, str] = field(default_factory=dict)
    exists: bool = True  # False: a deferred Job the coordinator has not created yet

    @property
    def phase(self) -> str:
        """The Job's phase label (a vocab.JobPhase), "?" without one."""
        return self.labels.get(PHASE_LABEL, "?")

    @property
    def gated(self) -> bool:
        """Held back until its inputs exist; the run's coordinator releases it."""
        return self.labels.get(GATED_LABEL) == "true"

    @property
    def hold(self) -> Hold:
        """How a gated Job is held (k8s/values.py hold_mode); suspend unless it says else."""
        return _HOLDS.get(self.annotations.get(HOLD_ANNOTATION, ""), "suspend")

    @property
    def released(self) -> bool:
        """Allowed to start: not gated, or gated and let go by the coordinator (unsuspended,
        its Kueue admission gate removed, or, deferred, created)."""
        if not self.exists:
            return False
        if not self.gated or self.hold == "defer":
            return True
        if self.hold == "gate":
            return ADMISSION_GATE_ANNOTATION not in self.annotations
        return not self.suspended

    @property
    def queue(self) -> str:
        """The Kueue LocalQueue it was put in ("" for none)."""
        return self.labels.get(QUEUE_LABEL, "")

    @property
    def pool(self) -> str:
        return self.annotations.get(POOL_ANNOTATION, "")

    @property
    def pool_size(self) -> int:
        return _int(self.annotations.get(POOL_SIZE_ANNOTATION))

    @property
    def pool_weight(self) -> int:
        return max(1, _int(self.annotations.get(POOL_WEIGHT_ANNOTATION)))

    @property
    def unit(self) -> Unit | None:
        """The unit of a per-unit Job; None for the others (per-model, aggregation...)."""
        student = self.labels.get(STUDENT_LABEL)
        if student is None or K_LABEL not in self.labels:
            return None
        return Unit(student, _int(self.labels.get(K_LABEL)), _int(self.labels.get(ROUND_LABEL)))

    @property
    def unit_labels(self) -> tuple[str, str, str]:
        """(student, k, round) as the labels spell them, "" where absent: what status shows
        (a per-model generation Job has a student but no k)."""
        return (
            self.labels.get(STUDENT_LABEL, ""),
            self.labels.get(K_LABEL, ""),
            self.labels.get(ROUND_LABEL, ""),
        )

    @property
    def attempt(self) -> int:
        return _int(self.labels.get(ATTEMPT_LABEL))

    @property
    def order(self) -> tuple[int, str, int, int, str]:
        """Phase order, then unit, then name: the order Jobs are released and listed in."""
        rank = JOB_PHASES.index(self.phase) if self.phase in JOB_PHASES else len(JOB_PHASES)
        unit = self.unit or Unit("", 0, 0)
        return rank, unit.student, unit.k, unit.round, self.name

    @property
    def state(self) -> JobStatus:
        types = {c.type for c in self.conditions}
        if "Complete" in types or ("SuccessCriteriaMet" in types and "Failed" not in types):
            return "Complete"
        if "Failed" in types or "FailureTarget" in types:
            return "Failed"
        if "Suspended" in types or (self.suspended and not self.active):
            return "Suspended"
        return "Running" if self.active else "Pending"

    @property
    def finished(self) -> bool:
        return self.state in ("Complete", "Failed")

    @property
    def reason(self) -> str:
        failure = self.annotations.get(FAILURE_ANNOTATION)
        if failure and self.state == "Failed":  # the coordinator's reason, not DeadlineExceeded
            return failure
        for c in self.conditions:
            if c.type in ("Failed", "FailureTarget", "Suspended"):
                return f"{c.reason}: {c.message}".strip(": ")
        return ""

    @classmethod
    def from_job(cls, job: Any) -> JobState:
        """From the client's V1Job model (tests, callers holding models)."""
        from kubernetes import client  # deferred: this module is used without the client

        return cls.from_dict(client.ApiClient().sanitize_for_serialization(job))

    @classmethod
    def from_dict(cls, job: dict[str, Any]) -> JobState:
        """From the API's JSON (what raw lists and watches give)."""
        meta = job.get("metadata") or {}
        spec = job.get("spec") or {}
        status = job.get("status") or {}
        conditions = [
            JobCondition(c.get("type", ""), c.get("reason") or "", (c.get("message") or "")[:200])
            for c in status.get("conditions") or []
            if c.get("status") == "True"
        ]
        return cls(
            name=meta.get("name", ""),
            labels=dict(meta.get("labels") or {}),
            active=status.get("active") or 0,
            succeeded=status.get("succeeded") or 0,
            failed=status.get("failed") or 0,
            completions=spec.get("completions") or 1,
            conditions=conditions,
            suspended=bool(spec.get("suspend")),
            annotations=dict(meta.get("annotations") or {}),
        )

    @classmethod
    def from_manifest(cls, name: str, text: str) -> JobState:
        """A deferred Job from its rendered YAML, not created yet: labels and annotations read
        from the text as the chart writes them (no YAML parse: 1,500 Jobs stay cheap)."""
        labels = {k: v for k in _META_KEYS if (v := _meta_value(text, k)) is not None}
        notes = {k: v for k in _NOTE_KEYS if (v := _meta_value(text, k)) is not None}
        return cls(name=name, labels=labels, annotations=notes, suspended=True, exists=False)


@dataclass
class WatchEvent:
    """One watch event: ``state`` is None for a BOOKMARK (only the resourceVersion moves)."""

    type: str
    state: JobState | None
    resource_version: str


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (HTTP 410 Gone): list again and re-watch."""


@dataclass
class DeferredJob:
    """A Job the launch stored instead of creating (hold ``defer``)."""

    name: str
    text: str
    state: JobState


def read_deferred(run: RunStore, attempt: int) -> dict[str, DeferredJob]:
    """The deferred Jobs of ``attempt`` from the store (none without the file)."""
    try:
        raw = run.store.read_bytes(RunLayout.launch_deferred(attempt)).decode("utf-8")
    except KeyNotFound:
        return {}
    return deferred_jobs(raw)


def deferred_jobs(text: str) -> dict[str, DeferredJob]:
    """The Jobs of a stored deferred manifest stream."""
    return {
        doc.name: DeferredJob(doc.name, doc.text, JobState.from_manifest(doc.name, doc.text))
        for doc in split_manifests(text)
    }


_META_KEYS = (
    RUN_LABEL,
    PHASE_LABEL,
    STUDENT_LABEL,
    K_LABEL,
    ROUND_LABEL,
    ATTEMPT_LABEL,
    GATED_LABEL,
    QUEUE_LABEL,
)
_NOTE_KEYS = (HOLD_ANNOTATION, POOL_ANNOTATION, POOL_SIZE_ANNOTATION, POOL_WEIGHT_ANNOTATION)


def _meta_value(text: str, key: str) -> str | None:
    """The first ``key: "value"`` line of a rendered object (labels and annotations)."""
    m = re.search(rf"^\s+{re.escape(key)}: [\"']?([^\"'\n]*?)[\"']?\s*$", text, re.MULTILINE)
    return m.group(1) if m else None


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
