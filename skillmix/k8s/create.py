"""Creating a run's objects: the launch's ServiceAccounts, coordinator Job, NetworkPolicy,
model-key Secret and Jobs (in parallel, resumable), and the pre-flight's server-side dry runs
with what the admission chain (Kueue among others) would do to them.

Speed: a run can have 1,500 Jobs. Creation runs on a bounded thread pool, each Job sent as
the YAML helm wrote (the API server converts it)."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from skillmix.errors import RunFailedError, SkillmixError
from skillmix.k8s.api import CREATE_CONCURRENCY, KubeApi
from skillmix.k8s.helm import RenderedDoc
from skillmix.k8s.jobs import JobState
from skillmix.k8s.values import MODEL_KEY
from skillmix.vocab import PREFLIGHT_ANNOTATION, QUEUE_LABEL


class KubeWriter(KubeApi):
    """The calls that create a run's objects (and their dry runs)."""

    # objects ------------------------------------------------------------------------------
    def apply(
        self,
        manifests: list[RenderedDoc],
        *,
        dry_run: bool = False,
        concurrency: int = CREATE_CONCURRENCY,
        model_key: str = "",
    ) -> list[str]:
        """Create the rendered objects: the ServiceAccounts (kept when they exist), the
        coordinator Job, the NetworkPolicy and the Secret ``model_key`` (a random key for
        per-model servers; none when empty), both owned by the coordinator Job, then the other
        Jobs in parallel (each sent as the YAML helm wrote; the API server converts it).

        Resumable: an object that already exists and is the same (labels and containers'
        images, commands and arguments) counts as created, so a launch stopped halfway is
        completed by running it again. One that exists and differs is an error (a concurrent
        launch). ``dry_run`` asks the API server to validate, authorize and admit without
        persisting."""
        unexpected = [
            d for d in manifests if d.kind not in ("ServiceAccount", "NetworkPolicy", "Job")
        ]
        if unexpected:
            raise SkillmixError(
                f"the chart rendered an unexpected {unexpected[0].kind} {unexpected[0].name}"
            )
        created: list[str] = []
        for d in manifests:
            if d.kind == "ServiceAccount":
                exists = self._send(
                    f"create ServiceAccount {d.name}",
                    self.core.create_namespaced_service_account,
                    self.namespace,
                    d.doc,
                    ok_statuses=(409,),  # one per profile: made by an earlier run
                    **({"dry_run": "All"} if dry_run else {}),
                )
                if exists is None:
                    created.append(f"ServiceAccount/{d.name}")
                elif not dry_run:
                    self._check_account(d)
        # the coordinator first: it waits until the launch has created every object (the
        # store's `.created` marker), and owns the run's other objects, so a NetworkPolicy
        # made before any other pod goes with the run (cancel, or the coordinator's TTL)
        owner: dict[str, Any] | None = None
        for d in manifests:
            if d.kind == "Job" and d.group[1] == "coordinate":
                created.append(self._create_job(d, dry_run))
                owner = None if dry_run else self._owner_ref(d.name)
        for d in manifests:
            if d.kind == "NetworkPolicy":
                self._call(
                    f"create NetworkPolicy {d.name}",
                    self._post,
                    f"/apis/networking.k8s.io/v1/namespaces/{self.namespace}/networkpolicies",
                    _owned(d.text, owner).encode(),
                    dry_run=dry_run,
                )
                created.append(f"NetworkPolicy/{d.name}")
        if model_key:
            self._create_model_key(model_key, owner, dry_run)
            created.append(f"Secret/{model_key}")
        jobs = [d for d in manifests if d.kind == "Job" and d.group[1] != "coordinate"]
        created += self._parallel(
            lambda d: self._create_job(d, dry_run), jobs, concurrency=concurrency
        )
        return created

    def _create_model_key(self, name: str, owner: dict[str, Any] | None, dry_run: bool) -> None:
        """The per-attempt Secret with a random key for per-model servers: made here, never
        rendered, printed or stored; an existing one (a resumed launch) is kept."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/managed-by": "skillmix"},
                **({"ownerReferences": [owner]} if owner else {}),
            },
            "type": "Opaque",
            "stringData": {MODEL_KEY: secrets.token_urlsafe(32)},
        }
        self._send(
            f"create Secret {name}",
            self.core.create_namespaced_secret,
            self.namespace,
            body,
            ok_statuses=(409,),
            **({"dry_run": "All"} if dry_run else {}),
        )

    def _owner_ref(self, job: str) -> dict[str, Any]:
        """An ownerReference to Job ``job`` (the garbage collector deletes what it owns)."""
        data = self._raw(f"read Job {job}", self.batch.read_namespaced_job, job, self.namespace)
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": job,
            "uid": data["metadata"]["uid"],
        }

    def _check_account(self, d: RenderedDoc) -> None:
        """An existing ServiceAccount is never changed: warn when it lacks an annotation the
        profile gives (cloud identity would not reach the pods)."""
        wanted = (d.doc.get("metadata") or {}).get("annotations") or {}
        if not wanted:
            return
        account = self._raw(
            f"read ServiceAccount {d.name}",
            self.core.read_namespaced_service_account,
            d.name,
            self.namespace,
        )
        have = (account.get("metadata") or {}).get("annotations") or {}
        missing = sorted(k for k, v in wanted.items() if have.get(k) != v)
        if missing:
            with self._lock:
                self.warnings[
                    f"ServiceAccount {d.name} exists without the profile's annotation(s) "
                    f"{', '.join(missing)}: skillmix never changes an existing account; "
                    "annotate it (kubectl annotate serviceaccount ...) or delete it to have it "
                    "made again"
                ] = 1

    def _create_job(self, d: RenderedDoc, dry_run: bool) -> str:
        status = self._call(
            f"create Job {d.name}",
            self._post,
            f"/apis/batch/v1/namespaces/{self.namespace}/jobs",
            d.text.encode(),
            dry_run=dry_run,
        )
        if status == 409:
            existing = self._raw(
                f"read Job {d.name}", self.batch.read_namespaced_job, d.name, self.namespace
            )
            if _fingerprint(existing) != _fingerprint(d.doc):
                raise RunFailedError(
                    f"Job {d.name} already exists and differs from this launch's "
                    "(another launch of the run at the same time?); see `skillmix status`"
                )
            if d.group[1] == "coordinate" and JobState.from_dict(existing).state == "Failed":
                # a resumed launch: the first coordinator gave up; a new one takes over
                self._replace_job(d)
        return f"Job/{d.name}"

    def _replace_job(self, d: RenderedDoc, wait_seconds: float = 60.0) -> None:
        """Delete Job ``d.name`` (its pods with it) and create it again from ``d``."""
        self._send(
            f"delete Job {d.name}",
            self.batch.delete_namespaced_job,
            d.name,
            self.namespace,
            propagation_policy="Foreground",
            ok_statuses=(404,),
        )
        deadline = time.monotonic() + wait_seconds
        while True:
            status = self._call(
                f"create Job {d.name}",
                self._post,
                f"/apis/batch/v1/namespaces/{self.namespace}/jobs",
                d.text.encode(),
            )
            if status != 409:
                return
            if time.monotonic() >= deadline:
                raise RunFailedError(
                    f"Job {d.name}: the failed one was not gone after {wait_seconds:g}s; "
                    "launch again to replace it"
                )
            self.sleep(1.0)

    def _parallel(
        self, fn: Callable[[Any], str], items: list[Any], *, concurrency: int
    ) -> list[str]:
        """``fn`` over ``items`` on at most ``concurrency`` threads; the first error stops
        the submission of the rest and is raised once the threads in flight are done."""
        if not items:
            return []
        results: list[str] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def run(item: Any) -> None:
            if stop.is_set():
                return
            try:
                value = fn(item)
            except BaseException as exc:  # re-raised below
                stop.set()
                with self._lock:
                    errors.append(exc)
                return
            with self._lock:
                results.append(value)

        pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items))))
        try:
            for future in [pool.submit(run, item) for item in items]:
                future.result()
        except BaseException:  # Ctrl-C: stop sending, let the requests in flight end
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if errors:
            raise errors[0]
        return results

    def preflight(self, manifests: list[RenderedDoc], *, model_key: str = "") -> int:
        """Server-side dry run (``dryRun=All``) of one Pod per distinct pod template, then of
        the ServiceAccount and of the Job each such Pod stands for: Pod Security,
        ResourceQuota, LimitRange and admission webhooks judge the Pods a Job would create,
        which the Job itself does not show, and the Job's own validation and admission.
        Jobs of one (phase, student) differ only in per-unit arguments and labels and are
        judged alike, so one per distinct template suffices (a 1,500-Job run would otherwise
        pay 1,500 more requests); the rest meet the same checks at creation, which is
        resumable. Returns the number of Pods."""
        firsts: dict[tuple[str, str, str], RenderedDoc] = {}
        for d in manifests:
            firsts.setdefault(d.group, d)
        accounts = [d for d in manifests if d.kind == "ServiceAccount"]
        pods = representative_pods([d.doc for d in [*accounts, *firsts.values()]])
        self._parallel(self._dry_run_pod, pods, concurrency=CREATE_CONCURRENCY)
        chosen = {p["metadata"]["annotations"][PREFLIGHT_ANNOTATION] for p in pods}
        self.dry_run_results.clear()
        sent = [d for d in manifests if d.kind != "Job" or d.name in chosen]
        self.apply(sent, dry_run=True, model_key=model_key)
        problems = admission_problems(
            {d.name: d.doc for d in sent if d.kind == "Job"},
            self.dry_run_results.get("jobs", []),
            self.profile.kueue_queue,
        )
        if problems:
            raise SkillmixError(problems[0])
        return len(pods)

    def _dry_run_pod(self, pod: dict[str, Any]) -> str:
        job = pod["metadata"]["annotations"][PREFLIGHT_ANNOTATION]
        job = str(job)
        try:
            self._send(
                f"dry run of a Pod of Job {job}",
                self.core.create_namespaced_pod,
                self.namespace,
                pod,
                dry_run="All",
            )
        except SkillmixError as exc:
            text = str(exc)
            if "PodSecurity" in text and 'container "model"' in text and exc.hint is None:
                exc.hint = (
                    "the vLLM container (`model`) runs as root with this securityContext: run "
                    "it as non-root (leave vllm_security_context and the student's "
                    "kubernetes.security_context unset: uid 1000, HOME=/tmp), or launch into a "
                    "namespace labelled pod-security.kubernetes.io/enforce=baseline"
                )
            raise
        return job


def _owned(text: str, owner: dict[str, Any] | None) -> str:
    """A rendered object's YAML with ``owner`` as its ownerReference (none: as it is)."""
    if owner is None:
        return text
    ref = json.dumps([owner])
    return text.replace("\nmetadata:\n", f"\nmetadata:\n  ownerReferences: {ref}\n", 1)


