"""The Kubernetes API, through the official client: create, watch, inspect and delete a run's
objects, found by the ``skillmix.io/run`` label.

Speed: a run can have 1,500 Jobs. Creation runs on a bounded thread pool; lists and watches
are read raw (``_preload_content=False`` + ``json.loads``) because the client's model
deserialization costs tens of milliseconds per Job. Every call retries 429 and 5xx answers,
honouring ``Retry-After``, so one transient error never stops a launch halfway. The API
server's ``Warning`` headers (Pod Security, deprecations), which the client drops, are kept in
:attr:`KubeClient.warnings` for the CLI to print.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from skillmix.errors import RunFailedError, SkillmixError
from skillmix.k8s.helm import RenderedDoc
from skillmix.k8s.profiles import ClusterProfile
from skillmix.vocab import (
    ADMISSION_GATE_ANNOTATION,
    ATTEMPT_LABEL,
    FAILURE_ANNOTATION,
    GATED_LABEL,
    HOLD_ANNOTATION,
    K_LABEL,
    PHASE_LABEL,
    POOL_ANNOTATION,
    POOL_SIZE_ANNOTATION,
    POOL_WEIGHT_ANNOTATION,
    PREFLIGHT_ANNOTATION,
    QUEUE_LABEL,
    ROUND_LABEL,
    RUN_LABEL,
    STUDENT_LABEL,
)

NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

KUEUE_VERSIONS = ("v1beta2", "v1beta1")  # preferred first
RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_RETRIES = 6  # per call; with the backoff below at most ~1 minute of waiting
MAX_RETRY_SLEEP = 30.0
CREATE_CONCURRENCY = 16  # parallel create requests (kubectl sends one at a time)
_WARNING = re.compile(r'\d{3} \S+ "((?:[^"\\]|\\.)*)"')


def run_selector(run_id: str, **labels: str | int | None) -> str:
    parts = [f"{RUN_LABEL}={run_id}"]
    names = {"phase": PHASE_LABEL, "student": STUDENT_LABEL, "attempt": ATTEMPT_LABEL}
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
    suspended: bool = False
    annotations: dict[str, str] = field(default_factory=dict)
    exists: bool = True  # False: a deferred Job the coordinator has not created yet

    @property
    def phase(self) -> str:
        return self.labels.get(PHASE_LABEL, "?")

    @property
    def gated(self) -> bool:
        """Held back until its inputs exist; the run's coordinator releases it."""
        return self.labels.get(GATED_LABEL) == "true"

    @property
    def hold(self) -> str:
        """How a gated Job is held: suspend, gate or defer (k8s/values.py hold_mode)."""
        return self.annotations.get(HOLD_ANNOTATION, "suspend")

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
    def pool(self) -> str:
        return self.annotations.get(POOL_ANNOTATION, "")

    @property
    def pool_size(self) -> int:
        return _int(self.annotations.get(POOL_SIZE_ANNOTATION))

    @property
    def pool_weight(self) -> int:
        return max(1, _int(self.annotations.get(POOL_WEIGHT_ANNOTATION)))

    @property
    def unit(self) -> tuple[str, int, int] | None:
        """(student, k, round) of a per-unit Job; None for the others."""
        student = self.labels.get(STUDENT_LABEL)
        if student is None or K_LABEL not in self.labels:
            return None
        return (
            student,
            _int(self.labels.get(K_LABEL)),
            _int(self.labels.get(ROUND_LABEL)),
        )

    @property
    def attempt(self) -> int:
        try:
            return int(self.labels.get(ATTEMPT_LABEL, "0"))
        except ValueError:
            return 0

    @property
    def state(self) -> str:
        types = {c[0] for c in self.conditions}
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
        for kind, reason, message in self.conditions:
            if kind in ("Failed", "FailureTarget", "Suspended"):
                return f"{reason}: {message}".strip(": ")
        return ""

    @classmethod
    def from_job(cls, job: Any) -> JobState:
        """From the client's V1Job model (tests, callers holding models)."""
        from kubernetes import client

        return cls.from_dict(client.ApiClient().sanitize_for_serialization(job))

    @classmethod
    def from_dict(cls, job: dict[str, Any]) -> JobState:
        """From the API's JSON (what raw lists and watches give)."""
        meta = job.get("metadata") or {}
        spec = job.get("spec") or {}
        status = job.get("status") or {}
        conditions = [
            (c.get("type", ""), c.get("reason") or "", (c.get("message") or "")[:200])
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


@dataclass
class WatchEvent:
    """One watch event: ``state`` is None for a BOOKMARK (only the resourceVersion moves)."""

    type: str
    state: JobState | None
    resource_version: str


class KubeClient:
    """The handful of API calls skillmix needs, with one-line errors and bounded retries."""

    def __init__(
        self,
        profile: ClusterProfile,
        *,
        api_client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from kubernetes import client

        self.profile = profile
        self.namespace = profile.namespace
        self.api_client = api_client or self._load(profile)
        self.batch = client.BatchV1Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.sleep = sleep
        self.retries = 0  # transient errors retried (429/5xx), for messages and benchmarks
        self.rbac_file = "k8s/rbac-launcher.yaml"  # what a 403 names
        # what the pre-flight's dry runs returned, by resource ("jobs"): the objects as the
        # admission chain (Kueue's webhook among others) changed them
        self.dry_run_results: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.warnings: dict[str, int] = {}  # the API server's Warning headers, with counts
        self._lock = threading.Lock()
        self._capture_warnings()

    @classmethod
    def in_cluster(cls, namespace: str | None = None) -> KubeClient:
        """A client with the pod's own identity (its ServiceAccount token and CA,
        KUBERNETES_SERVICE_HOST/PORT), in the pod's namespace unless ``namespace`` is given."""
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        from skillmix.k8s.profiles import ClusterProfile

        configuration = type.__call__(client.Configuration)
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise SkillmixError(
                f"no in-cluster Kubernetes configuration: {exc}",
                hint="`task coordinate` runs in a pod with a ServiceAccount token mounted",
            ) from None
        if namespace is None:
            with open(NAMESPACE_FILE, encoding="utf-8") as f:
                namespace = f.read().strip()
        profile = ClusterProfile(store="s3://in-cluster", namespace=namespace)
        kube = cls(profile, api_client=client.ApiClient(configuration))
        kube.rbac_file = "k8s/rbac-coordinator.yaml"
        return kube

    @staticmethod
    def _load(profile: ClusterProfile) -> Any:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        configuration = type.__call__(client.Configuration)
        # one pooled connection per creating thread, plus lists, watches and log streams
        configuration.connection_pool_maxsize = CREATE_CONCURRENCY + 8
        try:
            return config.new_client_from_config(
                config_file=profile.kubeconfig,
                context=profile.context,
                client_configuration=configuration,
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

    def _capture_warnings(self) -> None:
        """Wrap the REST client's request so the ``Warning`` headers of every answer (errors
        included) are kept instead of dropped."""
        from kubernetes.client.exceptions import ApiException

        rest = getattr(self.api_client, "rest_client", None)
        if rest is None:
            return
        original = rest.request

        def request(*args: Any, **kwargs: Any) -> Any:
            try:
                response = original(*args, **kwargs)
            except ApiException as exc:
                self._note_warnings(exc.headers)
                raise
            raw = getattr(response, "urllib3_response", response)
            self._note_warnings(getattr(raw, "headers", None))
            return response

        rest.request = request

    def _note_warnings(self, headers: Any) -> None:
        if not headers:
            return
        values = headers.getlist("Warning") if hasattr(headers, "getlist") else []
        if not values and headers.get("Warning"):
            values = [headers.get("Warning")]
        for value in values:
            texts = _WARNING.findall(value) or [value]
            with self._lock:
                for text in texts:
                    text = text.replace('\\"', '"')
                    self.warnings[text] = self.warnings.get(text, 0) + 1

    def take_warnings(self) -> list[str]:
        """The warnings seen since the last call, each once (with a count when repeated)."""
        with self._lock:
            seen, self.warnings = self.warnings, {}
        return [text if n == 1 else f"{text} (x{n})" for text, n in seen.items()]

    def _call(
        self,
        what: str,
        fn: Callable[..., Any],
        *args: Any,
        ok_statuses: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> Any:
        """``fn(*args, **kwargs)`` with one-line errors; an HTTP status in ``ok_statuses``
        (409 AlreadyExists, 404 NotFound) returns the ApiException instead of raising.

        429 and 5xx are retried up to MAX_RETRIES times: ``Retry-After`` when the server sends
        one, else full-jitter exponential backoff."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        for attempt in range(MAX_RETRIES + 1):
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                if exc.status in ok_statuses:
                    return exc
                if exc.status in RETRY_STATUSES and attempt < MAX_RETRIES:
                    with self._lock:
                        self.retries += 1
                    self.sleep(_retry_delay(exc, attempt))
                    continue
                raise _api_error(what, exc, self.namespace, self.rbac_file) from None
            except (HTTPError, OSError) as exc:
                host = self.api_client.configuration.host
                raise RunFailedError(
                    f"{what}: cannot reach the Kubernetes API at {host}: {exc.__class__.__name__}"
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A call whose answer is not needed: read raw and discarded (no deserialization),
        the connection returned to the pool. Returns the ApiException of an ``ok_statuses``
        answer, else None."""
        response = self._call(what, fn, *args, _preload_content=False, **kwargs)
        if hasattr(response, "release_conn"):
            _ = response.data
            response.release_conn()
            return None
        return response

    def _post(self, path: str, body: bytes, *, dry_run: bool = False) -> int:
        """POST a rendered YAML object through the client's connection pool and credentials,
        without its per-request model machinery (a launch sends thousands of these; the
        generated client's serialization and deserialization cost more than the request).
        Returns the status; raises the client's ApiException for any other than 2xx and 409,
        so ``_call`` retries and reports it like any call."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.client.rest import RESTResponse

        client = self.api_client
        headers = {
            **client.default_headers,
            "Content-Type": "application/yaml",
            "Accept": "application/json",
        }
        client.update_params_for_auth(headers, [], ["BearerToken"])
        url = f"{client.configuration.host}{path}" + ("?dryRun=All" if dry_run else "")
        raw = client.rest_client.pool_manager.request(
            "POST", url, body=body, headers=headers, preload_content=True, timeout=60
        )
        self._note_warnings(raw.headers)
        if 200 <= raw.status <= 299 or raw.status == 409:
            if dry_run and raw.status != 409:  # the object as admission left it
                with contextlib.suppress(ValueError), self._lock:
                    self.dry_run_results[path.rsplit("/", 1)[-1]].append(json.loads(raw.data))
            return int(raw.status)
        raise ApiException(http_resp=RESTResponse(raw))

    def _raw(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The JSON body of a call, without the client's slow model deserialization."""
        response = self._call(what, fn, *args, _preload_content=False, **kwargs)
        try:
            return json.loads(response.data or b"null")
        finally:
            response.release_conn()

    # cluster ------------------------------------------------------------------------------
    def server_version(self) -> str:
        """The API server's version (``/version``), e.g. ``v1.34.4``, for ``--kube-version``."""
        from kubernetes import client

        data = self._raw("read the server version", client.VersionApi(self.api_client).get_code)
        return str(data.get("gitVersion") or f"v{data.get('major')}.{data.get('minor')}.0")

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
        import secrets

        from skillmix.k8s.values import MODEL_KEY

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

    def jobs(
        self, run_id: str, *, cached: bool = False, **labels: str | int | None
    ) -> tuple[list[JobState], str]:
        """The run's Jobs and the list's resourceVersion. ``cached``: served from the API
        server's watch cache (``resourceVersion=0``: possibly a moment old, but no read of
        etcd), which is what ``status`` wants for a 1,500-Job run."""
        extra: dict[str, Any] = {"resource_version": "0"} if cached else {}
        data = self._raw(
            "list Jobs",
            self.batch.list_namespaced_job,
            self.namespace,
            label_selector=run_selector(run_id, **labels),
            **extra,
        )
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
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch.watch import iter_resp_lines
        from urllib3.exceptions import HTTPError

        lister = (
            self.batch.list_namespaced_job if resource == "jobs" else self.core.list_namespaced_pod
        )
        try:
            response = lister(
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
            raise _api_error(f"watch {resource}", exc, self.namespace, self.rbac_file) from None
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
        lister = (
            self.batch.list_namespaced_job if resource == "jobs" else self.core.list_namespaced_pod
        )
        items: list[dict[str, Any]] = []
        token: str | None = None
        version = ""
        while True:
            data = self._raw(
                f"list {resource}",
                lister,
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
        extra: dict[str, Any] = {"resource_version": "0"} if cached else {}
        data = self._raw(
            "list Pods",
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=run_selector(run_id, **labels),
            **extra,
        )
        return list(data.get("items") or [])

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
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

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
            from kubernetes import client
            from kubernetes.client.exceptions import ApiException

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
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

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


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (HTTP 410 Gone): list again and re-watch."""


def _retry_delay(exc: Any, attempt: int) -> float:
    """``Retry-After`` (seconds) when the server sent it, else full-jitter backoff."""
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value:
        try:
            return min(MAX_RETRY_SLEEP, max(0.0, float(value)))
        except ValueError:
            pass
    return random.uniform(0, min(MAX_RETRY_SLEEP, 0.25 * 2**attempt))


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


def _server_message(exc: Any) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return ""
    return " ".join(str(body.get("message") or "").split()) if isinstance(body, dict) else ""


def _api_error(
    what: str, exc: Any, namespace: str, rbac_file: str = "k8s/rbac-launcher.yaml"
) -> SkillmixError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", "") or ""
    message = _server_message(exc)
    if status == 403 and message and " cannot " not in message:
        # admission (Pod Security, ResourceQuota, a webhook), not RBAC: the server says why
        return SkillmixError(f"{what}: rejected in namespace {namespace}: {message[:600]}")
    if status in (401, 403):
        return SkillmixError(
            f"{what}: forbidden in namespace {namespace} ({status} {reason})",
            hint=f"the identity needs the rights in {rbac_file}",
        )
    if status == 404:
        return SkillmixError(f"{what}: not found ({reason}); does namespace {namespace!r} exist?")
    if status == 422:
        detail = f": {message[:600]}" if message else ""
        return SkillmixError(f"{what}: rejected by the API server as invalid ({reason}){detail}")
    if status == 400 and message:
        return SkillmixError(f"{what}: rejected by the API server: {message[:600]}")
    return RunFailedError(f"{what}: Kubernetes API error {status} {reason}")


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
