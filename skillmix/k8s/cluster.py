"""The Kubernetes API, through the official client: create, watch, inspect and delete a run's
objects, found by the ``skillmix.io/run`` label."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from skillmix.errors import RunFailedError, SkillmixError
from skillmix.k8s.profiles import ClusterProfile

RUN_LABEL = "skillmix.io/run"
PHASE_LABEL = "skillmix.io/phase"
STUDENT_LABEL = "skillmix.io/student"


def run_selector(run_id: str, **labels: str | None) -> str:
    parts = [f"{RUN_LABEL}={run_id}"]
    names = {"phase": PHASE_LABEL, "student": STUDENT_LABEL}
    for key, value in labels.items():
        if value:
            parts.append(f"{names[key]}={value}")
    return ",".join(parts)


@dataclass
class JobState:
    name: str
    labels: dict[str, str]
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    completions: int = 1
    conditions: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)

    @property
    def phase(self) -> str:
        return self.labels.get(PHASE_LABEL, "?")

    @property
    def state(self) -> str:
        types = {c[0] for c in self.conditions}
        if "Complete" in types or ("SuccessCriteriaMet" in types and "Failed" not in types):
            return "Complete"
        if "Failed" in types or "FailureTarget" in types:
            return "Failed"
        if "Suspended" in types:
            return "Suspended"
        return "Running" if self.active else "Pending"

    @property
    def reason(self) -> str:
        for kind, reason, message in self.conditions:
            if kind in ("Failed", "FailureTarget", "Suspended"):
                return f"{reason}: {message}".strip(": ")
        return ""

    @classmethod
    def from_job(cls, job: Any) -> JobState:
        status = job.status
        conditions = [
            (c.type, c.reason or "", (c.message or "")[:200])
            for c in (status.conditions or [])
            if c.status == "True"
        ]
        return cls(
            name=job.metadata.name,
            labels=dict(job.metadata.labels or {}),
            active=status.active or 0,
            succeeded=status.succeeded or 0,
            failed=status.failed or 0,
            completions=job.spec.completions or 1,
            conditions=conditions,
        )


class KubeClient:
    """The handful of API calls skillmix needs, with one-line errors."""

    def __init__(self, profile: ClusterProfile, *, api_client: Any = None) -> None:
        from kubernetes import client

        self.profile = profile
        self.namespace = profile.namespace
        self.api_client = api_client or self._load(profile)
        self.batch = client.BatchV1Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    @staticmethod
    def _load(profile: ClusterProfile) -> Any:
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException

        try:
            return config.new_client_from_config(
                config_file=profile.kubeconfig, context=profile.context
            )
        except ConfigException as exc:
            where = profile.kubeconfig or "the default kubeconfig"
            if profile.context:
                raise SkillmixError(
                    f"kube context {profile.context!r} not found in {where}",
                    hint="check `context:` in the cluster profile (kubectl config get-contexts)",
                ) from None
            raise SkillmixError(f"cannot load {where}: {exc}") from None
        except FileNotFoundError:
            raise SkillmixError(f"kubeconfig {profile.kubeconfig} not found") from None

    def _call(
        self,
        what: str,
        fn: Callable[..., Any],
        *args: Any,
        ok_statuses: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> Any:
        """``fn(*args, **kwargs)`` with one-line errors; an HTTP status in ``ok_statuses``
        (409 AlreadyExists, 404 NotFound) returns None instead."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status in ok_statuses:
                return None
            raise _api_error(what, exc, self.namespace) from None
        except (HTTPError, OSError) as exc:
            host = self.api_client.configuration.host
            raise RunFailedError(
                f"{what}: cannot reach the Kubernetes API at {host}: {exc.__class__.__name__}"
            ) from None

    # objects ------------------------------------------------------------------------------
    def apply(self, manifests: list[dict[str, Any]], *, dry_run: bool = False) -> list[str]:
        """Create the rendered objects; an existing ServiceAccount is reused, an existing Job
        is an error (names carry the attempt number, so this means a concurrent launch).
        ``dry_run`` asks the API server to validate and authorize without persisting."""
        created = []
        extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        for doc in manifests:
            kind, name = doc["kind"], doc["metadata"]["name"]
            if kind == "ServiceAccount":
                result = self._call(
                    f"create ServiceAccount {name}",
                    self.core.create_namespaced_service_account,
                    self.namespace,
                    doc,
                    ok_statuses=(409,),
                    **extra,
                )
                if result is None:  # 409: it exists (a relaunch)
                    continue
            elif kind == "Job":
                self._call(
                    f"create Job {name}",
                    self.batch.create_namespaced_job,
                    self.namespace,
                    doc,
                    **extra,
                )
            else:
                raise SkillmixError(f"the chart rendered an unexpected {kind} {name}")
            created.append(f"{kind}/{name}")
        return created

    def jobs(self, run_id: str, **labels: str | None) -> tuple[list[JobState], str]:
        result = self._call(
            "list Jobs",
            self.batch.list_namespaced_job,
            self.namespace,
            label_selector=run_selector(run_id, **labels),
        )
        return [JobState.from_job(j) for j in result.items], result.metadata.resource_version

    def watch_jobs(
        self, run_id: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[tuple[str, JobState]]:
        """Job events after ``resource_version``; raises ``WatchExpired`` on 410 Gone and when
        the connection breaks (API server restart, load balancer timeout): list again."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        w = watch.Watch()
        try:
            for event in w.stream(
                self.batch.list_namespaced_job,
                self.namespace,
                label_selector=run_selector(run_id),
                resource_version=resource_version,
                timeout_seconds=timeout_seconds,
            ):
                yield event["type"], JobState.from_job(event["object"])
        except ApiException as exc:
            if exc.status == 410:
                raise WatchExpired() from None
            raise _api_error("watch Jobs", exc, self.namespace) from None
        except (HTTPError, OSError):
            raise WatchExpired() from None
        finally:
            w.stop()

    def pods(self, run_id: str, **labels: str | None) -> list[Any]:
        result = self._call(
            "list Pods",
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=run_selector(run_id, **labels),
        )
        return list(result.items)

    def pod_log(
        self, pod: str, container: str, *, follow: bool = False, tail: int | None = None
    ) -> Any:
        """The log as text, or with ``follow`` the streaming HTTP response.

        Always read raw: the client would otherwise "deserialize" the text (a log that is one
        JSON line comes back as a Python repr, and this client version returns ``b'...'``)."""
        response = self._call(
            f"read logs of {pod}/{container}",
            self.core.read_namespaced_pod_log,
            pod,
            self.namespace,
            container=container,
            follow=follow,
            tail_lines=tail,
            _preload_content=False,
        )
        if follow:
            return response
        try:
            return response.data.decode("utf-8", errors="replace")
        finally:
            response.release_conn()

    def delete_run(self, run_id: str) -> tuple[int, int]:
        """Delete the run's Jobs (their pods go with them) and ServiceAccount; the store stays.

        The ServiceAccount is the chart's, named after the release: it is read by name and
        deleted only when it carries the run's label (k8s/rbac-launcher.yaml grants get and
        delete on ServiceAccounts, not list)."""
        from skillmix.k8s.values import release_name

        selector = run_selector(run_id)
        jobs, _ = self.jobs(run_id)
        self._call(
            "delete Jobs",
            self.batch.delete_collection_namespaced_job,
            self.namespace,
            label_selector=selector,
            propagation_policy="Background",
        )
        name = release_name(run_id)
        account = self._call(
            f"read ServiceAccount {name}",
            self.core.read_namespaced_service_account,
            name,
            self.namespace,
            ok_statuses=(404,),
        )
        if account is None or (account.metadata.labels or {}).get(RUN_LABEL) != run_id:
            return len(jobs), 0
        self._call(
            f"delete ServiceAccount {name}",
            self.core.delete_namespaced_service_account,
            name,
            self.namespace,
        )
        return len(jobs), 1


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (HTTP 410 Gone) or its connection broke: list
    again and re-watch."""