def _fingerprint(job: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two Jobs "the same" for a resumed creation: labels, and each container's
    name, image, command and arguments (the server adds defaults everywhere else)."""
    meta = job.get("metadata") or {}
    spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = [
        (c.get("name"), c.get("image"), c.get("command"), c.get("args"))
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    ]
    return (sorted((meta.get("labels") or {}).items()), containers)


def representative_pods(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One Pod per distinct pod template, as the Job controller would create it. Templates
    that differ only in their containers' arguments, commands, env values or labels (one per
    unit) are the same for admission: same images, security contexts, resources, volumes."""
    seen: set[str] = set()
    pods = []
    # a ServiceAccount the launch itself creates does not exist yet, and the ServiceAccount
    # admission plugin rejects a Pod naming a missing one: the dry run uses `default` instead
    created = {d["metadata"]["name"] for d in manifests if d.get("kind") == "ServiceAccount"}
    for doc in manifests:
        if doc.get("kind") != "Job":
            continue
        template = (doc.get("spec") or {}).get("template") or {}
        spec = dict(template.get("spec") or {})
        if spec.get("serviceAccountName") in created:
            spec["serviceAccountName"] = "default"
        key = json.dumps(_admission_view(spec), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        name = doc["metadata"]["name"]
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{name[:52]}-preflight",
                    "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                    "annotations": {PREFLIGHT_ANNOTATION: name},
                },
                "spec": spec,
            }
        )
    return pods


