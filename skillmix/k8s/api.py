"""The Kubernetes API's transport, through the official client: credentials, one-line errors,
retries, and the API server's ``Warning`` headers (Pod Security, deprecations), which the
client drops, kept in :attr:`KubeApi.warnings` for the CLI to print.

Every call retries 429 and 5xx answers (:data:`API_RETRY`), honouring ``Retry-After``, so one
transient error never stops a launch halfway. Bodies are read raw (``_preload_content=False``
+ ``json.loads``) because the client's model deserialization costs tens of milliseconds per
Job. Imports ``kubernetes`` at the top: the CLI imports this module only in the commands that
talk to a cluster, never at start-up.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Self

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.client.rest import RESTResponse
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from skillmix.errors import RunFailedError, SkillmixError
from skillmix.k8s.profiles import ClusterProfile
from skillmix.retrying import RetryPolicy, retry

NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_RETRIES = 6  # per call; with the backoff below at most ~1 minute of waiting
MAX_RETRY_SLEEP = 30.0
CREATE_CONCURRENCY = 16  # parallel create requests (kubectl sends one at a time)
_WARNING = re.compile(r'\d{3} \S+ "((?:[^"\\]|\\.)*)"')


def _retry_delay(exc: object, attempt: int) -> float:
    """``Retry-After`` (seconds) when the server sent it, else full-jitter backoff."""
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value:
        try:
            return min(MAX_RETRY_SLEEP, max(0.0, float(value)))
        except ValueError:
            pass
    return random.uniform(0, min(MAX_RETRY_SLEEP, 0.25 * 2**attempt))


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status in RETRY_STATUSES


# one API call: 429 and 5xx, MAX_RETRIES times after the first try
API_RETRY = RetryPolicy(
    "kubernetes-api", retry_on=_transient, delay=_retry_delay, attempts=MAX_RETRIES + 1
)


class KubeApi:
    """A connection to the API server with one-line errors, bounded retries and the server's
    warnings; :class:`~skillmix.k8s.cluster.KubeClient` adds the calls skillmix makes."""

    def __init__(
        self,
        profile: ClusterProfile,
        *,
        api_client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
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
    def in_cluster(cls, namespace: str | None = None) -> Self:
        """A client with the pod's own identity (its ServiceAccount token and CA,
        KUBERNETES_SERVICE_HOST/PORT), in the pod's namespace unless ``namespace`` is given."""
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
        try:
            return retry(
                lambda: fn(*args, **kwargs), API_RETRY, sleep=self.sleep, on_retry=self._retried
            )
        except ApiException as exc:
            if exc.status in ok_statuses:
                return exc
            raise api_error(what, exc, self.namespace, self.rbac_file) from None
        except (HTTPError, OSError) as exc:
            host = self.api_client.configuration.host
            raise RunFailedError(
                f"{what}: cannot reach the Kubernetes API at {host}: {exc.__class__.__name__}"
            ) from None

    def _retried(self, _exc: BaseException, _delay: float) -> None:
        with self._lock:
            self.retries += 1

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
        api = self.api_client
        headers = {
            **api.default_headers,
            "Content-Type": "application/yaml",
            "Accept": "application/json",
        }
        api.update_params_for_auth(headers, [], ["BearerToken"])
        url = f"{api.configuration.host}{path}" + ("?dryRun=All" if dry_run else "")
        raw = api.rest_client.pool_manager.request(
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


def _server_message(exc: Any) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return ""
    return " ".join(str(body.get("message") or "").split()) if isinstance(body, dict) else ""


def api_error(
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