def _api_error(what: str, exc: Any, namespace: str) -> SkillmixError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", "") or ""
    if status in (401, 403):
        return SkillmixError(
            f"{what}: forbidden in namespace {namespace} ({status} {reason})",
            hint="the launching user needs the rights in k8s/rbac-launcher.yaml",
        )
    if status == 404:
        return SkillmixError(f"{what}: not found ({reason}); does namespace {namespace!r} exist?")
    if status == 422:
        return SkillmixError(f"{what}: rejected by the API server as invalid ({reason})")
    return RunFailedError(f"{what}: Kubernetes API error {status} {reason}")


def wait_for_run(
    kube: KubeClient,
    run_id: str,
    *,
    timeout: float,
    on_change: Callable[[list[JobState]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    watch_seconds: int = 300,
) -> list[JobState]:
    """Block until the aggregation Job finishes; returns the final Job states.

    Lists, then watches from the list's resourceVersion; a 410 Gone (or a watch that simply
    times out) leads to a fresh list. A failed Job ends the wait with RunFailedError."""
    deadline = clock() + timeout
    while True:
        states, version = kube.jobs(run_id)
        by_name = {s.name: s for s in states}
        verdict = _verdict(list(by_name.values()))
        if on_change:
            on_change(list(by_name.values()))
        if verdict is not None:
            return _finish(verdict, list(by_name.values()))
        remaining = deadline - clock()
        if remaining <= 0:
            raise RunFailedError(
                f"timed out after {timeout:g}s waiting for run {run_id}; it keeps running (see `skillmix status`)"
            )
        try:
            for kind, state in kube.watch_jobs(
                run_id, version, int(max(1, min(watch_seconds, remaining)))
            ):
                if kind == "DELETED":  # cancelled (or expired): all gone ends the wait
                    by_name.pop(state.name, None)
                else:
                    by_name[state.name] = state
                if on_change:
                    on_change(list(by_name.values()))
                verdict = _verdict(list(by_name.values()))
                if verdict is not None:
                    return _finish(verdict, list(by_name.values()))
                if clock() >= deadline:
                    break
        except WatchExpired:
            continue


def _verdict(states: list[JobState]) -> str | None:
    if not states:
        return "missing"
    if any(s.state == "Failed" for s in states):
        return "failed"
    aggregation = [s for s in states if s.phase == "aggregate"]
    if aggregation and all(s.state == "Complete" for s in aggregation):
        return "complete"
    return None


def _finish(verdict: str, states: list[JobState]) -> list[JobState]:
    if verdict == "missing":
        raise RunFailedError(
            "no Jobs of this run exist (cancelled, or expired after ttlSecondsAfterFinished)"
        )
    if verdict == "failed":
        failed = [f"{s.name} ({s.reason or 'failed'})" for s in states if s.state == "Failed"]
        raise RunFailedError(
            f"{len(failed)} Job(s) failed: {'; '.join(failed[:3])}; fix and launch again to resume"
        )
    return states
