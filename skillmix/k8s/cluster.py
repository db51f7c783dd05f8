"""The Kubernetes API calls skillmix makes on a run's objects, found by the ``skillmix.io/run``
label: list, watch, patch, read logs, delete; and :func:`wait_for_run`, which follows a run
until its aggregation Job ends. Creation lives in :mod:`skillmix.k8s.create`, the transport
(credentials, retries, warnings) in :mod:`skillmix.k8s.api`, the Job's state in
:mod:`skillmix.k8s.jobs`.

Speed: a run can have 1,500 Jobs. Lists and watches are read raw (``_preload_content=False``
+ ``json.loads``) because the client's model deserialization costs tens of milliseconds per
Job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError

from skillmix.errors import RunFailedError
from skillmix.k8s.api import api_error
from skillmix.k8s.create import KubeWriter
from skillmix.k8s.jobs import JobState, WatchEvent, WatchExpired, run_selector

KUEUE_VERSIONS = ("v1beta2", "v1beta1")  # preferred first


class KubeClient(KubeWriter):
    """The handful of API calls skillmix needs, with one-line errors and bounded retries."""

    # cluster ------------------------------------------------------------------------------
    def server_version(self) -> str:
        """The API server's version (``/version``), e.g. ``v1.34.4``, for ``--kube-version``."""
        data = self._raw("read the server version", client.VersionApi(self.api_client).get_code)
        return str(data.get("gitVersion") or f"v{data.get('major')}.{data.get('minor')}.0")

    def jobs(
        self, run_id: str, *, cached: bool = False, **labels: str | int | None
    ) -> tuple[list[JobState], str]:
        """The run's Jobs and the list's resourceVersion. ``cached``: served from the API
        server's watch cache (``resourceVersion=0``: possibly a moment old, but no read of
        etcd), which is what ``status`` wants for a 1,500-Job run."""
        data = self._list_run("jobs", run_id, cached, labels)
        items = data.get("items") or []
        return [JobState.from_dict(j) for j in items], str(data["metadata"]["resourceVersion"])

    def watch_jobs(
        self,
        run_id: str,
        resource_version: str,
        timeout_seconds: int,
        **labels: str | int | None,
    ) -> Iterator[WatchEvent]:
        """Job events after ``resource_version``, with bookmarks, read raw. A watch that ends
        after its timeout simply returns: resume from the last event's resourceVersion.
        Raises ``WatchExpired`` on 410 Gone only (list again then); a broken connection (API
        server restart, load balancer timeout) also just ends the watch."""
        for kind, obj, rv in self.watch_raw(
            "jobs", run_selector(run_id, **labels), resource_version, timeout_seconds
        ):
            yield WatchEvent(kind, None if obj is None else JobState.from_dict(obj), rv)

    def watch_raw(
        self, resource: str, selector: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
        """(type, object or None for a BOOKMARK, resourceVersion) of ``resource`` ("jobs" or
        "pods") events matching ``selector``, as :meth:`watch_jobs` describes."""
        try:
            response = self._lister(resource)(
                self.namespace,
                label_selector=selector,
                resource_version=resource_version,
                timeout_seconds=timeout_seconds,
                allow_watch_bookmarks=True,
                watch=True,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 410:
                raise WatchExpired() from None
            raise api_error(f"watch {resource}", exc, self.namespace, self.rbac_file) from None
        except (HTTPError, OSError):
            return
        try:
            for line in iter_resp_lines(response):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired()
                    raise RunFailedError(
                        f"watch {resource}: Kubernetes API error {obj.get('code')} "
                        f"{obj.get('message', '')}"
                    )
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or resource_version)
                yield str(kind), (None if kind == "BOOKMARK" else obj), rv
        except (HTTPError, OSError, ValueError):
            return  # broken or truncated: the caller resumes from the last resourceVersion
        finally:
            response.release_conn()

    def list_raw(
        self, resource: str, selector: str, *, page: int = 250
    ) -> tuple[list[dict[str, Any]], str]:
        """Every ``resource`` ("jobs" or "pods") matching ``selector``, read in pages of
        ``page`` (a 1,500-Job list never sits in memory as one JSON document), and the list's
        resourceVersion to watch from."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        version = ""
        while True:
            data = self._raw(
                f"list {resource}",
                self._lister(resource),
                self.namespace,
                label_selector=selector,
                limit=page,
                **({"_continue": token} if token else {}),
            )
            items.extend(data.get("items") or [])
            meta = data.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            token = meta.get("continue") or None
            if not token:
                return items, version

    def create_job_yaml(self, name: str, text: str) -> bool:
        """Create one Job from its rendered YAML; False when it exists already."""
        status = self._call(
            f"create Job {name}",
            self._post,
            f"/apis/batch/v1/namespaces/{self.namespace}/jobs",
            text.encode(),
        )
        return bool(status != 409)

    def patch_job(self, name: str, body: dict[str, Any]) -> None:
        """A JSON merge patch of one Job (``None`` values remove keys)."""
        self._send(
            f"patch Job {name}",
            self.batch.patch_namespaced_job,
            name,
            self.namespace,
            body,
            _content_type="application/merge-patch+json",
        )

    def pods(
        self, run_id: str, *, cached: bool = False, **labels: str | int | None
    ) -> list[dict[str, Any]]:
        """The run's pods as the API's JSON (one list; ``cached`` as for :meth:`jobs`)."""
        return list(self._list_run("pods", run_id, cached, labels).get("items") or [])

    def _lister(self, resource: str) -> Callable[..., Any]:
        """The list call of ``resource``: "jobs" or "pods"."""
        lister: Callable[..., Any] = (
            self.batch.list_namespaced_job if resource == "jobs" else self.core.list_namespaced_pod
        )
        return lister

    def _list_run(
        self, resource: str, run_id: str, cached: bool, labels: dict[str, str | int | None]
    ) -> Any:
        """One list of the run's ``resource`` ("jobs" or "pods") with these labels, as JSON;
        ``cached``: from the API server's watch cache (``resourceVersion=0``)."""
        extra: dict[str, Any] = {"resource_version": "0"} if cached else {}
        return self._raw(
            f"list {resource.capitalize()}",
            self._lister(resource),
            self.namespace,
            label_selector=run_selector(run_id, **labels),
            **extra,
        )

    def warning_events(self) -> list[dict[str, Any]]:
        """The namespace's Warning events (one list; events carry no labels to select the
        run's by, so the caller matches involvedObject names)."""
        data = self._raw(
            "list Events",
            self.core.list_namespaced_event,
            self.namespace,
            field_selector="type=Warning",
        )
        return list(data.get("items") or [])

    def workloads(self) -> list[dict[str, Any]] | None:
        """Kueue Workloads of the namespace; None where Kueue is not installed (or the
        launcher may not read them): status then says nothing about admission."""

        version = self.kueue_version()
        if version is None:
            return None
        api = client.CustomObjectsApi(self.api_client)
        try:
            data = api.list_namespaced_custom_object(
                "kueue.x-k8s.io", version, self.namespace, "workloads"
            )
        except ApiException:
            return None
        except Exception:  # optional information, never fatal
            return None
        return list(data.get("items") or [])

    def kueue_version(self) -> str | None:
        """The Kueue API version to read: v1beta2 where the server serves it, else v1beta1
        (with a warning: Kueue before v0.15); None without Kueue. Asked once."""
        if not hasattr(self, "_kueue_version"):
            served: list[str] = []
            try:
                group = client.ApisApi(self.api_client).get_api_versions()
                for g in group.groups or []:
                    if g.name == "kueue.x-k8s.io":
                        served = [v.version for v in g.versions or []]
            except (ApiException, OSError, ValueError):
                served = []
            version = next((v for v in KUEUE_VERSIONS if v in served), None)
            if version == "v1beta1":
                with self._lock:
                    self.warnings[
                        "Kueue serves only kueue.x-k8s.io/v1beta1 here; skillmix reads it through "
                        "that API (Kueue v0.15 and later serve v1beta2)"
                    ] = 1
            self._kueue_version = version
        return self._kueue_version

    def local_queue_exists(self, name: str) -> bool | None:

        version = self.kueue_version()
        if version is None:
            return None
        api = client.CustomObjectsApi(self.api_client)
        try:
            api.get_namespaced_custom_object(
                "kueue.x-k8s.io", version, self.namespace, "localqueues", name
            )
        except ApiException as exc:
            return False if exc.status == 404 and "localqueues" in str(exc.body or "") else None
        except Exception:
            return None
        return True

    def pod_log(
        self,
        pod: str,
        container: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        previous: bool = False,
    ) -> Any:
        """The log as text, or with ``follow`` the streaming HTTP response.

        Always read raw: the client would otherwise "deserialize" the text (a log that is one
        JSON line comes back as a Python repr, and this client version returns ``b'...'``)."""
        extra: dict[str, Any] = {"previous": True} if previous else {}
        response = self._call(
            f"read logs of {pod}/{container}",
            self.core.read_namespaced_pod_log,
            pod,
            self.namespace,
            container=container,
            follow=follow,
            tail_lines=tail,
            _preload_content=False,
            **extra,
        )
        if follow:
            return response
        try:
            return response.data.decode("utf-8", errors="replace")
        finally:
            response.release_conn()

    def delete_run(self, run_id: str, *, wait_seconds: float = 0.0) -> int:
        """Delete the run's Jobs (their pods go with them); returns how many. The store stays,
        and so do the ServiceAccounts (one per profile, shared by runs).

        With ``wait_seconds``, deletion is in the foreground and the call returns when the
        Jobs (and so their pods) are gone, or the time is up: nothing of the old attempt
        writes any more (``launch --replace``)."""
        selector = run_selector(run_id)
        jobs, _ = self.jobs(run_id)
        self._send(
            "delete Jobs",
            self.batch.delete_collection_namespaced_job,
            self.namespace,
            label_selector=selector,
            propagation_policy="Foreground" if wait_seconds else "Background",
        )
        deadline = time.monotonic() + wait_seconds
        while wait_seconds and time.monotonic() < deadline:
            if not self.jobs(run_id)[0]:
                break
            self.sleep(1.0)
        return len(jobs)


def wait_for_run(
    kube: KubeClient,
    run_id: str,
    *,
    timeout: float,
    attempt: int | None = None,
    on_change: Callable[[list[JobState]], None] | None = None,
    on_idle: Callable[[list[JobState]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    watch_seconds: int = 300,
) -> list[JobState]:
    """Block until the aggregation Job of ``attempt`` (default: every Job of the run) finishes;
    returns the final Job states.

    Lists once, then watches from the list's resourceVersion; a watch that times out or whose
    connection breaks is resumed from the last resourceVersion seen (bookmarks included), and
    only a 410 Gone leads to a fresh list. ``on_idle`` runs after each watch that ends without
    a verdict (the CLI looks at pods and events then). A failed Job ends the wait with
    RunFailedError."""
    deadline = clock() + timeout
    while True:
        states, version = kube.jobs(run_id, attempt=attempt)
        by_name = {s.name: s for s in states}
        verdict = _verdict(list(by_name.values()))
        if on_change:
            on_change(list(by_name.values()))
        if verdict is not None:
            return _finish(verdict, list(by_name.values()))
        try:
            while True:
                remaining = deadline - clock()
                if remaining <= 0:
                    raise RunFailedError(
                        f"timed out after {timeout:g}s waiting for run {run_id}; it keeps running (see `skillmix status`)"
                    )
                for event in kube.watch_jobs(
                    run_id, version, int(max(1, min(watch_seconds, remaining))), attempt=attempt
                ):
                    version = event.resource_version
                    if event.state is None:  # a bookmark
                        continue
                    if event.type == "DELETED":  # cancelled (or expired): all gone ends it
                        by_name.pop(event.state.name, None)
                    else:
                        by_name[event.state.name] = event.state
                    if on_change:
                        on_change(list(by_name.values()))
                    verdict = _verdict(list(by_name.values()))
                    if verdict is not None:
                        return _finish(verdict, list(by_name.values()))
                    if clock() >= deadline:
                        break
                if on_idle and clock() < deadline:
                    on_idle(list(by_name.values()))
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