def admission_problems(
    sent: dict[str, dict[str, Any]], admitted: list[dict[str, Any]], queue: str | None
) -> list[str]:
    """What the admission chain did to the pre-flight's Jobs that would break the run: Kueue
    (LocalQueueDefaulting, ``manageJobsWithoutQueueName``) taking Jobs the profile does not
    queue, so held-back phases would start at once or never; a queue other than the
    profile's. ``sent``: the Jobs by name as rendered; ``admitted``: the dry runs' answers."""
    problems = []
    for job in admitted:
        meta, spec = job.get("metadata") or {}, job.get("spec") or {}
        name = str(meta.get("name", ""))
        mine = sent.get(name)
        if mine is None:
            continue
        got = (meta.get("labels") or {}).get(QUEUE_LABEL)
        if not queue and got:
            problems.append(
                f"Job {name}: the cluster put it in Kueue LocalQueue {got!r} (Kueue's "
                "LocalQueueDefaulting: the namespace has a LocalQueue named 'default'), but the "
                "cluster profile has no kueue_queue; held-back phases would start at once",
            )
        elif queue and got != queue:
            problems.append(
                f"Job {name}: an admission webhook changed its Kueue queue to {got!r} "
                f"(the profile's kueue_queue is {queue!r}); fix kueue_queue in the cluster profile"
            )
        elif not queue and spec.get("suspend") and not (mine.get("spec") or {}).get("suspend"):
            problems.append(
                f"Job {name}: an admission webhook suspends it (Kueue with "
                "manageJobsWithoutQueueName manages Jobs without a queue), but the cluster "
                "profile has no kueue_queue: set kueue_queue to the namespace's LocalQueue",
            )
    return problems


def _admission_view(spec: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = json.loads(json.dumps(spec))
    for group in ("initContainers", "containers"):
        for c in view.get(group) or []:
            c.pop("args", None)
            c.pop("command", None)
            c["env"] = sorted(e.get("name", "") for e in c.get("env") or [])
    return view
